package rollout

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/millwright/millwright/internal/tsdb"
)

// BenchmarkGateEval evaluates the drops gate over n devices, each with its disconnect counter
// sampled every 5 minutes over the hour before (13 samples; the monitor writes every 15 s, which
// multiplies the samples read by 20 and the store's size with it): the PromQL query, the sums
// of the two groups (a tenth of the devices on the new release), the connected time that is
// their exposure (a second query) and the test.
func BenchmarkGateEval(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			st, err := tsdb.Open(b.TempDir(), tsdb.DefaultOptions(), nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
			newer, older := map[string]bool{}, map[string]bool{}
			refs := make([]labels.Labels, 2*n)
			for i := range n {
				id := fmt.Sprintf("dev-%07d", i)
				refs[2*i] = labels.FromStrings("__name__", "millwright_device_disconnects_total", "device", id, "cause", "reset")
				refs[2*i+1] = labels.FromStrings("__name__", "millwright_device_connected", "device", id)
				if i%10 == 0 {
					newer[id] = true
				} else {
					older[id] = true
				}
			}
			for ts := now.Add(-time.Hour); !ts.After(now); ts = ts.Add(5 * time.Minute) {
				app, err := st.Appender(ctx)
				if err != nil {
					b.Fatal(err)
				}
				k := float64(ts.Sub(now.Add(-time.Hour)) / (20 * time.Minute))
				for i, ls := range refs {
					v := k
					if i%2 == 1 {
						v = 1
					}
					if _, err := app.Append(0, ls, ts.UnixMilli(), v); err != nil {
						b.Fatal(err)
					}
				}
				if err := app.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			e := NewEngine(nil, st, nil, nil, nil)
			g := DefaultGates()[0].withDefaults()
			b.ResetTimer()
			var res Result
			for b.Loop() {
				ns, os, err := e.samples(ctx, g, time.Hour, now, newer, older, func() (map[string]float64, error) {
					return e.perDevice(ctx, strings.ReplaceAll(ConnectedQuery, "$window", "3600s"), now)
				})
				if err != nil {
					b.Fatal(err)
				}
				res = g.Compare(ns, os)
			}
			if res.New.Devices != n/10 || res.Verdict != GatePass {
				b.Fatalf("%+v", res)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
		})
	}
}
