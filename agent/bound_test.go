package agent_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/internal/server"
)

// TestSpoolBoundWhileServerAway samples with the server away until the
// spool's bound is reached: the oldest measurements go, the count is
// reported in the agent_dropped_records_overflow_total health measurement,
// and sampling goes on. When the server comes, what the spool kept arrives:
// the newest measurements, without a hole.
func TestSpoolBoundWhileServerAway(t *testing.T) {
	t.Parallel()
	// Reserve an address for the server that is not there yet.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	srv := startServer(t, nil) // for the CA and registry; its MQTT port is not the agent's
	id := "bound-1"
	cfg := srv.agentConfig(t)
	cfg.Uplink.DevAddress = addr
	cfg.Spool.MaxBytes = 32 << 10
	cfg.Spool.SegmentBytes = 4 << 10
	cfg.Health.Interval = 200 * time.Millisecond
	src := newCounterSource("bounded", 2*time.Millisecond)
	opts := srv.options(t, id)
	opts.Sources = []agentSource{src}
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, a)

	require.Eventually(t, func() bool { return a.Stats().Dropped["overflow"] > 500 }, 30*time.Second, 20*time.Millisecond)
	// Sampling goes on past the bound: the oldest records keep being dropped.
	d0 := a.Stats().Dropped["overflow"]
	require.Eventually(t, func() bool { return a.Stats().Dropped["overflow"] > d0+100 }, 30*time.Second, 20*time.Millisecond)
	st := a.Stats()
	require.LessOrEqual(t, st.Spool.Bytes, cfg.Spool.MaxBytes, "the spool stays under its bound")
	require.Zero(t, src.failures(), "sampling never failed")

	// The server arrives at the agent's address.
	srv.stop()
	srv.mutate = func(o *server.Options) { o.MQTT.Listen = addr }
	srv.mqttAddr = addr
	srv.start()
	srv.waitDelivered(t, "bounded", id, 1, 30*time.Second) // the agent is back and delivering
	src.pause()
	all := src.snapshot()
	dropped := a.Stats().Dropped["overflow"]

	// The newest measurements arrive: the last written value first of all.
	var newest int64
	for ts := range all {
		newest = max(newest, ts)
	}
	require.Eventually(t, func() bool {
		_, ok := srv.values(t, "bounded", id)[newest]
		return ok
	}, 30*time.Second, 200*time.Millisecond)
	got := srv.values(t, "bounded", id)
	// What arrived is a suffix of what was written, without a hole.
	lowest := -1.0
	for _, v := range got {
		if lowest < 0 || v < lowest {
			lowest = v
		}
	}
	require.Greater(t, lowest, 0.0, "the oldest measurements were dropped")
	for ts, v := range all {
		if v >= lowest {
			require.Contains(t, got, ts, "value %v after the cut is missing", v)
		}
	}
	// The drop count reached the server as a health measurement.
	var reported float64
	require.Eventually(t, func() bool {
		var ok bool
		reported, ok = srv.scalar(t, fmt.Sprintf(`max_over_time(%s{device=%q}[1d])`, agent.HealthDropped("overflow"), id))
		return ok && reported >= float64(dropped)
	}, 30*time.Second, 200*time.Millisecond)
	t.Logf("%d measurements sampled while the server was away; spool bound %d B held %d B; %d records dropped (reported %v); %d measurements delivered (values %v…), sampling failures %d",
		len(all), cfg.Spool.MaxBytes, st.Spool.Bytes, dropped, reported, len(got), lowest, src.failures())
	require.LessOrEqual(t, float64(len(all))-lowest, float64(len(got))+1)
}
