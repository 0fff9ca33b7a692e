package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
)

type movedLog struct {
	mu    sync.Mutex
	calls [][]string
	rates []float64
}

func (m *movedLog) Moved(devices []string, rate float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, devices)
	m.rates = append(m.rates, rate)
}

// TestDNSRoutes: clusters and routes through the API, with roles, audit and bad input.
func TestDNSRoutes(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	reg, err := registry.Open(ctx, "", t.TempDir(), clock.NewFake(now))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Close()) })
	_, err = reg.CreateDevice(ctx, "dev-1", nil, []string{"line-a"}, "o-test", "")
	require.NoError(t, err)
	moved := &movedLog{}
	srv := httptest.NewServer(api.Handler(api.Config{
		Authenticate: testTokens,
		Registry:     reg,
		Routing:      moved,
		Now:          func() time.Time { return now },
	}))
	t.Cleanup(srv.Close)
	call := func(method, path, token string, body any) (int, apitypes.Response[json.RawMessage]) {
		t.Helper()
		var rd *strings.Reader
		if body != nil {
			b, err := json.Marshal(body)
			require.NoError(t, err)
			rd = strings.NewReader(string(b))
		} else {
			rd = strings.NewReader("")
		}
		req, err := http.NewRequest(method, srv.URL+path, rd)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var env apitypes.Response[json.RawMessage]
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
		return resp.StatusCode, env
	}

	eu := api.ClusterRequest{Name: "eu-1", Addresses: []string{"192.0.2.1", "2001:db8::1"}, Region: "eu", Default: true}
	code, _ := call("POST", "/api/v1/clusters", "view", eu)
	require.Equal(t, http.StatusForbidden, code, "a viewer may not add a cluster")
	code, env := call("POST", "/api/v1/clusters", "op", eu)
	require.Equal(t, http.StatusOK, code, env.Error)
	code, env = call("POST", "/api/v1/clusters", "op", api.ClusterRequest{Name: "bad", Addresses: []string{"192.0.2.300"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, env.Error, `"192.0.2.300"`)
	code, _ = call("POST", "/api/v1/clusters", "op", eu)
	require.Equal(t, http.StatusConflict, code)

	code, env = call("GET", "/api/v1/clusters", "view", nil)
	require.Equal(t, http.StatusOK, code)
	var cl api.ClusterList
	require.NoError(t, json.Unmarshal(env.Data, &cl))
	require.Len(t, cl.Clusters, 1)
	require.True(t, cl.Clusters[0].Default)

	// Routes: an unknown cluster is refused by name; an invalid address is refused.
	code, env = call("PUT", "/api/v1/routes", "op", api.RouteRequest{Scope: "device", Selector: "dev-1", Cluster: "mars-1"})
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, env.Error, "mars-1")
	code, env = call("PUT", "/api/v1/routes", "op", api.RouteRequest{Scope: "device", Selector: "dev-1", Address: "not-an-ip"})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, env.Error, "not-an-ip")
	code, _ = call("PUT", "/api/v1/routes", "op", api.RouteRequest{Scope: "device", Selector: "dev-1", Address: "203.0.113.7", Expires: "-1m"})
	require.Equal(t, http.StatusBadRequest, code)

	code, env = call("PUT", "/api/v1/routes", "op", api.RouteRequest{Scope: "group", Selector: "line-a", Address: "203.0.113.7", Expires: "10m"})
	require.Equal(t, http.StatusOK, code, env.Error)
	var ch api.RouteChange
	require.NoError(t, json.Unmarshal(env.Data, &ch))
	require.Equal(t, []string{"dev-1"}, ch.Devices)
	require.Equal(t, now.Add(10*time.Minute), ch.Route.ExpiresAt, "the expiry follows the API's clock")

	code, env = call("GET", "/api/v1/routes", "view", nil)
	require.Equal(t, http.StatusOK, code)
	var rl api.RouteList
	require.NoError(t, json.Unmarshal(env.Data, &rl))
	require.Len(t, rl.Routes, 1)
	require.Equal(t, "operator:ci", rl.Routes[0].SetBy)

	code, _ = call("DELETE", "/api/v1/clusters/eu-1", "op", nil)
	require.Equal(t, http.StatusOK, code, "no route uses eu-1")
	code, _ = call("POST", "/api/v1/clusters", "op", eu)
	require.Equal(t, http.StatusOK, code)
	code, _ = call("PUT", "/api/v1/routes", "op", api.RouteRequest{Scope: "device", Selector: "dev-1", Cluster: "eu-1"})
	require.Equal(t, http.StatusOK, code)
	code, _ = call("DELETE", "/api/v1/clusters/eu-1", "op", nil)
	require.Equal(t, http.StatusConflict, code, "a route uses eu-1")

	code, _ = call("POST", "/api/v1/clusters/eu-1/drain", "op", api.DrainRequest{Rate: 0})
	require.Equal(t, http.StatusBadRequest, code)
	code, env = call("POST", "/api/v1/clusters/eu-1/drain", "op", api.DrainRequest{Rate: 50})
	require.Equal(t, http.StatusOK, code, env.Error)
	code, _ = call("POST", "/api/v1/clusters/nope/drain", "op", api.DrainRequest{Rate: 50})
	require.Equal(t, http.StatusNotFound, code)

	code, env = call("DELETE", "/api/v1/routes?scope=group&selector=line-a", "op", nil)
	require.Equal(t, http.StatusOK, code, env.Error)
	code, _ = call("DELETE", "/api/v1/routes?scope=group&selector=line-a", "op", nil)
	require.Equal(t, http.StatusNotFound, code)

	moved.mu.Lock()
	require.Contains(t, moved.calls, []string{"dev-1"})
	require.Contains(t, moved.rates, 50.0)
	moved.mu.Unlock()

	audit, err := reg.ListAudit(ctx, 100, 0)
	require.NoError(t, err)
	actions := map[string]bool{}
	for _, e := range audit {
		actions[e.Action] = true
	}
	for _, a := range []string{registry.ActionClusterAdd, registry.ActionClusterRemove, registry.ActionClusterDrain, registry.ActionRouteSet, registry.ActionRouteClear} {
		require.True(t, actions[a], "audited: %s", a)
	}
}
