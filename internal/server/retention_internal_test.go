package server

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/eventlog"
)

// TestRetention: on the server's clock, the event log drops the segments older than the event
// retention (by default the TSDB's) and the audit log the entries older than the audit
// retention, at start and then hourly.
func TestRetention(t *testing.T) {
	day := 24 * time.Hour
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	opts := DefaultOptions()
	opts.DataDir = t.TempDir()
	opts.MQTT.Listen, opts.HTTPListen = "127.0.0.1:0", "127.0.0.1:0"
	opts.TSDB.Retention = 10 * day
	opts.AuditRetention = 2 * day
	opts.EventSegmentBytes = 1 // a segment per flush
	s, err := New(opts, clk, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	ctx := context.Background()

	for _, age := range []time.Duration{12 * day, 5 * day, 1 * day} {
		require.NoError(t, s.events.Append(eventlog.Event{Time: start.Add(-age).UnixMilli(), Device: "d", Name: "state"}))
		require.NoError(t, s.events.Flush(false))
	}
	require.NoError(t, s.registry.Audit(ctx, "o-admin", "test.old", "", "", ""))
	clk.Set(start.Add(3 * day))
	require.NoError(t, s.registry.Audit(ctx, "o-admin", "test.new", "", "", ""))
	events := func() int {
		evs, err := s.events.List(eventlog.Query{})
		require.NoError(t, err)
		return len(evs)
	}
	audits := func(action string) int {
		es, err := s.registry.ListAudit(ctx, 1000, 0)
		require.NoError(t, err)
		n := 0
		for _, e := range es {
			if e.Action == action {
				n++
			}
		}
		return n
	}
	require.Equal(t, 3, events())

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- s.runRetention(rctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	// At start, now is start+3d: the event 12 days before start goes, and the audit entry of start.
	require.Eventually(t, func() bool { return events() == 2 }, 10*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return audits("test.old") == 0 }, 10*time.Second, time.Millisecond)
	require.Equal(t, 1, audits("test.new"), "an entry within the retention stays")

	// Five days later the event 5 days before start is 13 days old and goes too.
	clk.BlockUntil(1)
	clk.Advance(5 * day)
	// The audit entry of start+3d is now 5 days old and goes.
	require.Eventually(t, func() bool { return events() == 1 && audits("test.new") == 0 }, 10*time.Second, time.Millisecond)
}

func TestEventRetentionDefault(t *testing.T) {
	o := DefaultOptions()
	require.Equal(t, o.TSDB.Retention, o.eventRetention(), "by default events go with the telemetry")
	o.EventRetention = time.Hour
	require.Equal(t, time.Hour, o.eventRetention())
	o.EventRetention = -time.Hour
	require.ErrorContains(t, o.Validate(), "event_retention")
	o.EventRetention, o.AuditRetention = 0, -time.Hour
	require.ErrorContains(t, o.Validate(), "audit_retention")
}
