package devicepolicy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
)

// recordingReporter records what the FactRecorder writes; with a gate, each ReportFacts says it
// was called and waits for the gate.
type recordingReporter struct {
	mu      sync.Mutex
	reports []string
	seen    map[string]time.Time

	called chan struct{}
	gate   chan struct{}
}

func (r *recordingReporter) ReportFacts(_ context.Context, id, model, operator, firmware string, _ time.Time, _ time.Duration) error {
	if r.gate != nil {
		r.called <- struct{}{}
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reports = append(r.reports, id+" "+model+"/"+operator+"/"+firmware)
	return nil
}

func (r *recordingReporter) MarkSeen(_ context.Context, seen map[string]time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]time.Time{}
	}
	for id, t := range seen {
		if t.After(r.seen[id]) {
			r.seen[id] = t
		}
	}
	return nil
}

// TestFactRecorder: a device's facts are written once while they do not change, and its later
// connects only move its last-seen time; Close writes what is queued.
func TestFactRecorder(t *testing.T) {
	rep := &recordingReporter{}
	q := NewFactRecorder(rep, FactOptions{}, nil, prometheus.NewRegistry())
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	gw := gateway.Facts{HardwareModel: "gw-200", NetworkOperator: "Telia", FirmwareVersion: "2.1.0"}
	at := func(f gateway.Facts, d time.Duration) gateway.Facts { f.Seen = t0.Add(d); return f }

	q.Connected("dev-1", at(gw, 0))
	q.Connected("dev-1", at(gw, time.Minute))
	q.Connected("dev-2", at(gateway.Facts{}, 2*time.Minute))
	newer := gw
	newer.FirmwareVersion = "2.2.0"
	q.Connected("dev-1", at(newer, 3*time.Minute))
	q.Connected("dev-1", at(newer, 4*time.Minute))
	require.NoError(t, q.Close())

	require.Equal(t, []string{"dev-1 gw-200/Telia/2.1.0", "dev-1 gw-200/Telia/2.2.0"}, rep.reports)
	require.Equal(t, map[string]time.Time{"dev-1": t0.Add(4 * time.Minute), "dev-2": t0.Add(2 * time.Minute)}, rep.seen)
}

// TestFactRecorderQueueBound: while the registry is slow, reports beyond the queue are dropped
// and counted; a connect never waits.
func TestFactRecorderQueueBound(t *testing.T) {
	rep := &recordingReporter{called: make(chan struct{}), gate: make(chan struct{})}
	q := NewFactRecorder(rep, FactOptions{Queue: 2}, nil, prometheus.NewRegistry())
	f := gateway.Facts{HardwareModel: "gw-200", Seen: time.Now()}
	q.Connected("dev-0", f)
	<-rep.called // the writer holds dev-0's report, blocked on the registry
	for _, id := range []string{"dev-1", "dev-2", "dev-3", "dev-4", "dev-5"} {
		q.Connected(id, f)
	}
	require.Equal(t, 3.0, testutil.ToFloat64(q.dropped), "two queued, three dropped")
	go func() {
		for range rep.called {
		}
	}()
	close(rep.gate)
	require.NoError(t, q.Close())
	close(rep.called)
	require.Len(t, rep.reports, 3)
}

// TestFactRecorderReportAfterClose: a state message the HTTPS side takes after the MQTT side
// closed the recorder is dropped and counted, not a panic.
func TestFactRecorderReportAfterClose(t *testing.T) {
	q := NewFactRecorder(nopFacts{}, FactOptions{}, nil, prometheus.NewRegistry())
	require.NoError(t, q.Close())
	q.Connected("pump-1", gateway.Facts{FirmwareVersion: "1.0"})
	q.Seen("pump-1", time.Now())
	require.Equal(t, 1.0, testutil.ToFloat64(q.dropped))
}

type nopFacts struct{}

func (nopFacts) ReportFacts(context.Context, string, string, string, string, time.Time, time.Duration) error {
	return nil
}
func (nopFacts) MarkSeen(context.Context, map[string]time.Time) error { return nil }
