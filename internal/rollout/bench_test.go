package rollout_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/rollout"
)

// BenchmarkAssign places a fleet in the guide plan's phases: ranks (SHA-256 per device) and
// the sort. ns/device is the placement's cost per device.
func BenchmarkAssign(b *testing.B) {
	for _, n := range []int{10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			plan, _ := rollout.Builtin(rollout.PlanGuide)
			devs := make([]rollout.Device, n)
			for i := range devs {
				devs[i] = rollout.Device{ID: fmt.Sprintf("dev-%07d", i)}
				if i%1000 == 0 {
					devs[i].Tags = map[string]string{"ring": "test"}
				}
			}
			b.ResetTimer()
			for b.Loop() {
				plan.Assign("r-1", devs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
		})
	}
}

// BenchmarkStep is one engine step over a rollout of n registry devices (SQLite): "offer"
// is the step that opens the last phase and offers every device the release (records,
// mailbox commands and history in one transaction); "steady" a step in which nothing changes
// (every device installed, waiting for its confirmation window): the cost every interval
// brings. ns/device is the step's wall time per device in scope, registry reads and writes
// included.
func BenchmarkStep(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("devices=%d/offer", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				r := newRig(b)
				r.release("1.0.0", "gw-200", "", false)
				r.release("2.0.0", "gw-200", "", false)
				r.fleet("d", n, "gw-200", "1.0.0", nil)
				plan, _ := rollout.ParsePlan([]byte("phases:\n  - {name: all, percent: 100}\ngates: []\n"))
				_, err := r.eng.Create(r.ctx, rollout.Spec{ID: "bench", Version: "2.0.0", Plan: plan, Actor: "bench"}, "")
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := r.eng.Step(r.ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if len(r.inbox) != n {
					b.Fatalf("%d offers, want %d", len(r.inbox), n)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
		})
		b.Run(fmt.Sprintf("devices=%d/steady", n), func(b *testing.B) {
			r := newRig(b)
			r.release("1.0.0", "gw-200", "", false)
			r.release("2.0.0", "gw-200", "", false)
			r.fleet("d", n, "gw-200", "1.0.0", nil)
			plan, _ := rollout.ParsePlan([]byte("phases:\n  - {name: all, percent: 100}\ngates: []\nconfirm: 1000h\n"))
			ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "bench", Version: "2.0.0", Plan: plan, Actor: "bench"}, "")
			if err != nil {
				b.Fatal(err)
			}
			for range 2 {
				if err := r.eng.Step(r.ctx); err != nil {
					b.Fatal(err)
				}
				r.devicesAct()
				r.clk.Advance(time.Minute)
			}
			recs, _ := r.reg.RolloutDevices(r.ctx, ro.ID)
			if c := rollout.Counts(recs); c[registry.UpdateInstalled] != n {
				b.Fatalf("counts %v", c)
			}
			b.ResetTimer()
			for b.Loop() {
				if err := r.eng.Step(r.ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/device")
		})
	}
}
