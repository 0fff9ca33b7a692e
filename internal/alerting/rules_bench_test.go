package alerting

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/tsdb"
)

// benchSeries are the series of one device, as docs/monitoring.md lists them: the info,
// one tag, one group, seven disconnect causes, one batch result, and the 14 others.
func benchSeries(i int) []labels.Labels {
	dev := fmt.Sprintf("dev-%06d", i)
	l := func(name string, kv ...string) labels.Labels {
		return labels.FromStrings(append([]string{labels.MetricName, name, "device", dev}, kv...)...)
	}
	ls := []labels.Labels{
		l("millwright_device_info", "firmware", "fw-"+strconv.Itoa(i%10), "model", "m-"+strconv.Itoa(i%5), "operator", "op-"+strconv.Itoa(i%3)),
		l("millwright_device_tag", "key", "site", "value", "site-"+strconv.Itoa(i%20)),
		l("millwright_device_group", "group", "line-"+strconv.Itoa(i%50)),
	}
	for _, c := range []string{"clean", "keepalive_timeout", "reset", "protocol_error", "takeover", "kicked", "server_shutdown"} {
		ls = append(ls, l("millwright_device_disconnects_total", "cause", c))
	}
	for _, n := range []string{"batches_total"} {
		ls = append(ls, l("millwright_device_"+n, "result", "accepted"))
	}
	for _, n := range []string{"connected", "connects_total", "received_bytes_total", "sent_bytes_total",
		"received_messages_total", "sent_messages_total", "ingest_delay_seconds_sum", "ingest_delay_seconds_count",
		"session_seconds_total", "last_seen_timestamp_seconds", "expected_interval_seconds", "online",
		"certificate_expiry_timestamp_seconds", "silent"} {
		ls = append(ls, l("millwright_device_"+n))
	}
	return ls
}

// benchValue is series k of device i at hour h of the run: counters grow, gauges hold.
func benchValue(i, k int, h float64, end time.Time) float64 {
	switch {
	case k <= 2: // info, tag, group
		return 1
	case k <= 9: // disconnects by cause: half a drop per hour, and 3 clean ones
		if k == 3 {
			return math.Floor(3 * h)
		}
		return math.Floor(0.5 * h / 6 * float64(1+(i+k)%3))
	case k == 10: // batches accepted
		return math.Floor(60 * h)
	}
	switch name := k - 11; name {
	case 0, 11: // connected, online: 98 % of the fleet
		return b2f(i%50 != 0)
	case 13: // silent: the rest
		return b2f(i%50 == 0)
	case 9: // last seen
		return float64(end.Unix())
	case 10: // expected interval
		return 60
	case 12: // certificate expiry
		return float64(end.Add(60 * 24 * time.Hour).Unix())
	default:
		return math.Floor(1000 * h)
	}
}

// writeBenchFleet writes devices' series every step over 65 minutes ending at end.
func writeBenchFleet(b *testing.B, s *tsdb.Store, devices int, end time.Time, step time.Duration) int {
	start := end.Add(-65 * time.Minute)
	var refs []storage.SeriesRef
	series := 0
	for ts := start; !ts.After(end); ts = ts.Add(step) {
		app, err := s.Appender(context.Background())
		require.NoError(b, err)
		h := ts.Sub(start).Hours()
		n := 0
		for i := range devices {
			var ls []labels.Labels
			if refs == nil || n >= len(refs) {
				ls = benchSeries(i)
			}
			for k := range 25 {
				var ref storage.SeriesRef
				if n < len(refs) {
					ref = refs[n]
				}
				l := labels.EmptyLabels()
				if ls != nil {
					l = ls[k]
				}
				if ref, err = app.Append(ref, l, ts.UnixMilli(), benchValue(i, k, h, end)); err != nil {
					b.Fatal(err)
				}
				if n >= len(refs) {
					refs = append(refs, ref)
				}
				n++
			}
		}
		series = n
		require.NoError(b, app.Commit())
	}
	return series
}

// BenchmarkDefaultRules evaluates the built-in rule set, every group once per iteration, over
// the series of 19,000 and of 100,000 devices (25 series each, docs/monitoring.md), written
// over 65 minutes every step (the monitor writes every 15 s by default; every minute keeps the
// setup of 100,000 devices within minutes). Besides the wall time it reports the process's CPU
// time per evaluation (cpu-s/op), which another load on the machine does not inflate, and
// each group's own evaluation time.
//
// All four take about 20 minutes and 15 GB on 2 cores; -bench 'DefaultRules/devices=19000'
// runs the small ones.
//
//	go test -run '^$' -bench DefaultRules -benchtime 3x -timeout 60m ./internal/alerting/
func BenchmarkDefaultRules(b *testing.B) {
	for _, c := range []struct {
		devices int
		step    time.Duration
	}{{19_000, time.Minute}, {100_000, time.Minute}, {19_000, 15 * time.Second}, {100_000, 15 * time.Second}} {
		b.Run(fmt.Sprintf("devices=%d/step=%s", c.devices, c.step), func(b *testing.B) {
			o := tsdb.DefaultOptions()
			o.Sync = tsdb.SyncNever
			s, err := tsdb.Open(b.TempDir(), o, nil, nil)
			require.NoError(b, err)
			defer s.Close()
			end := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
			t := time.Now()
			series := writeBenchFleet(b, s, c.devices, end, c.step)
			samples := series * int(65*time.Minute/c.step+1)
			b.Logf("%d devices, %d series, %d samples written in %s", c.devices, series, samples, time.Since(t).Round(time.Second))
			m, err := New(DefaultOptions(), s, Config{Manual: true})
			require.NoError(b, err)
			require.NoError(b, m.Start())
			defer m.Stop(context.Background())
			runtime.GC()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for b.Loop() {
				m.EvalAt(context.Background(), end)
			}
			b.StopTimer()
			b.ReportMetric((cpuTime(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			for _, g := range m.RuleGroups() {
				b.ReportMetric(g.GetEvaluationTime().Seconds(), "s/"+g.Name())
				for _, r := range g.Rules() {
					require.NoError(b, r.LastError(), r.Name())
					b.Logf("%s %s %s: %s", g.Name(), r.Name(), r.Labels().Get("dimension"), r.GetEvaluationDuration().Round(time.Millisecond))
				}
			}
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
