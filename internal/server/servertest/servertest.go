// Package servertest runs a real Millwright server inside a test process: its data in a fresh
// temporary directory, its listeners on free loopback ports, stopped when the test ends.
package servertest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/server"
)

// Start runs a server with the default options, changed by mutate (nil for none), and
// returns once its HTTPS listener accepts connections. It logs warnings and errors to
// standard error. The server is closed when the test ends; the test fails if it does not stop
// cleanly within 30 s.
func Start(t testing.TB, mutate func(*server.Options)) *server.Server {
	t.Helper()
	opts := server.DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen = "127.0.0.1:0"
	opts.HTTPListen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&opts)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := server.New(opts, clock.Real(), logger)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	t.Cleanup(func() {
		closed := make(chan error, 1)
		go func() { closed <- srv.Close() }()
		select {
		case err := <-done:
			require.NoError(t, err)
			require.NoError(t, <-closed)
		case <-time.After(30 * time.Second):
			t.Error("server did not stop within 30s")
		}
	})
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", srv.HTTPAddr().String())
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the server's HTTPS listener does not accept")
	return srv
}
