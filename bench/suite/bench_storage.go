package main

import (
	"context"
	"fmt"
	"math"
	"math/bits"
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
	"github.com/millwright/millwright/protocol"
)

type storageResult struct {
	samples   int64
	bytes     int64
	index     int64
	chunks    int64 // bytes of the chunk files
	numChunks int64
	blocks    int
	vmSamples int64
	vmBytes   int64
	vmIndex   int64
	vmVersion string
	data      *sampleStats // what the stored samples were like
	took      time.Duration
}

// storageDataset is one set of readings the storage benchmark stores.
type storageDataset struct {
	key         string // names the data directories
	name        string // the table's label
	metrics     int    // series per device
	newReadings func(int, time.Time, time.Duration) readings
	backlog     bool // sent as a backlog: see feed
}

var storageDatasets = []storageDataset{
	{"plant-ticks", "plant mix, times as the agent's periodic sources stamp them (on the schedule)", len(plantSignals), plantMixOnTicks, false},
	{"plant", "plant mix, read times 0–2 ms late", len(plantSignals), plantMix, false},
	{"random", "random walks (worst case)", len(metricNames), randomWalk, false},
	{"plant-backlog", "plant mix on the schedule, sent as a backlog (out of order)", len(plantSignals), plantMixOnTicks, true},
}

// feed sends every device's batches, calling send(d) for the next batch of device d. Live
// (the default), the fleet moves through time together, as devices reporting in real time do:
// every device sends its batch r before any sends its batch r+1, so samples reach the store in
// time order. As a backlog, each device sends all its batches as fast as it can, on its own, as
// devices draining their spools after an outage do: the devices drift apart by hours, and the
// samples of those behind the newest reach the store out of order.
func feed(devices, batches int, backlog bool, send func(d int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	if backlog {
		for d := range devices {
			wg.Go(func() {
				for range batches {
					if err := send(d); err != nil {
						fail(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return first
	}
	for range batches {
		for d := range devices {
			wg.Go(func() {
				if err := send(d); err != nil {
					fail(err)
				}
			})
		}
		wg.Wait()
		if failed() {
			break
		}
	}
	return first
}

func benchStorage(e *env) (string, error) {
	devices, span := 100, 24*time.Hour
	if e.opts.quick {
		devices = 10
	}
	const step = 10 * time.Second
	end := time.Now().Add(-time.Minute).Truncate(time.Hour)
	start := end.Add(-span)
	res := make([]storageResult, len(storageDatasets))
	for i, ds := range storageDatasets {
		fmt.Fprintf(os.Stderr, "  %s\n", ds.name)
		r, err := storeDataset(e, ds, devices, start, end, step)
		if err != nil {
			return "", fmt.Errorf("%s: %w", ds.name, err)
		}
		res[i] = r
	}
	return storageReport(devices, span, step, start, res), nil
}

// storeDataset stores span of one dataset's readings from devices in Millwright's store and in
// VictoriaMetrics, compacts both and measures what they hold on disk.
func storeDataset(e *env, ds storageDataset, devices int, start, end time.Time, step time.Duration) (storageResult, error) {
	const batch = 100
	batches := int(end.Sub(start)/step) * ds.metrics / batch
	res := storageResult{data: newSampleStats()}

	// Millwright's store, through its own ingest pipeline, in this process: the same code path
	// as the server from decoded batch to TSDB.
	dir := filepath.Join(e.work, "storage-tsdb-"+ds.key)
	reg := prometheus.NewRegistry()
	store, err := tsdb.Open(dir, tsdb.Options{Sync: tsdb.SyncNever}, nil, reg)
	if err != nil {
		return res, err
	}
	defer store.Close()
	events, err := eventlog.Open(filepath.Join(e.work, "storage-events-"+ds.key))
	if err != nil {
		return res, err
	}
	defer events.Close()
	p := ingest.New(store, events, clock.Real(), ingest.DefaultOptions(), nil, reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan struct{})
	go func() { _ = p.Run(ctx); close(runDone) }()
	t0 := time.Now()
	gens := make([]readings, devices)
	stats := make([]*sampleStats, devices)
	for d := range devices {
		gens[d], stats[d] = ds.newReadings(d, start, step), newSampleStats()
	}
	err = feed(devices, batches, ds.backlog, func(d int) error {
		pack := gens[d].nextPack(batch)
		stats[d].observe(pack)
		payload, err := protocol.Encode(pack, encCBORZstd)
		if err == nil {
			err = p.Ingest(ctx, deviceID("store-", d), payload).Err()
		}
		if err != nil {
			return fmt.Errorf("device %s: %w", deviceID("store-", d), err)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	for _, st := range stats {
		res.data.add(st)
	}
	db := store.DB()
	head := db.Head()
	if err := db.CompactHead(ptsdb.NewRangeHead(head, head.MinTime(), head.MaxTime())); err != nil {
		return res, fmt.Errorf("compact head: %w", err)
	}
	// Samples behind the head's window (a backlog's) land in the out-of-order head (the store
	// keeps a 7-day window): cut that into blocks too, then let Compact merge what overlaps.
	if err := db.CompactOOOHead(ctx); err != nil {
		return res, fmt.Errorf("compact out-of-order head: %w", err)
	}
	if err := db.Compact(ctx); err != nil {
		return res, fmt.Errorf("compact: %w", err)
	}
	res.took = time.Since(t0)
	for _, b := range db.Blocks() {
		res.blocks++
		res.samples += int64(b.Meta().Stats.NumSamples)
		res.numChunks += int64(b.Meta().Stats.NumChunks)
		size, err := dirSize(b.Dir())
		if err != nil {
			return res, err
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
		return res, fmt.Errorf("the blocks hold %d samples, %d were stored", res.samples, want)
	}
	fmt.Fprintf(os.Stderr, "    millwright: %d samples, %d bytes in %d blocks; %.1f %% of the samples changed\n",
		res.samples, res.bytes, res.blocks, 100*res.data.changedShare())

	// VictoriaMetrics: the same samples over its import API, then flushed and merged.
	vm, err := startVictoriaMetrics(e.work)
	if err != nil {
		return res, err
	}
	defer stopProc(vm.cmd, 10*time.Second)
	res.vmVersion = vm.version
	imp := newVMImporter(vm.addr, "store-", devices, ds.newReadings, start, step)
	send := imp.send(batch)
	var vmMu sync.Mutex
	err = feed(devices, batches, ds.backlog, func(d int) error {
		n, _, err := send(context.Background(), d)
		vmMu.Lock()
		res.vmSamples += int64(n)
		vmMu.Unlock()
		return err
	})
	if err != nil {
		return res, err
	}
	bg := context.Background()
	if _, err := vm.get(bg, "/internal/force_flush"); err != nil {
		return res, err
	}
	for m := start; !m.After(end); m = m.AddDate(0, 0, 1) {
		if _, err := vm.get(bg, "/internal/force_merge?partition_prefix="+m.UTC().Format("2006_01")); err != nil {
			return res, err
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
	stopProc(vm.cmd, 10*time.Second)
	fmt.Fprintf(os.Stderr, "    victoria-metrics: %d samples, %d bytes\n", res.vmSamples, res.vmBytes)
	return res, nil
}

func storageReport(devices int, span, step time.Duration, start time.Time, res []storageResult) string {
	var b strings.Builder
	ticks, plant, walk, backlog := res[0], res[1], res[2], res[3]
	pct := func(v float64) string { return num(100*v, 1) + " %" }
	fmt.Fprintf(&b, `### Storage: bytes on disk per stored sample

%d devices, one sample of each of their series every %s for %s (%s to %s UTC), in four
datasets, each stored in Millwright and the same samples in VictoriaMetrics %s. The devices
report as a live fleet does, together through time (every device sends its batch *r* before
any sends its batch *r* + 1), except in the backlog row:

- **Plant mix** (the target's realistic sensor data): the readings of a motor-driven pump with
  its environment sensor, %d signals per device (%s series), each at its sensor's resolution and
  behaving as in the table below; the device agent's typical data (`+"`benchData`"+` in
  `+"`agent/bench_test.go`"+`: 0.1 °C, 0.1 %%RH, 1 Pa, a parts counter) is among them. Times as
  the agent's periodic sources stamp them: milliseconds, each device's schedule started at an
  arbitrary millisecond, every sample on its %s tick (a sample read within min(interval/100,
  5 ms) of its tick carries the tick's time; docs/agent.md, "Sample times on the schedule"), so
  %s of intervals differ from the one before. Of its samples, **%s changed value** from the one
  before in their series.
- **Plant mix, read times**: the same values, each sample 0–2 ms late, as a source that stamps
  the moment it read would send them (the agent's `+"`exec`"+` output and local API keep the times
  they are given): %s of intervals differ. What the timestamps' jitter costs.
- **Random walks**, the worst case: the machine readings the other sections send (three
  temperatures, vibration, current, voltage, pressure and flow as random walks at 0.01
  resolution, a cycle counter, a mostly constant state; %d series per device): %s of the samples
  change value.
- **Plant mix, sent as a backlog**: the first dataset, but each device sends its whole day as
  fast as it can, on its own, as devices draining their spools after an outage do. The devices
  drift hours apart, and the samples of those behind the newest arrive out of order (the
  store's out-of-order head, 7-day window): what a day of data costs when it comes late.

Millwright: the batches (SenML CBOR + zstd, 100 measurements) go through its ingest pipeline
into its TSDB in this process; then the head is cut into a block
(`+"`db.CompactHead(tsdb.NewRangeHead(head, mint, maxt))`"+`, as the server's own compaction does
once the head spans 3 h), the out-of-order head (the backlog's samples behind the head's window)
is cut into blocks too (`+"`db.CompactOOOHead`"+`), and `+"`db.Compact`"+` merges blocks as it would over time. Size: every
file of every block (chunks, index, meta). VictoriaMetrics: the same samples over its import
API, then `+"`/internal/force_flush`"+` and `+"`/internal/force_merge`"+` for each monthly
partition, waiting until the data directory stops changing; size: every file under
`+"`-storageDataPath`"+` (data and indexdb).

`, devices, durationWords(step), durationWords(span), start.UTC().Format("2006-01-02 15:04"), start.Add(span).UTC().Format("2006-01-02 15:04"), plant.vmVersion,
		len(plantSignals), num(float64(devices*len(plantSignals)), 0), durationWords(step), pct(ticks.data.irregularShare()), pct(ticks.data.changedShare()),
		pct(plant.data.irregularShare()), len(metricNames), pct(walk.data.changedShare()))
	t := newTable("data", "store", ">samples", ">samples that changed", ">bytes on disk", ">bytes per sample", ">of which index", ">ratio to VictoriaMetrics")
	for i, r := range res {
		mw := float64(r.bytes) / float64(r.samples)
		vm := float64(r.vmBytes) / float64(r.vmSamples)
		name := storageDatasets[i].name
		if i == 0 {
			name = "**" + name + "** (target)"
		}
		t.add(name, fmt.Sprintf("Millwright (Prometheus TSDB, %d blocks)", r.blocks), num(float64(r.samples), 0), pct(r.data.changedShare()),
			num(float64(r.bytes), 0), num(mw, 2), fmt.Sprintf("%s B/sample", num(float64(r.index)/float64(r.samples), 2)), ratio(mw, vm))
		t.add(name, "VictoriaMetrics", num(float64(r.vmSamples), 0), pct(r.data.changedShare()),
			num(float64(r.vmBytes), 0), num(vm, 2), fmt.Sprintf("%s B/sample (indexdb)", num(float64(r.vmIndex)/float64(r.vmSamples), 2)), "1.00×")
	}
	b.WriteString(t.String())

	fmt.Fprintf(&b, "\nThe plant mix: the signals of each device, sampled together every %s; the last column is measured on this run's data (all devices).\n\n", durationWords(step))
	pt := newTable("signal", "SenML unit", "behaviour", ">samples that changed")
	for _, s := range plantSignals {
		unit := s.unit
		if unit == "" {
			unit = "—"
		}
		pt.add("`"+s.name+"`", unit, s.describe(), pct(plant.data.changedShare(s.name)))
	}
	b.WriteString(pt.String())

	per := func(r storageResult) float64 { return float64(r.bytes) / float64(r.samples) }
	perVM := func(r storageResult) float64 { return float64(r.vmBytes) / float64(r.vmSamples) }
	fmt.Fprintf(&b, `
What the numbers say:

- **What a sample costs in the TSDB.** Its chunks (XOR encoding, Prometheus
  `+"`tsdb/chunkenc/xor.go`"+`) write 1 bit for a value equal to the one before and 1 bit for a
  time at the same interval as the one before. A changed value costs the bits between the first
  and the last in which it differs from the one before: %d for a 0.1 step of a temperature
  (62.3 → 62.4, decimal fractions have no short binary form), %d for 0.01 A of a current
  (28.51 → 28.47), %d for 1 Pa (101,325 → 101,326, an integer), plus control bits. A time whose
  interval differs from the one before by even 1 ms costs 16 bits (%s of the intervals of the
  plant mix with read times did: 15 bits more each would be %s B per sample). So the bytes per
  sample rise with the **share of samples that change** (%s in the plant mix: %s B per sample; %s in the
  random walks: %s B), with a **finer resolution** (the same process read at 0.01 instead of 0.1
  changes in more samples, and its noise shows) and with **timestamp jitter**: the plant mix
  takes %s B per sample with read times 0–2 ms late and %s B with times on the schedule, so
  the scheduling delay would cost %s B per sample. On the schedule the chunks hold %s B per
  sample, %s B per sample that changed (all chunk bytes over the changed samples).
- **What a chunk costs.** Every chunk adds its header, its first sample written in full and an
  entry in its block's index, so most of a held signal's cost is per chunk. The store cuts
  chunks at %d samples in order and %d out of order (Prometheus: 120 and 32; the reasons and
  the memory they cost are in `+"`internal/tsdb/store.go`"+`): the live rows' chunks hold %s
  samples each on average, the backlog's %s, and the backlog costs %s B per sample against %s B
  for the same samples live.
- VictoriaMetrics stores the same samples in %s B (plant mix, read times), %s B (on the
  schedule) and %s B (random walks): %s, %s and %s of Millwright's figure.
- Target ≤ 2 B per stored sample after compaction on realistic sensor data (the plant mix as
  the agent stamps it, on its schedule): %s (%s B; %s B with read times; worst case, random
  walks: %s B).
`, xorBits(62.3, 62.4), xorBits(28.51, 28.47), xorBits(101325, 101326),
		pct(plant.data.irregularShare()), num(plant.data.irregularShare()*15/8, 2),
		pct(ticks.data.changedShare()), num(per(ticks), 2), pct(walk.data.changedShare()), num(per(walk), 2),
		num(per(plant), 2), num(per(ticks), 2), num(per(plant)-per(ticks), 2),
		num(float64(ticks.chunks)/float64(ticks.samples), 2), num(float64(ticks.chunks)/(float64(ticks.samples)*ticks.data.changedShare()), 1),
		tsdb.SamplesPerChunk, tsdb.OutOfOrderChunkSamples, num(float64(ticks.samples)/float64(ticks.numChunks), 0),
		num(float64(backlog.samples)/float64(backlog.numChunks), 0), num(per(backlog), 2), num(per(ticks), 2),
		num(perVM(plant), 2), num(perVM(ticks), 2), num(perVM(walk), 2),
		ratio(perVM(plant), per(plant)), ratio(perVM(ticks), per(ticks)), ratio(perVM(walk), per(walk)),
		verdict(per(ticks) <= 2), num(per(ticks), 2), num(per(plant), 2), num(per(walk), 2))
	return b.String()
}

// xorBits is how many bits lie between the first and the last in which two float64 values
// differ: what the TSDB's XOR encoding writes for a changed value, besides its control bits.
func xorBits(a, b float64) int {
	x := math.Float64bits(a) ^ math.Float64bits(b)
	if x == 0 {
		return 0
	}
	return 64 - bits.LeadingZeros64(x) - bits.TrailingZeros64(x)
}
