package millwrightcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
)

// TestSimConfigReachesFleet: a configuration change for a group reaches 1,000 simulated
// agents (real agents, the millwright-agent code) connected to a real server, and every one
// reports it applied. The time from the API call to the last report is logged.
func TestSimConfigReachesFleet(t *testing.T) {
	const devices = 1000
	s := startSimServer(t)
	reg := s.srv.Registry()
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr := run("sim", "--json", "--log-level", "warn", "--server", s.srv.MQTTAddr().String(), "--data", s.dir,
			"--api-server", s.api(), "--devices", "1000", "--id-prefix", "cfg", "--metrics", "idle",
			"--interval", "10s", "--keepalive", "60s", "--duration", "25s")
		if code != 0 {
			t.Errorf("sim: exit %d: %s", code, stderr)
		}
	}()
	ctx := context.Background()
	connected := func() int {
		devs, _, err := reg.ListDevices(ctx, registry.ListFilter{Limit: 10000})
		require.NoError(t, err)
		n := 0
		for _, d := range devs {
			if !d.LastSeenAt.IsZero() {
				n++
			}
		}
		return n
	}
	require.Eventually(t, func() bool { return connected() == devices }, 60*time.Second, 200*time.Millisecond, "every agent connects")
	t.Logf("%d agents connected", devices)
	devs, _, err := reg.ListDevices(ctx, registry.ListFilter{Limit: 10000})
	require.NoError(t, err)
	for _, d := range devs {
		require.NoError(t, reg.SetGroups(ctx, d.ID, []string{"line-a"}, nil, "test", ""))
	}

	body, err := json.Marshal(apitypes.ConfigLayerRequest{Scope: "group", Selector: "line-a",
		Document: json.RawMessage(`{"schedule":{"interval":"7s","jitter":"3s"},"batch":{"max_records":500},"health":{"interval":"2m"}}`)})
	require.NoError(t, err)
	req, err := http.NewRequest(http.MethodPost, s.api()+"/api/v1/config/layers", bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.srv.AdminToken())
	start := time.Now()
	resp, err := apiHTTPClient(s).Do(req)
	require.NoError(t, err)
	var env apitypes.Response[apitypes.ConfigLayerSet]
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, env.Error)
	require.Equal(t, devices, env.Data.DevicesChanged)
	var last registry.ConfigStatus
	defer func() {
		if t.Failed() {
			msgs, _ := reg.ListMessages(ctx, devs[0].ID, "", 10, "")
			for _, m := range msgs {
				t.Logf("%s: %s %s %s attempts %d", devs[0].ID, m.Kind, m.State, m.Detail, m.Attempts)
			}
		}
	}()
	require.Eventually(t, func() bool {
		last, err = reg.ConfigStatus(ctx)
		require.NoError(t, err)
		return last.InSync == devices
	}, 30*time.Second, 20*time.Millisecond, "every agent reports the configuration applied: %+v", &last)
	elapsed := time.Since(start)
	t.Logf("configuration change for a group of %d agents: all reported it applied %v after the API call", devices, elapsed.Round(time.Millisecond))
	require.Zero(t, last.Refused)
	dc, err := reg.DeviceConfig(ctx, devs[0].ID)
	require.NoError(t, err)
	require.JSONEq(t, string(dc.Desired), string(dc.Reported))
	<-done
}

func apiHTTPClient(s *simServer) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.srv.CA().Pool()}}}
}
