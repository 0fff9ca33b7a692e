// Package gcpace keeps the garbage collector's headroom in proportion to the live heap.
//
// Since Go 1.18 the collector's goal counts the goroutine stacks it scans and the globals
// with the live heap: the heap may grow to live + (live + stacks + globals) × GOGC/100 before
// the next collection. A gateway holding tens of thousands of idle device connections keeps a
// goroutine stack per connection beside its live heap, so at GOGC 100 it lets more than the
// live heap's worth of garbage build up before collecting, and its resident set follows. The
// release notes of Go 1.18 give the remedy: lower GOGC where this matters. A Pacer does that
// as the process runs: after collections it sets the GC percent to
//
//	GOGC × live / (live + stacks + globals)
//
// so that the headroom is GOGC % of the live heap, as it was before Go 1.18 (GOGC being 100,
// the runtime's default, unless a GOGC in the environment says otherwise). Under ingest load
// the heap (the TSDB head, batches in flight) dwarfs the stacks and the percent stays near
// 100; with many idle connections it falls, never below 25. A GOGC in the environment is the
// operator's choice and is left exactly as set (no pacing); GOMEMLIMIT works as it always
// does.
package gcpace

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/clock"
)

// Interval is how often the pacer reads the collector's figures. They change at the end of
// each collection; an idle gateway collects every few seconds to every two minutes.
const Interval = 5 * time.Second

// The runtime/metrics the percent is computed from: what the last collection found live.
var sampleNames = [...]string{"/gc/heap/live:bytes", "/gc/scan/stack:bytes", "/gc/scan/globals:bytes"}

// Pacer sets the GC percent from the collector's last figures; see the package comment.
type Pacer struct {
	base    int  // the GC percent the process started with: 100, or the operator's GOGC
	pace    bool // false when GOGC is set in the environment: base stands as set
	clk     clock.Clock
	samples []metrics.Sample
	last    int
	gauge   prometheus.Gauge
}

// processBase is the GC percent the process had when the first pacer was made, and whether
// to pace it (not when GOGC is set in the environment: the operator's setting stands). Later
// pacers (several servers in one test process) take the same base, not what an earlier pacer
// set.
var processBase = sync.OnceValues(func() (int, bool) {
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	return base, os.Getenv("GOGC") == "" && base > 0
})

// New returns a pacer for this process: it paces from the GC percent the process ran with
// when the first pacer was made, and does nothing when GOGC is set in the environment. Its
// gauge, millwright_gc_percent, is registered with reg and shows the percent in force.
func New(clk clock.Clock, reg prometheus.Registerer) *Pacer {
	base, pace := processBase()
	return newPacer(base, pace, clk, reg)
}

func newPacer(base int, pace bool, clk clock.Clock, reg prometheus.Registerer) *Pacer {
	p := &Pacer{base: base, pace: pace, clk: clk, last: base}
	for _, name := range sampleNames {
		p.samples = append(p.samples, metrics.Sample{Name: name})
	}
	p.gauge = promauto.With(reg).NewGauge(prometheus.GaugeOpts{
		Name: "millwright_gc_percent",
		Help: "The GC percent in force: set by the server so that the collector's headroom is 100 % of the live heap alone, or the operator's GOGC (-1: off).",
	})
	p.gauge.Set(float64(base))
	return p
}

// Run adjusts the GC percent every Interval until ctx ends, then restores the base. With GOGC
// set by the operator there is nothing to pace, and Run only waits for ctx: it is a part of the
// server's run group all the same, and a part that ended by itself would stop the server.
func (p *Pacer) Run(ctx context.Context) {
	if !p.pace {
		<-ctx.Done()
		return
	}
	defer debug.SetGCPercent(p.base)
	for clock.Sleep(ctx, p.clk, Interval) {
		p.Step()
	}
}

// Step reads the collector's last figures and sets the GC percent from them; it returns the
// percent in force.
func (p *Pacer) Step() int {
	if !p.pace {
		return p.last
	}
	metrics.Read(p.samples)
	var v [len(sampleNames)]uint64
	for i, s := range p.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			v[i] = s.Value.Uint64()
		}
	}
	if pct := Percent(p.base, v[0], v[1], v[2]); pct != p.last {
		debug.SetGCPercent(pct)
		p.last = pct
		p.gauge.Set(float64(pct))
	}
	return p.last
}

// Percent is the GC percent that makes the collector's headroom base % of the live heap
// alone, given what its last collection found: base × live / (live + stacks + globals),
// rounded, and at least a quarter of base (and 1). Before the first collection (nothing live
// yet) it is base.
func Percent(base int, live, stacks, globals uint64) int {
	if base <= 0 || live == 0 {
		return base
	}
	pct := int((float64(base)*float64(live))/float64(live+stacks+globals) + 0.5)
	return max(pct, base/4, 1)
}
