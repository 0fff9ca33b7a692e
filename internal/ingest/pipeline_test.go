package ingest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/protocol"
)

// faultyStore is the real store, failing on demand.
type faultyStore struct {
	*tsdb.Store
	mu                           sync.Mutex
	failCommit, failSync, reopen error
	reopens                      int
}

func (s *faultyStore) set(f func(*faultyStore)) { s.mu.Lock(); f(s); s.mu.Unlock() }

func (s *faultyStore) Appender(ctx context.Context) (storage.Appender, error) {
	app, err := s.Store.Appender(ctx)
	if err != nil {
		return nil, err
	}
	return &faultyAppender{Appender: app, s: s}, nil
}

func (s *faultyStore) Sync() error {
	s.mu.Lock()
	err := s.failSync
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Sync()
}

func (s *faultyStore) Reopen() error {
	s.mu.Lock()
	s.reopens++
	err := s.reopen
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.Store.Reopen()
}

func (s *faultyStore) reopenCount() int { s.mu.Lock(); defer s.mu.Unlock(); return s.reopens }

type faultyAppender struct {
	storage.Appender
	s *faultyStore
}

func (a *faultyAppender) Commit() error {
	a.s.mu.Lock()
	err := a.s.failCommit
	a.s.mu.Unlock()
	if err != nil {
		return errors.Join(err, a.Appender.Rollback())
	}
	return a.Appender.Commit()
}

// faultyEvents is the real event log, failing its flushes on demand.
type faultyEvents struct {
	*eventlog.Log
	mu        sync.Mutex
	failFlush error
	repairs   int
}

func (e *faultyEvents) Flush(sync bool) error {
	e.mu.Lock()
	err := e.failFlush
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return e.Log.Flush(sync)
}

func (e *faultyEvents) Repair() error {
	e.mu.Lock()
	e.repairs++
	e.mu.Unlock()
	return e.Log.Repair()
}

func (e *faultyEvents) repairCount() int { e.mu.Lock(); defer e.mu.Unlock(); return e.repairs }

type rig struct {
	p      *Pipeline
	store  *faultyStore
	events *faultyEvents
	clk    *clock.Fake
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	st, err := tsdb.Open(filepath.Join(dir, "tsdb"), tsdb.Options{}, nil, reg)
	require.NoError(t, err)
	ev, err := eventlog.Open(filepath.Join(dir, "events"))
	require.NoError(t, err)
	r := &rig{store: &faultyStore{Store: st}, events: &faultyEvents{Log: ev}, clk: clock.NewFake(time.Now()), reg: reg}
	r.p = New(r.store, r.events, r.clk, opts, nil, reg)
	t.Cleanup(func() {
		r.stop()
		require.NoError(t, errors.Join(st.Close(), ev.Close()))
	})
	return r
}

func (r *rig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go func() { _ = r.p.Run(ctx); close(r.done) }()
}

func (r *rig) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// batch is a JSON SenML batch from now on the rig's clock: a value x = v and a string note.
func (r *rig) batch(v float64, seq uint64) []byte {
	t := float64(r.clk.Now().UnixMilli())/1000 + v/1000
	return fmt.Appendf(nil, `[{"n":"x","v":%g,"t":%f,"mw_seq":%d},{"n":"note","vs":"n%g","t":%f}]`, v, t, seq, v, t)
}

func (r *rig) stored(t *testing.T, name string) map[float64]bool {
	t.Helper()
	q, err := r.store.Querier(0, r.clk.Now().Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, name))
	out := map[float64]bool{}
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() != 0 {
			_, v := it.At()
			out[v] = true
		}
	}
	require.NoError(t, set.Err())
	return out
}

func (r *rig) notes(t *testing.T) []string {
	t.Helper()
	evs, err := r.events.List(eventlog.Query{Name: "note"})
	require.NoError(t, err)
	var out []string
	for _, e := range evs {
		out = append(out, *e.String)
	}
	return out
}

// TestWriteErrorRefusesUntilRepaired is the path that keeps "nothing acknowledged is lost"
// true on a full disk: after a failed commit, fsync or event-log write, every batch is refused
// as unavailable — those queued and those arriving — until the part that failed is repaired
// (the TSDB reopened, the event log truncated to its last whole line), on the clock; then
// batches are acknowledged again.
func TestWriteErrorRefusesUntilRepaired(t *testing.T) {
	diskFull := errors.New("no space left on device")
	cases := []struct {
		name          string
		fail, heal    func(*rig)
		reopens       int // store reopens the repair makes
		eventsRepairs int
	}{
		{"append commit", func(r *rig) { r.store.set(func(s *faultyStore) { s.failCommit = diskFull }) },
			func(r *rig) { r.store.set(func(s *faultyStore) { s.failCommit = nil }) }, 1, 0},
		{"fsync", func(r *rig) { r.store.set(func(s *faultyStore) { s.failSync = diskFull }) },
			func(r *rig) { r.store.set(func(s *faultyStore) { s.failSync = nil }) }, 1, 0},
		{"event log", func(r *rig) { r.events.mu.Lock(); r.events.failFlush = diskFull; r.events.mu.Unlock() },
			func(r *rig) { r.events.mu.Lock(); r.events.failFlush = nil; r.events.mu.Unlock() }, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Options{})
			r.start()
			ctx := context.Background()
			require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", r.batch(1, 1)).Reason)

			tc.fail(r)
			res := r.p.Ingest(ctx, "d1", r.batch(2, 2))
			require.Equal(t, protocol.ReasonUnavailable, res.Reason, res.Detail)
			tc.heal(r)
			// Healed, but not yet repaired: still refused, without touching storage.
			res = r.p.Ingest(ctx, "d1", r.batch(3, 3))
			require.Equal(t, protocol.ReasonUnavailable, res.Reason)
			require.Contains(t, res.Detail, "repaired")
			require.Equal(t, 0.0, testutil.ToFloat64(r.p.healthy))
			require.Zero(t, r.store.reopenCount()+r.events.repairCount(), "repair waits for its timer")

			r.clk.Advance(repairFirstDelay)
			require.Eventually(t, func() bool { return r.p.failing.Load() == nil }, 10*time.Second, time.Millisecond)
			require.Equal(t, tc.reopens, r.store.reopenCount())
			require.Equal(t, tc.eventsRepairs, r.events.repairCount())
			require.Equal(t, 1.0, testutil.ToFloat64(r.p.healthy))

			res = r.p.Ingest(ctx, "d1", r.batch(4, 4))
			require.Equal(t, protocol.ReasonNone, res.Reason, res.Detail)
			got := r.stored(t, "x")
			require.True(t, got[1] && got[4], "acknowledged values stored: %v", got)
			require.False(t, got[3], "a refused batch was not stored")
			require.Contains(t, r.notes(t), "n4")
			require.NotContains(t, r.notes(t), "n3")
			require.Equal(t, 1.0, testutil.ToFloat64(r.p.m.storageFaults))
		})
	}
}

// TestRepairRetriesWithBackoff keeps refusing while the repair itself fails (the disk is
// still full), retrying after 1 s, 2 s, 4 s … on the clock.
func TestRepairRetriesWithBackoff(t *testing.T) {
	r := newRig(t, Options{})
	r.start()
	ctx := context.Background()
	r.store.set(func(s *faultyStore) { s.failCommit = errors.New("disk full"); s.reopen = errors.New("still full") })
	require.Equal(t, protocol.ReasonUnavailable, r.p.Ingest(ctx, "d1", r.batch(1, 1)).Reason)
	r.store.set(func(s *faultyStore) { s.failCommit = nil })

	waitAttempts := func(n int) {
		t.Helper()
		require.Eventually(t, func() bool { return r.store.reopenCount() == n && r.clk.Pending() == 1 }, 10*time.Second, time.Millisecond)
	}
	r.clk.Advance(time.Second)
	waitAttempts(1)
	r.clk.Advance(time.Second) // the second attempt is due 2 s after the first
	require.Never(t, func() bool { return r.store.reopenCount() > 1 }, 50*time.Millisecond, time.Millisecond)
	r.clk.Advance(time.Second)
	waitAttempts(2)
	require.Equal(t, protocol.ReasonUnavailable, r.p.Ingest(ctx, "d1", r.batch(2, 2)).Reason)

	r.store.set(func(s *faultyStore) { s.reopen = nil })
	r.clk.Advance(4 * time.Second)
	require.Eventually(t, func() bool { return r.p.failing.Load() == nil }, 10*time.Second, time.Millisecond)
	require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", r.batch(3, 3)).Reason)
	require.Equal(t, 2.0, testutil.ToFloat64(r.p.m.storageRepairs.WithLabelValues("failed")))
	require.Equal(t, 1.0, testutil.ToFloat64(r.p.m.storageRepairs.WithLabelValues("repaired")))
}

// TestBusyLimits refuses batches beyond the pending bounds at once, and stores the ones
// already queued once the committer runs.
func TestBusyLimits(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		fits int // batches of 2 values that queue before the next is refused
	}{
		{"batches", Options{MaxPendingBatches: 3}, 3},
		{"values", Options{MaxPendingSamples: 5}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.opts)
			ctx := context.Background()
			results := make(chan Result, tc.fits)
			for i := range tc.fits {
				go func() { results <- r.p.Ingest(ctx, "d1", r.batch(float64(i+1), uint64(i+1))) }()
			}
			require.Eventually(t, func() bool { return len(r.p.queue) == tc.fits }, 10*time.Second, time.Millisecond)
			res := r.p.Ingest(ctx, "d2", r.batch(100, 1))
			require.Equal(t, protocol.ReasonBusy, res.Reason, res.Detail)
			r.start()
			for range tc.fits {
				require.Equal(t, protocol.ReasonNone, (<-results).Reason)
			}
			require.Len(t, r.stored(t, "x"), tc.fits)
		})
	}
}

// TestShutdownDrains stores what was queued when the pipeline stops, and refuses what comes
// after.
func TestShutdownDrains(t *testing.T) {
	r := newRig(t, Options{})
	ctx := context.Background()
	results := make(chan Result, 5)
	for i := range 5 {
		go func() { results <- r.p.Ingest(ctx, "d1", r.batch(float64(i+1), uint64(i+1))) }()
	}
	require.Eventually(t, func() bool { return len(r.p.queue) == 5 }, 10*time.Second, time.Millisecond)
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, r.p.Run(stopped))
	for range 5 {
		require.Equal(t, protocol.ReasonNone, (<-results).Reason)
	}
	require.Len(t, r.stored(t, "x"), 5)
	res := r.p.Ingest(ctx, "d1", r.batch(6, 6))
	require.Equal(t, protocol.ReasonUnavailable, res.Reason)
	require.Contains(t, res.Detail, ErrStopped.Error())
}

// TestSequenceAccounting counts gaps, late arrivals and repeats of a device's batch numbers,
// and carries the highest number across a reopen of the store.
func TestSequenceAccounting(t *testing.T) {
	r := newRig(t, Options{})
	r.start()
	ctx := context.Background()
	for i, seq := range []uint64{1, 2, 5, 4, 4, 2} {
		require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", r.batch(float64(i+1), seq)).Reason)
		r.clk.Advance(time.Millisecond)
	}
	last := func(name string) float64 {
		got := r.stored(t, name)
		m := 0.0
		for v := range got {
			m = max(m, v)
		}
		return m
	}
	require.Equal(t, 5.0, last(SeriesBatchSeq))
	require.Equal(t, 2.0, last(SeriesSeqGaps), "3 and 4 missing when 5 came")
	require.Equal(t, 1.0, last(SeriesSeqLate), "4 filled in")
	require.Equal(t, 2.0, last(SeriesSeqRepeats), "4 and 2 again")

	// A new pipeline (a restart) reads the highest number back: 7 after 5 is one gap.
	r.stop()
	r.p = New(r.store, r.events, r.clk, Options{}, nil, prometheus.NewRegistry())
	r.start()
	require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", r.batch(10, 7)).Reason)
	require.Equal(t, 7.0, last(SeriesBatchSeq))
	require.Equal(t, 1.0, testutil.ToFloat64(r.p.m.seqGaps))
}

// TestDeviceValueLimits refuses, with a reason a device can act on, names, units and values
// over their limits and names reserved for the server's own series.
func TestDeviceValueLimits(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	cases := []struct {
		name, record string
		want         protocol.Reason
		detail       string
	}{
		{"name at the limit", `{"n":"` + long(256) + `","v":1}`, protocol.ReasonNone, ""},
		{"name over the limit", `{"n":"` + long(257) + `","v":1}`, protocol.ReasonInvalid, "name is 257 bytes, the limit is 256"},
		{"100 KB name", `{"n":"` + long(100_000) + `","v":1}`, protocol.ReasonInvalid, "name is 100000 bytes"},
		{"base name makes it long", `{"bn":"` + long(200) + `","n":"` + long(57) + `","v":1}`, protocol.ReasonInvalid, "name is 257 bytes"},
		{"unit over the limit", `{"n":"x","u":"` + long(33) + `","v":1}`, protocol.ReasonInvalid, "unit is 33 bytes, the limit is 32"},
		{"string at the limit", `{"n":"s","vs":"` + long(4096) + `"}`, protocol.ReasonNone, ""},
		{"string over the limit", `{"n":"s","vs":"` + long(4097) + `"}`, protocol.ReasonInvalid, "string value is 4097 bytes, the limit is 4096"},
		{"data over the limit", `{"n":"s","vd":"` + base64.RawURLEncoding.EncodeToString(make([]byte, 4097)) + `"}`, protocol.ReasonInvalid, "data value is 4097 bytes"},
		{"reserved name", `{"n":"millwright_device_batch_seq","v":1.8e19}`, protocol.ReasonInvalid, `names beginning "millwright_" are reserved`},
		{"reserved after mapping", `{"n":"millwright-device_batch_seq_gaps_total","v":0}`, protocol.ReasonInvalid, "reserved"},
		{"reserved by base name", `{"bn":"millwright.","n":"x","v":0}`, protocol.ReasonInvalid, "reserved"},
		{"not reserved: another word", `{"n":"millwrights_count","v":1}`, protocol.ReasonNone, ""},
		{"not reserved: case", `{"n":"Millwright_x","v":1}`, protocol.ReasonNone, ""},
	}
	r := newRig(t, Options{})
	r.start()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := r.p.Ingest(context.Background(), "d1", []byte("["+tc.record+"]"))
			require.Equal(t, tc.want, res.Reason, res.Detail)
			require.Contains(t, res.Detail, tc.detail)
		})
	}
	require.NotContains(t, r.stored(t, SeriesBatchSeq), 1.8e19)
}

// TestDeviceSeriesLimit stores the values of a device's first MaxSeriesPerDevice series and
// refuses (series_limit, counted for the device) values of further ones, while values of its
// known series and other devices' series are stored.
func TestDeviceSeriesLimit(t *testing.T) {
	r := newRig(t, Options{MaxSeriesPerDevice: 3})
	r.start()
	ctx := context.Background()
	res := r.p.Ingest(ctx, "d1", []byte(`[{"n":"a","v":1},{"n":"b","v":1},{"n":"c","v":1},{"n":"d","v":1},{"n":"e","v":1}]`))
	require.Equal(t, protocol.ReasonSeriesLimit, res.Reason, res.Detail)
	require.Equal(t, 3, res.Stored)
	require.Equal(t, 2, res.Refused)
	require.Contains(t, res.Detail, "the device has 3 series, the limit")
	r.clk.Advance(time.Second)

	res = r.p.Ingest(ctx, "d1", []byte(`[{"n":"a","v":2},{"n":"c","v":2}]`))
	require.Equal(t, protocol.ReasonNone, res.Reason, res.Detail)
	res = r.p.Ingest(ctx, "d2", []byte(`[{"n":"d","v":1},{"n":"e","v":1}]`))
	require.Equal(t, protocol.ReasonNone, res.Reason, res.Detail)
	res = r.p.Ingest(ctx, "d1", []byte(`[{"n":"f","v":1}]`))
	require.Equal(t, protocol.ReasonSeriesLimit, res.Reason)

	require.True(t, r.stored(t, SeriesRefused)[3], "three values refused for d1")
	require.Equal(t, 3.0, testutil.ToFloat64(r.p.m.refusedSamples.WithLabelValues("series_limit")))
	q, err := r.store.Querier(0, r.clk.Now().Add(time.Hour).UnixMilli())
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(ctx, false, nil, labels.MustNewMatcher(labels.MatchEqual, "device", "d1"),
		labels.MustNewMatcher(labels.MatchNotEqual, labels.MetricName, SeriesRefused))
	n := 0
	for set.Next() {
		n++
	}
	require.Equal(t, 3, n, "d1 has exactly its 3 series")
}

// TestDeviceEventQuota refuses string and data values beyond the device's hourly event-log
// budget (event_quota, counted), stores its numbers meanwhile, and lets it write events again
// in the next hour.
func TestDeviceEventQuota(t *testing.T) {
	r := newRig(t, Options{MaxEventBytesPerHour: 100})
	r.start()
	ctx := context.Background()
	msg := func(v int) []byte {
		r.clk.Advance(time.Millisecond)
		return fmt.Appendf(nil, `[{"n":"log","vs":"%s"},{"n":"x","v":%d}]`, strings.Repeat("m", 40), v)
	}
	require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", msg(1)).Reason) // 43 bytes
	require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", msg(2)).Reason) // 86 bytes
	res := r.p.Ingest(ctx, "d1", msg(3))
	require.Equal(t, protocol.ReasonEventQuota, res.Reason, res.Detail)
	require.Equal(t, 1, res.Stored, "the number is stored")
	require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d2", msg(4)).Reason, "other devices have their own budget")
	r.clk.Advance(time.Hour)
	require.Equal(t, protocol.ReasonNone, r.p.Ingest(ctx, "d1", msg(5)).Reason)
	require.Equal(t, map[float64]bool{1: true, 2: true, 3: true, 4: true, 5: true}, r.stored(t, "x"))
	evs, err := r.events.List(eventlog.Query{Device: "d1"})
	require.NoError(t, err)
	require.Len(t, evs, 3)
	require.Equal(t, map[float64]bool{1: true}, r.stored(t, SeriesRefused))
}

// TestDeviceLimitsBoundMemory: once a device has its 100,000 series, its 100,001st and every
// later new series, 100 KB names and oversized strings are refused with reasons and counted,
// and the server's heap does not grow with them.
func TestDeviceLimitsBoundMemory(t *testing.T) {
	const limit = 100_000
	r := newRig(t, Options{MaxSeriesPerDevice: limit})
	r.start()
	ctx := context.Background()
	next := 0
	batchOfNew := func() []byte {
		var b strings.Builder
		b.WriteByte('[')
		for i := range 1000 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"n":"m%d","v":1}`, next)
			next++
		}
		b.WriteByte(']')
		return []byte(b.String())
	}
	for range limit / 1000 {
		res := r.p.Ingest(ctx, "d1", batchOfNew())
		require.Equal(t, protocol.ReasonNone, res.Reason, res.Detail)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	refused := 0
	for range 100 {
		res := r.p.Ingest(ctx, "d1", batchOfNew())
		require.Equal(t, protocol.ReasonSeriesLimit, res.Reason, res.Detail)
		refused += res.Refused
	}
	bigName := []byte(`[{"n":"` + strings.Repeat("n", 100_000) + `","v":1}]`)
	bigString := []byte(`[{"n":"s","vs":"` + strings.Repeat("s", 100_000) + `"}]`)
	for range 100 {
		require.Equal(t, protocol.ReasonInvalid, r.p.Ingest(ctx, "d1", bigName).Reason)
		require.Equal(t, protocol.ReasonInvalid, r.p.Ingest(ctx, "d1", bigString).Reason)
	}
	after := heap()
	growth := int64(after) - int64(before)
	t.Logf("heap with %d series of one device: %.1f MiB; after %d refused new series, 100 names of 100 KB and 100 strings of 100 KB: %.1f MiB (%+.2f MiB)",
		limit, float64(before)/(1<<20), refused, float64(after)/(1<<20), float64(growth)/(1<<20))
	require.Equal(t, 100_000, refused)
	require.Less(t, growth, int64(8<<20), "refused input must not grow the heap")
	require.Equal(t, 100_000.0, testutil.ToFloat64(r.p.m.refusedSamples.WithLabelValues("series_limit")))
	require.Equal(t, 200.0, testutil.ToFloat64(r.p.m.rejectedBatches.WithLabelValues("invalid")))
}
