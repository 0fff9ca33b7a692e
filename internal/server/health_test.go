package server_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/server"
)

// TestHealthAndReadiness: /-/healthy and /-/ready answer without a token; /-/ready turns 503,
// with the reason, once the telemetry store is closed, while /-/healthy stays 200.
func TestHealthAndReadiness(t *testing.T) {
	s := startServer(t, nil)
	c := s.apiClient()
	defer c.CloseIdleConnections()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := c.Get(s.url(path))
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get(server.HealthyPath)
	require.Equal(t, http.StatusOK, code, body)
	require.Eventually(t, func() bool { code, _ := get(server.ReadyPath); return code == http.StatusOK }, 10*time.Second, 10*time.Millisecond,
		"the server does not become ready")
	code, body = get(server.ReadyPath)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "Millwright is Ready.\n", body)

	require.NoError(t, s.Store().Close())
	code, body = get(server.ReadyPath)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "Millwright is not ready: tsdb: telemetry store closed\n", body)
	code, _ = get(server.HealthyPath)
	require.Equal(t, http.StatusOK, code)
}

// TestNotReadyBeforeRun: a server made but not yet serving is not ready.
func TestNotReadyBeforeRun(t *testing.T) {
	opts := server.DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen = "127.0.0.1:0"
	opts.HTTPListen = "127.0.0.1:0"
	srv, err := server.New(opts, clock.Real(), nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, srv.Close()) }()
	require.ErrorIs(t, srv.Ready(t.Context()), server.ErrNotServing)
}
