package alerting

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/tsdb"
)

// device is one synthetic device of a fleet whose series (docs/monitoring.md) a test writes.
type device struct {
	id, firmware, model, operator string
	// state at a time: "online", "silent" or "offline".
	state func(time.Time) string
	// drops (disconnects by cause keepalive_timeout), accepted and refused batches per hour,
	// and the refusal reason.
	drops, batches, refused float64
	reason                  string
	// faultDrops and faultRefused are added per hour from the fault on.
	faultDrops, faultRefused float64
	certExpiry               time.Time
}

func online(time.Time) string { return "online" }

// fleet makes n devices: firmware, model and operator spread evenly over two, two and three
// values, online all the time, a drop every two hours, a batch a minute, certificates
// valid for 90 days from start.
func fleet(n int, start time.Time) []*device {
	ds := make([]*device, n)
	for i := range ds {
		ds[i] = &device{
			id:       fmt.Sprintf("dev-%04d", i),
			firmware: []string{"2.0.0", "2.0.1"}[i%2],
			model:    []string{"m1", "m2"}[i/2%2],
			operator: []string{"op-a", "op-b", "op-c"}[i%3],
			state:    online,
			drops:    0.5, batches: 60,
			certExpiry: start.Add(90 * 24 * time.Hour),
		}
	}
	return ds
}

func openStore(t testing.TB) *tsdb.Store {
	t.Helper()
	o := tsdb.DefaultOptions()
	o.Sync = tsdb.SyncNever
	s, err := tsdb.Open(t.TempDir(), o, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

// writeFleet writes the fleet's series every step from from to to; the faults' rates count
// from fault on.
func writeFleet(t testing.TB, s *tsdb.Store, ds []*device, from, to, fault time.Time, step time.Duration) {
	t.Helper()
	app, err := s.Appender(context.Background())
	require.NoError(t, err)
	hours := func(ts time.Time) float64 { return ts.Sub(from).Hours() }
	faultHours := func(ts time.Time) float64 { return max(0, ts.Sub(fault).Hours()) }
	for _, d := range ds {
		dev := labels.Label{Name: "device", Value: d.id}
		series := func(name string, extra ...string) labels.Labels {
			b := labels.NewScratchBuilder(4)
			b.Add(labels.MetricName, name)
			b.Add(dev.Name, dev.Value)
			for i := 0; i < len(extra); i += 2 {
				b.Add(extra[i], extra[i+1])
			}
			b.Sort()
			return b.Labels()
		}
		info := series("millwright_device_info", "firmware", d.firmware, "model", d.model, "operator", d.operator)
		on, silent := series("millwright_device_online"), series("millwright_device_silent")
		drops := series("millwright_device_disconnects_total", "cause", "keepalive_timeout")
		clean := series("millwright_device_disconnects_total", "cause", "clean")
		accepted := series("millwright_device_batches_total", "result", "accepted")
		var refused labels.Labels
		if d.refused > 0 || d.faultRefused > 0 {
			refused = series("millwright_device_batches_total", "result", d.reason)
		}
		cert := series("millwright_device_certificate_expiry_timestamp_seconds")
		refs := map[string]storage.SeriesRef{}
		add := func(ls labels.Labels, ts time.Time, v float64) {
			k := ls.String()
			ref, err := app.Append(refs[k], ls, ts.UnixMilli(), v)
			require.NoError(t, err)
			refs[k] = ref
		}
		for ts := from; !ts.After(to); ts = ts.Add(step) {
			st := d.state(ts)
			add(info, ts, 1)
			add(on, ts, b2f(st == "online"))
			add(silent, ts, b2f(st == "silent"))
			add(drops, ts, math.Floor(d.drops*hours(ts)+d.faultDrops*faultHours(ts)))
			add(clean, ts, math.Floor(3*hours(ts)))
			add(accepted, ts, math.Floor(d.batches*hours(ts)))
			if refused.Len() > 0 {
				add(refused, ts, math.Floor(d.refused*hours(ts)+d.faultRefused*faultHours(ts)))
			}
			add(cert, ts, float64(d.certExpiry.Unix()))
		}
	}
	require.NoError(t, app.Commit())
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// writeSeries writes one series with a value every step from from to to.
func writeSeries(t testing.TB, s *tsdb.Store, ls labels.Labels, from, to time.Time, step time.Duration, v float64) {
	t.Helper()
	app, err := s.Appender(context.Background())
	require.NoError(t, err)
	var ref storage.SeriesRef
	for ts := from; !ts.After(to); ts = ts.Add(step) {
		ref, err = app.Append(ref, ls, ts.UnixMilli(), v)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())
}

// evalEvery evaluates every group at each step from from to to.
func evalEvery(m *Manager, from, to time.Time, step time.Duration, before func(time.Time)) {
	for ts := from; !ts.After(to); ts = ts.Add(step) {
		if before != nil {
			before(ts)
		}
		m.EvalAt(context.Background(), ts)
	}
}

// firing returns the firing alerts of the alerting rule name.
func firing(t testing.TB, m *Manager, name string) []*rules.Alert {
	t.Helper()
	var out []*rules.Alert
	found := false
	for _, r := range m.AlertingRules() {
		if r.Name() != name {
			continue
		}
		found = true
		require.NoError(t, r.LastError(), name)
		for _, a := range r.ActiveAlerts() {
			if a.State == rules.StateFiring {
				out = append(out, a)
			}
		}
	}
	require.True(t, found, "no alerting rule %s", name)
	return out
}

// newManual makes a manager evaluated by EvalAt only, started, stopped at the test's end.
func newManual(t testing.TB, s *tsdb.Store, opts Options, cfg Config) *Manager {
	t.Helper()
	cfg.Manual = true
	m, err := New(opts, s, cfg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	return m
}
