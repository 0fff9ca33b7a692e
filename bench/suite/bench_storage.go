package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ptsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/internal/tsdb"
)

type storageResult struct {
	samples   int64
	bytes     int64
	index     int64
	chunks    int64
	blocks    int
	vmSamples int64
	vmBytes   int64
	vmIndex   int64
	took      time.Duration
}

func benchStorage(e *env) (string, error) {
	devices, span := 100, 24*time.Hour
	if e.opts.quick {
		devices = 10
	}
	const step = 10 * time.Second
	const batch = 100
	end := time.Now().Add(-time.Minute).Truncate(time.Hour)
	start := end.Add(-span)
	batches := int(span/step) * len(metricNames) / batch
	var res storageResult

	// Millwright's store, through its own ingest pipeline, in this process: the same code path
	// as the server from decoded batch to TSDB.
	dir := filepath.Join(e.work, "storage-tsdb")
	reg := prometheus.NewRegistry()
	store, err := tsdb.Open(dir, tsdb.Options{Sync: tsdb.SyncNever}, nil, reg)
	if err != nil {
		return "", err
	}
	defer store.Close()
	events, err := eventlog.Open(filepath.Join(e.work, "storage-events"))
	if err != nil {
		return "", err
	}
	defer events.Close()
	p := ingest.New(store, events, clock.Real(), ingest.DefaultOptions(), nil, reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { _ = p.Run(ctx); close(runDone) }()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := newGenerator(d, start, step)
			id := deviceID("store-", d)
			for range batches {
				if r := p.Ingest(ctx, id, g.next(batch, encCBORZstd)); r.Err() != nil {
					errs <- fmt.Errorf("device %s: %w", id, r.Err())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return "", err
	}
	db := store.DB()
	head := db.Head()
	if err := db.CompactHead(ptsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())); err != nil {
		return "", fmt.Errorf("compact head: %w", err)
	}
	// Devices that lag behind the others by more than the head's window land in the
	// out-of-order head (the store keeps a 7-day window): cut that into blocks too, then let
	// Compact merge what overlaps.
	if err := db.CompactOOOHead(ctx); err != nil {
		return "", fmt.Errorf("compact out-of-order head: %w", err)
	}
	if err := db.Compact(ctx); err != nil {
		return "", fmt.Errorf("compact: %w", err)
	}
	res.took = time.Since(t0)
	for _, b := range db.Blocks() {
		res.blocks++
		res.samples += int64(b.Meta().Stats.NumSamples)
		size, err := dirSize(b.Dir())
		if err != nil {
			return "", err
		}
		res.bytes += size
		if fi, err := os.Stat(filepath.Join(b.Dir(), "index")); err == nil {
			res.index += fi.Size()
		}
		if c, err := dirSize(filepath.Join(b.Dir(), "chunks")); err == nil {
			res.chunks += c
		}
	}
	cancel()
	<-runDone
	if want := int64(devices * batches * batch); res.samples != want {
		return "", fmt.Errorf("the blocks hold %d samples, %d were stored", res.samples, want)
	}
	fmt.Fprintf(os.Stderr, "  millwright: %d samples, %d bytes in %d blocks\n", res.samples, res.bytes, res.blocks)

	// VictoriaMetrics: the same samples over its import API, then flushed and merged.
	vm, err := startVictoriaMetrics(e.work)
	if err != nil {
		return "", err
	}
	defer stopProc(vm.cmd, 10*time.Second)
	imp := newVMImporter(vm.addr, "store-", devices, start, step)
	send := imp.send(batch)
	var werr error
	var mu sync.Mutex
	for d := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range batches {
				n, _, err := send(context.Background(), d)
				if err != nil {
					mu.Lock()
					werr = err
					mu.Unlock()
					return
				}
				mu.Lock()
				res.vmSamples += int64(n)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if werr != nil {
		return "", werr
	}
	bg := context.Background()
	if _, err := vm.get(bg, "/internal/force_flush"); err != nil {
		return "", err
	}
	for m := start; !m.After(end); m = m.AddDate(0, 0, 1) {
		if _, err := vm.get(bg, "/internal/force_merge?partition_prefix="+m.UTC().Format("2006_01")); err != nil {
			return "", err
		}
	}
	// Merges run in the background: wait until the directory stops changing.
	var last int64 = -1
	for i := 0; i < 120; i++ {
		time.Sleep(time.Second)
		size, err := dirSize(vm.data)
		if err != nil {
			continue // parts come and go during a merge
		}
		if size == last {
			break
		}
		last = size
	}
	res.vmBytes = last
	res.vmIndex, _ = dirSize(filepath.Join(vm.data, "indexdb"))
	return storageReport(devices, span, step, start, res, vm.version), nil
}

func storageReport(devices int, span, step time.Duration, start time.Time, r storageResult, vmVersion string) string {
	var b strings.Builder
	series := devices * len(metricNames)
	fmt.Fprintf(&b, `### Storage: bytes on disk per stored sample

%d devices × %d metrics = %s series, one sample every %s for %s (%s to %s UTC): the suite's
machine readings (three temperatures, vibration, current, voltage, pressure and flow as random
walks at 0.01 resolution, a cycle counter, a mostly constant state). Millwright: the batches go
through its ingest pipeline into its TSDB in this process; then the head is cut into a block
(`+"`db.CompactHead(tsdb.NewRangeHead(head, mint, maxt))`"+`, as the server's own compaction does
once the head spans 3 h) and `+"`db.Compact`"+` merges blocks as it would over time. Size: every
file of every block (chunks, index, meta). VictoriaMetrics %s: the same samples over its
import API, then `+"`/internal/force_flush`"+` and `+"`/internal/force_merge`"+` for each monthly
partition, waiting until the data directory stops changing; size: every file under
`+"`-storageDataPath`"+` (data and indexdb).

`, devices, len(metricNames), num(float64(series), 0), step, span, start.UTC().Format("2006-01-02 15:04"), start.Add(span).UTC().Format("2006-01-02 15:04"), vmVersion)
	t := newTable("store", ">samples", ">bytes on disk", ">bytes per sample", ">of which index", ">ratio to VictoriaMetrics")
	mw := float64(r.bytes) / float64(r.samples)
	vm := float64(r.vmBytes) / float64(r.vmSamples)
	t.add(fmt.Sprintf("Millwright (Prometheus TSDB, %d blocks)", r.blocks), num(float64(r.samples), 0), num(float64(r.bytes), 0), num(mw, 2),
		fmt.Sprintf("%s B/sample", num(float64(r.index)/float64(r.samples), 2)), ratio(mw, vm))
	t.add("VictoriaMetrics", num(float64(r.vmSamples), 0), num(float64(r.vmBytes), 0), num(vm, 2),
		fmt.Sprintf("%s B/sample (indexdb)", num(float64(r.vmIndex)/float64(r.vmSamples), 2)), "1.00×")
	b.WriteString(t.String())
	fmt.Fprintf(&b, "\n- Target ≤ 2 B per stored sample: %s (%s B).\n", verdict(mw <= 2), num(mw, 2))
	return b.String()
}
