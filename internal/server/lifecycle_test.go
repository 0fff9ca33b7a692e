package server_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/lifecycle"
	"github.com/millwright/millwright/internal/optcheck"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

func lifecycleOptions(t *testing.T) server.Options {
	opts := server.DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen, opts.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	return opts
}

// released fails the test unless both addresses can be bound again.
func released(t *testing.T, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		require.NoError(t, err, "%s is still bound", a)
		require.NoError(t, ln.Close())
	}
}

// TestCloseUnrun: a server made but never run releases its listeners and its storage on
// Close, so another server can take the same ports and the same data directory; Run then
// refuses, and a second Close does nothing.
func TestCloseUnrun(t *testing.T) {
	opts := lifecycleOptions(t)
	srv, err := server.New(opts, clock.Real(), nil)
	require.NoError(t, err)
	mqttAddr, httpAddr := srv.MQTTAddr().String(), srv.HTTPAddr().String()
	require.NoError(t, srv.Close())
	released(t, mqttAddr, httpAddr)

	// The TSDB's lock, the registry and the event log were released too.
	opts.MQTT.Listen, opts.HTTPListen = mqttAddr, httpAddr
	again, err := server.New(opts, clock.Real(), nil)
	require.NoError(t, err)
	require.NoError(t, again.Close())

	require.ErrorIs(t, srv.Run(context.Background()), lifecycle.ErrClosed)
	require.NoError(t, srv.Close())
}

// TestCloseRunning: Close on a running server shuts it down as the end of Run's context
// would, and returns once Run has.
func TestCloseRunning(t *testing.T) {
	srv, err := server.New(lifecycleOptions(t), clock.Real(), nil)
	require.NoError(t, err)
	mqttAddr, httpAddr := srv.MQTTAddr().String(), srv.HTTPAddr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", mqttAddr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, srv.Close())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	released(t, mqttAddr, httpAddr)
}

// TestNewValidates: New refuses invalid options before it touches the data directory, naming
// the option by its configuration key.
func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*server.Options)
		key    string
	}{
		{func(o *server.Options) { o.MQTT.MaxKeepAlive = 0 }, "mqtt.max_keepalive"},
		{func(o *server.Options) { o.MQTT.AuthorizeTimeout = -time.Second }, "mqtt.authorize_timeout"},
		{func(o *server.Options) { o.TSDB.Retention = -time.Hour }, "tsdb.retention"},
		{func(o *server.Options) { o.HTTP.MaxConnections = 0 }, "http.max_connections"},
		{func(o *server.Options) { o.Ingest.Limits.MaxRecords = 0 }, "ingest.limits.max_records"},
		{func(o *server.Options) { o.Enroll.CertValidity = 0 }, "enroll.cert_validity"},
		{func(o *server.Options) { o.Enroll.DormantReenrollWindow = -time.Hour }, "enroll.dormant_reenroll_window"},
		{func(o *server.Options) { o.API.QueryMaxConcurrency = -1 }, "api.query_max_concurrency"},
		{func(o *server.Options) { o.ShutdownTimeout = 0 }, "shutdown_timeout"},
		{func(o *server.Options) { o.CAKey = "ca.key" }, "ca_cert"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			opts := lifecycleOptions(t)
			opts.DataDir = filepath.Join(opts.DataDir, "data")
			tc.mutate(&opts)
			_, err := server.New(opts, clock.Real(), nil)
			var e *optcheck.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tc.key, e.Key)
			_, err = os.Stat(opts.DataDir)
			require.ErrorIs(t, err, os.ErrNotExist)
		})
	}
}

// TestShutdownKeepsAcknowledged: devices publish batches without pause while the server shuts
// down; every batch acknowledged before the shutdown is in the store when it starts again.
func TestShutdownKeepsAcknowledged(t *testing.T) {
	opts := lifecycleOptions(t)
	srv, err := server.New(opts, clock.Real(), nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	s := &testServer{Server: srv, dir: opts.DataDir}

	const devices, before = 4, 50
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	acked := make([]atomic.Int64, devices)
	// Ended once the server has shut down: a publish still waiting then had no answer.
	pubCtx, stopPublishing := context.WithTimeout(context.Background(), time.Minute)
	defer stopPublishing()
	var wg sync.WaitGroup
	for d := range devices {
		id := fmt.Sprintf("shut-%d", d)
		c := mustConnect(t, s, id)
		wg.Go(func() {
			for b := 0; ; b++ {
				pack := protocol.Pack{{Name: "shutdown_probe", Value: ptr(float64(b)),
					BaseTime: float64(base.UnixMilli()+int64(b)) / 1000}}
				resp, err := publish(pubCtx, c, id, encode(t, pack, cborZstd))
				if err != nil || resp.ReasonCode >= 0x80 {
					return // the session ended, or the server answered "retry": not acknowledged
				}
				acked[d].Add(1)
			}
		})
	}
	require.Eventually(t, func() bool {
		for d := range devices {
			if acked[d].Load() < before {
				return false
			}
		}
		return true
	}, time.Minute, 10*time.Millisecond)
	require.NoError(t, srv.Close())
	require.NoError(t, <-done)
	stopPublishing()
	wg.Wait()

	opts.MQTT.Listen, opts.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	again, err := server.New(opts, clock.Real(), nil)
	require.NoError(t, err)
	go func() { done <- again.Run(context.Background()) }()
	defer func() {
		require.NoError(t, again.Close())
		require.NoError(t, <-done)
	}()
	s = &testServer{Server: again, dir: opts.DataDir}
	for d := range devices {
		n := acked[d].Load()
		stored := s.scalar(t, fmt.Sprintf(`count_over_time(shutdown_probe{device="shut-%d"}[1h])`, d), base.Add(time.Minute))
		require.GreaterOrEqual(t, stored, float64(n), "device shut-%d: %d batches acknowledged, %v stored", d, n, stored)
		t.Logf("shut-%d: %d acknowledged, %v stored", d, n, stored)
	}
}
