package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkMailboxAtConnect measures the registry work the device channel does when a device
// connects and subscribes to its commands and configuration, at 100,000 registered devices
// with configuration layers for the fleet, ten groups and five site tags, and an open
// command for every tenth device: RefreshConfig of the device (a read when its document is
// current: layers, device, stored document — 3 queries), then its open configuration and
// command messages (2 queries). 5 queries per connect.
//
//	go test ./internal/registry -run '^$' -bench MailboxAtConnect -benchtime 5000x
func BenchmarkMailboxAtConnect(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, r *Registry) {
		ctx := context.Background()
		loadDevices(b, r, benchDevices)
		start := time.Now()
		_, err := r.SetConfigLayer(ctx, ScopeFleet, "", json.RawMessage(`{"schedule":{"interval":"60s"}}`), "bench", "")
		require.NoError(b, err)
		b.Logf("fleet layer over %d devices: %s", benchDevices, time.Since(start).Round(time.Millisecond))
		for g := range 10 {
			_, err := r.SetConfigLayer(ctx, ScopeGroup, fmt.Sprintf("group-%d", g), json.RawMessage(fmt.Sprintf(`{"health":{"interval":"%ds"}}`, 60+g)), "bench", "")
			require.NoError(b, err)
		}
		for site := range 5 {
			_, err := r.SetConfigLayer(ctx, ScopeTag, fmt.Sprintf("site=site-%d", site), json.RawMessage(`{"log":{"level":"info"}}`), "bench", "")
			require.NoError(b, err)
		}
		for i := 1; i < benchDevices; i += 10 {
			if i%50 == 0 {
				continue
			}
			_, err := r.SendCommand(ctx, CommandSpec{Device: fmt.Sprintf("dev-%06d", i), Name: "diag.spool"}, "bench", "")
			require.NoError(b, err)
		}
		b.ResetTimer()
		for range b.N {
			id := fmt.Sprintf("dev-%06d", 1+rand.IntN(benchDevices-1))
			if _, err := r.RefreshConfig(ctx, []string{id}); err != nil {
				b.Fatal(err)
			}
			if _, err := r.OpenMessages(ctx, id, KindConfig); err != nil {
				b.Fatal(err)
			}
			if _, err := r.OpenMessages(ctx, id, KindCommand); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/connect")
		b.ReportMetric(5, "queries/connect")
	})
}

// BenchmarkConfigChange measures a configuration change for one group of 1,000 and for the
// whole fleet of 100,000 devices: the layer written, every document of the selection
// recomputed, and a configuration message queued per device whose document changed.
//
//	go test ./internal/registry -run '^$' -bench ConfigChange -benchtime 3x
func BenchmarkConfigChange(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, r *Registry) {
		ctx := context.Background()
		loadDevices(b, r, benchDevices)
		for _, c := range []struct{ name, scope, selector string }{{"group-of-1000", "group", "group-7"}, {"fleet-of-100000", "fleet", ""}} {
			b.Run(c.name, func(b *testing.B) {
				changed := 0
				for i := range b.N {
					msgs, err := r.SetConfigLayer(ctx, ConfigScope(c.scope), c.selector, json.RawMessage(fmt.Sprintf(`{"schedule":{"jitter":"%ds"}}`, i+1)), "bench", "")
					require.NoError(b, err)
					changed = len(msgs)
				}
				b.ReportMetric(float64(changed), "devices")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(max(changed, 1)), "µs/device")
			})
		}
	})
}

// BenchmarkQueuedCommandSize measures what a queued command costs: it lives in the registry,
// not in the server's memory, so the cost is its row and index entries — bytes of the SQLite
// file per command (a command with two arguments, as the CLI sends them) — and the Go heap
// left after queueing them (expected about zero: nothing is kept per message until it is
// sent).
//
//	go test ./internal/registry -run '^$' -bench QueuedCommandSize -benchtime 20000x
func BenchmarkQueuedCommandSize(b *testing.B) {
	r := openTest(b, BackendSQLite)
	ctx := context.Background()
	loadDevices(b, r, 10_000)
	path := testURL(b, r)[len("sqlite://"):]
	size := func() int64 {
		_, err := r.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`)
		require.NoError(b, err)
		st, err := os.Stat(path)
		require.NoError(b, err)
		return st.Size()
	}
	before := size()
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	heapBefore := heap()
	b.ResetTimer()
	for i := range b.N {
		d := 1 + i%9_000
		if d%50 == 0 { // every 50th is revoked
			d++
		}
		_, err := r.SendCommand(ctx, CommandSpec{Device: fmt.Sprintf("dev-%06d", d), Name: "diag.logs",
			Args: map[string]string{"lines": "200", "level": "warn"}, TTL: 24 * time.Hour, MaxOpen: 1000}, "operator:ops", "192.0.2.7:51234")
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric((float64(heap())-float64(heapBefore))/float64(b.N), "heap-bytes/command")
	b.ReportMetric(float64(size()-before)/float64(b.N), "bytes/command")
}
