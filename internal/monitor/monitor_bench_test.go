package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/tsdb"
)

// fleetRegistry is a registry of n synthetic active devices, for benchmarks of the monitor's
// own costs (the registry's read is BenchmarkFleetSnapshot in internal/registry).
type fleetRegistry struct{ devs []registry.FleetDevice }

func newFleetRegistry(n int) *fleetRegistry {
	r := &fleetRegistry{devs: make([]registry.FleetDevice, n)}
	for i := range r.devs {
		r.devs[i] = registry.FleetDevice{ID: fmt.Sprintf("dev-%06d", i), Status: registry.StatusActive,
			Model: fmt.Sprintf("model-%d", i%10), Operator: fmt.Sprintf("operator-%d", i%5), Firmware: fmt.Sprintf("fw-1.%d", i%20),
			Tags:   map[string]string{"site": fmt.Sprintf("site-%d", i%50), "line": fmt.Sprintf("line-%d", i%7)},
			Groups: []string{fmt.Sprintf("group-%d", i%100)}, LastSeen: testStart, CertificateExpiry: testStart.Add(90 * 24 * time.Hour)}
	}
	return r
}

func (r *fleetRegistry) FleetSnapshot(context.Context) ([]registry.FleetDevice, error) {
	return r.devs, nil
}
func (r *fleetRegistry) RecordSessions(context.Context, []registry.Session) error { return nil }
func (r *fleetRegistry) PruneSessions(context.Context, time.Time) (int64, error)  { return 0, nil }

func openBenchStore(b *testing.B) *tsdb.Store {
	b.Helper()
	store, err := tsdb.Open(filepath.Join(b.TempDir(), "tsdb"), tsdb.DefaultOptions(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(b, err)
	b.Cleanup(func() { _ = store.Close() })
	return store
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// BenchmarkFlush measures one write of every device's series (the registry's read aside) for
// 19,000 and 100,000 connected devices, and reports the series and the memory per device:
// the monitor's counters and the TSDB head's series together, heap in use after collection.
func BenchmarkFlush(b *testing.B) {
	for _, n := range []int{19_000, 100_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			store := openBenchStore(b)
			reg := newFleetRegistry(n)
			clk := clock.NewFake(testStart)
			before := heapInUse()
			m := New(store, reg, DefaultOptions(), clk, nil, prometheus.NewRegistry())
			for _, d := range reg.devs {
				c := connection(d.ID, clk.Now())
				m.Connected(c)
				m.Batch(d.ID, ResultAccepted, clk.Now().Add(-time.Second), clk.Now())
			}
			require.NoError(b, m.Flush(context.Background()))
			held := heapInUse()
			series := store.DB().Head().NumSeries()
			b.ResetTimer()
			for range b.N {
				clk.Advance(15 * time.Second)
				if err := m.Flush(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(series)/float64(n), "series/device")
			b.ReportMetric(float64(held-before)/float64(n), "heap-bytes/device")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/flush")
		})
	}
}

// BenchmarkBatch measures what counting one batch adds to its ingest, from GOMAXPROCS
// goroutines over 19,000 devices.
func BenchmarkBatch(b *testing.B) {
	m := New(nil, newFleetRegistry(0), DefaultOptions(), clock.NewFake(testStart), nil, prometheus.NewRegistry())
	ids := make([]string, 19_000)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%06d", i)
	}
	now := testStart
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Batch(ids[i%len(ids)], ResultAccepted, now, now)
			i += 7
		}
	})
}

// BenchmarkConnectDisconnect measures one connection's report at its start and end.
func BenchmarkConnectDisconnect(b *testing.B) {
	m := New(nil, newFleetRegistry(0), DefaultOptions(), clock.NewFake(testStart), nil, prometheus.NewRegistry())
	m.opts.MaxPendingSessions = 1 << 30
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c := &gateway.Connection{Device: fmt.Sprintf("dev-%06d", i%19_000), Start: testStart, Traffic: &gateway.Traffic{}}
			m.Connected(c)
			m.Disconnected(c, gateway.CauseReset, testStart)
			i++
		}
	})
}
