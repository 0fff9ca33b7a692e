package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server"
)

// TestAnomalyFinderServed: the server runs the anomaly finder on its clock, every
// anomaly.interval, and the API answers its latest report and trends.
func TestAnomalyFinderServed(t *testing.T) {
	clk := clock.NewFake(time.Now())
	opts := server.DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen = "127.0.0.1:0"
	opts.HTTPListen = "127.0.0.1:0"
	opts.Anomaly.Interval = 10 * time.Second
	srv, err := server.New(opts, clk, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	defer func() { require.NoError(t, srv.Close()); <-done }()
	ts := &testServer{Server: srv, dir: srv.DataDir()}
	require.Eventually(t, func() bool {
		c, err := ts.apiClient().Get(ts.url("/api/openapi.json"))
		if err == nil {
			_ = c.Body.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	get := func(path string, params url.Values) (int, apitypes.Response[json.RawMessage]) {
		req, err := http.NewRequest(http.MethodGet, ts.url(path)+"?"+params.Encode(), nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
		resp, err := ts.apiClient().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		var r apitypes.Response[json.RawMessage]
		require.NoError(t, json.Unmarshal(b, &r), "%s", b)
		return resp.StatusCode, r
	}
	code, r := get("/api/v1/anomalies", nil)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, r.Error, "no anomaly report yet")

	require.Eventually(t, func() bool {
		clk.Advance(10 * time.Second)
		return srv.Anomaly().Latest() != nil
	}, 10*time.Second, 10*time.Millisecond)
	code, r = get("/api/v1/anomalies", nil)
	require.Equal(t, http.StatusOK, code, r.Error)
	var rep apitypes.AnomalyReport
	require.NoError(t, json.Unmarshal(r.Data, &rep))
	require.Equal(t, 900.0, rep.WindowSeconds)
	require.Empty(t, rep.Findings)

	code, r = get("/api/v1/trends", url.Values{"metric": {"drops_per_device_hour"}, "dimension": {"firmware"}, "range": {"30d"}, "step": {"1d"}})
	require.Equal(t, http.StatusOK, code, r.Error)
	code, r = get("/api/v1/trends", url.Values{"metric": {"drops"}, "dimension": {"firmware"}})
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, r.Error, `unknown metric "drops"`)
}
