// Package tsdb is Millwright's telemetry store: an embedded Prometheus TSDB (Gorilla-compressed
// chunks, write-ahead log, retention, a wide out-of-order window for data that waited in a
// device's spool) and the PromQL engine that answers queries over it.
//
// The store adds one thing the Prometheus TSDB does not do by itself: a durability policy.
// Appender.Commit writes the WAL page with write(2) but does not fsync it, so committed samples
// survive a crash of the process but not a power cut. With SyncAlways the store fsyncs the
// current WAL and out-of-order WAL segment after every commit (Sync), which is what lets the
// ingest pipeline acknowledge a batch only once it would survive a power cut.
package tsdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	ptsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/tsdb/wlog"

	"github.com/millwright/millwright/internal/logx"
)

// SyncPolicy says what a commit waits for before an acknowledgement is sent.
type SyncPolicy string

const (
	// SyncAlways fsyncs the write-ahead log after every group commit: an acknowledged batch
	// survives a power cut. The default.
	SyncAlways SyncPolicy = "always"
	// SyncNever leaves flushing to the operating system (and to the TSDB, which fsyncs a WAL
	// segment when it is full): an acknowledged batch survives a crash of the process, but a
	// power cut or kernel crash can lose what was acknowledged in the last seconds.
	SyncNever SyncPolicy = "never"
)

// ParseSyncPolicy validates a policy name.
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch p := SyncPolicy(s); p {
	case SyncAlways, SyncNever:
		return p, nil
	}
	return "", fmt.Errorf("unknown fsync policy %q (want %q or %q)", s, SyncAlways, SyncNever)
}

// Options configure the store.
type Options struct {
	// Retention is how long samples are kept. Default 90 days; zero means the default.
	Retention time.Duration `yaml:"retention"`
	// OutOfOrderWindow is how far behind the newest sample a sample may be and still be
	// accepted, so data that waited in a device's spool is stored. Default 7 days; zero means
	// the default.
	OutOfOrderWindow time.Duration `yaml:"out_of_order_window"`
	// Sync is the durability policy; empty means SyncAlways.
	Sync SyncPolicy `yaml:"fsync"`
	// QueryTimeout bounds one PromQL query. Default 2 minutes.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// QueryMaxSamples bounds the samples one query may load. Default 50,000,000.
	QueryMaxSamples int `yaml:"query_max_samples"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Retention:        90 * 24 * time.Hour,
		OutOfOrderWindow: 7 * 24 * time.Hour,
		Sync:             SyncAlways,
		QueryTimeout:     2 * time.Minute,
		QueryMaxSamples:  50_000_000,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Retention <= 0 {
		o.Retention = d.Retention
	}
	if o.OutOfOrderWindow <= 0 {
		o.OutOfOrderWindow = d.OutOfOrderWindow
	}
	if o.Sync == "" {
		o.Sync = d.Sync
	}
	if o.QueryTimeout <= 0 {
		o.QueryTimeout = d.QueryTimeout
	}
	if o.QueryMaxSamples <= 0 {
		o.QueryMaxSamples = d.QueryMaxSamples
	}
	return o
}

// Chunk sizes. Every chunk costs its header, its first sample written in full and, in each
// block's index, an entry; the longer the chunk, the less of that per sample. Prometheus cuts
// in-order chunks at 120 samples, sized for a 15 s scrape of mostly changing values; a
// device's readings mostly hold their value, so a sample costs 1–2 bits and the per-chunk cost
// is most of the bill. Measured on the benchmark suite's plant mix (16 signals every 10 s,
// docs/benchmarks.md): 240 samples per chunk take live data from 1.98 to 1.88 B per stored
// sample, for a head chunk per series of up to 240 compressed samples (about 0.5 KiB of device
// data) instead of 120.
//
// Out-of-order chunks (a backlog drained after an outage) stay at Prometheus' 32 samples. The
// out-of-order head keeps each series' open chunk uncompressed, 40 B a sample, and after a
// plant-wide outage every series of every device may have one open at once: 32 samples are
// 1.25 KiB per series, where 128 (which took a backlog's day from 2.67 to 2.02 B per sample)
// would be 5 KiB, 1.5 GB for 19,000 devices of 16 signals, at the moment the server can least
// afford it.
const (
	SamplesPerChunk        = 240
	OutOfOrderChunkSamples = 32
)

// ErrDiskFull is returned by Reopen while the disk has less than ReopenMinFree bytes free.
var ErrDiskFull = errors.New("disk still full")

// ReopenMinFree is the free space Reopen waits for. Closing the TSDB writes the chunks its head
// holds in memory; a few MiB is more than one close needs.
const ReopenMinFree = 4 << 20

// freeBytes is the space available to an unprivileged writer on dir's filesystem.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// ErrUnavailable is returned while the store is being reopened after a write error.
var ErrUnavailable = errors.New("telemetry store unavailable: reopening after a write error")

// Store is the embedded TSDB with its PromQL engine.
//
// The TSDB underneath can be closed and opened again in place (Reopen) while queries and the
// API keep their references to the Store: after a write error the write-ahead log may end in a
// torn record, and only a fresh open repairs it — before anything new is acknowledged.
type Store struct {
	dir    string
	opts   Options
	log    *slog.Logger
	reg    *collectorSet
	engine *promql.Engine

	mu     sync.Mutex  // guards gen and closed
	gen    *generation // nil while reopening, and once closed
	closed bool
}

// generation is one open TSDB and the syncers of its logs. Readers count the queriers open on
// it, so that Reopen closes it only once none is reading.
type generation struct {
	db      *ptsdb.DB
	readers sync.WaitGroup

	mu  sync.Mutex // guards wal and wbl
	wal *segmentSyncer
	wbl *segmentSyncer
}

// Open opens (or creates) the store in dir.
func Open(dir string, opts Options, logger *slog.Logger, reg prometheus.Registerer) (*Store, error) {
	opts = opts.withDefaults()
	if _, err := ParseSyncPolicy(string(opts.Sync)); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{dir: dir, opts: opts, log: logger}
	if reg != nil {
		s.reg = &collectorSet{parent: reg}
	}
	s.engine = promql.NewEngine(promql.EngineOpts{
		Logger:               logger.With("component", "promql"),
		Reg:                  reg,
		MaxSamples:           opts.QueryMaxSamples,
		Timeout:              opts.QueryTimeout,
		LookbackDelta:        5 * time.Minute,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
	})
	g, err := s.open()
	if err != nil {
		return nil, err
	}
	s.gen = g
	return s, nil
}

func (s *Store) open() (*generation, error) {
	topts := ptsdb.DefaultOptions()
	topts.RetentionDuration = s.opts.Retention.Milliseconds()
	topts.OutOfOrderTimeWindow = s.opts.OutOfOrderWindow.Milliseconds()
	// Blocks of up to a tenth of the retention, as Prometheus does, but never less than the
	// minimum block.
	if maxBlock := s.opts.Retention.Milliseconds() / 10; maxBlock > topts.MinBlockDuration {
		topts.MaxBlockDuration = min(maxBlock, 31*24*time.Hour.Milliseconds())
	}
	topts.SamplesPerChunk = SamplesPerChunk
	topts.OutOfOrderCapMax = OutOfOrderChunkSamples
	var reg prometheus.Registerer
	if s.reg != nil {
		reg = s.reg
	}
	db, err := ptsdb.Open(s.dir, logx.Library(s.log.With("component", "tsdb")), reg, topts, nil)
	if err != nil {
		if s.reg != nil {
			s.reg.unregisterAll()
		}
		return nil, fmt.Errorf("open tsdb %s: %w", s.dir, err)
	}
	g := &generation{db: db}
	if s.opts.Sync == SyncAlways {
		g.wal, err = newSegmentSyncer(filepath.Join(s.dir, "wal"))
		if err == nil {
			g.wbl, err = newSegmentSyncer(filepath.Join(s.dir, "wbl"))
		}
		if err != nil {
			return nil, errors.Join(err, g.close())
		}
	}
	return g, nil
}

// Reopen closes the TSDB and opens it again, which replays the write-ahead logs and repairs a
// torn record at their end. Queries started before wait to finish; new ones get ErrUnavailable
// until the open succeeds. When it fails (the disk is still full, say), the store stays
// unavailable and Reopen may be called again.
func (s *Store) Reopen() error {
	// Closing writes the head's full chunks to disk, and the TSDB panics when such a write
	// fails; so wait for some space before closing.
	if free, err := freeBytes(s.dir); err == nil && free < ReopenMinFree {
		return fmt.Errorf("%w: %d bytes free in %s, want %d", ErrDiskFull, free, s.dir, ReopenMinFree)
	}
	s.mu.Lock()
	g := s.gen
	s.gen = nil
	s.mu.Unlock()
	var err error
	if g != nil {
		g.readers.Wait()
		if err = g.closeRecovering(); err != nil {
			// A close after a write error may fail to flush what the failed write left; the
			// open below repairs the log either way.
			s.log.Warn("close tsdb before reopening", "error", err)
		}
		if s.reg != nil {
			s.reg.unregisterAll()
		}
	}
	g, err = s.open()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.gen = g
	s.mu.Unlock()
	return nil
}

// closeRecovering closes g, turning a panic of the TSDB's close (a chunk it could not write)
// into an error: the open that follows replays the write-ahead log either way.
func (g *generation) closeRecovering() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("close tsdb: %v", r)
		}
	}()
	return g.close()
}

func (g *generation) close() error {
	g.mu.Lock()
	err := errors.Join(g.wal.close(), g.wbl.close())
	g.mu.Unlock()
	return errors.Join(err, g.db.Close())
}

func (s *Store) current() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Options returns the effective options.
func (s *Store) Options() Options { return s.opts }

// DB returns the underlying Prometheus TSDB, or nil while the store is reopening. A caller
// must not keep it across a Reopen.
func (s *Store) DB() *ptsdb.DB {
	if g := s.current(); g != nil {
		return g.db
	}
	return nil
}

// Queryable is the store as a storage.Queryable; it stays valid across Reopen.
func (s *Store) Queryable() storage.Queryable { return s }

// Querier implements storage.Queryable over the current TSDB. The TSDB is not closed while
// the querier is open.
func (s *Store) Querier(mint, maxt int64) (storage.Querier, error) {
	s.mu.Lock()
	g := s.gen
	if g == nil {
		s.mu.Unlock()
		return nil, ErrUnavailable
	}
	g.readers.Add(1)
	s.mu.Unlock()
	q, err := g.db.Querier(mint, maxt)
	if err != nil {
		g.readers.Done()
		return nil, err
	}
	return &releasingQuerier{Querier: q, release: g.readers.Done}, nil
}

// releasingQuerier tells its generation when it is closed.
type releasingQuerier struct {
	storage.Querier
	release func()
	once    sync.Once
}

func (q *releasingQuerier) Close() error {
	err := q.Querier.Close()
	q.once.Do(q.release)
	return err
}

// Snapshot writes a consistent copy of the store into dir, which must be on the same file
// system as the store: every persisted block (hard links) and the head as a block of its own
// (Prometheus's TSDB snapshot, withHead). Prometheus's snapshot leaves out the out-of-order
// head (samples that arrived late, within OutOfOrderWindow), so that head is compacted into
// blocks first. Opening dir as a store's directory gives the answers the store gave when the
// snapshot began. It returns ErrUnavailable while the store reopens.
func (s *Store) Snapshot(ctx context.Context, dir string) error {
	s.mu.Lock()
	g := s.gen
	if g == nil {
		s.mu.Unlock()
		return ErrUnavailable
	}
	g.readers.Add(1)
	s.mu.Unlock()
	defer g.readers.Done()
	if err := g.db.CompactOOOHead(ctx); err != nil {
		return fmt.Errorf("snapshot tsdb: compact out-of-order samples: %w", err)
	}
	if err := g.db.Snapshot(dir, true); err != nil {
		return fmt.Errorf("snapshot tsdb: %w", err)
	}
	return nil
}

// Engine returns the PromQL engine.
func (s *Store) Engine() *promql.Engine { return s.engine }

// Appender starts an append transaction, or returns ErrUnavailable while the store reopens.
func (s *Store) Appender(ctx context.Context) (storage.Appender, error) {
	g := s.current()
	if g == nil {
		return nil, ErrUnavailable
	}
	return g.db.Appender(ctx), nil
}

// Sync makes everything committed so far durable according to the policy: with SyncAlways
// it fsyncs the current segments of the WAL and of the out-of-order WAL; with SyncNever it
// does nothing. Call it after Commit and before acknowledging.
func (s *Store) Sync() error {
	if s.opts.Sync != SyncAlways {
		return nil
	}
	g := s.current()
	if g == nil {
		return ErrUnavailable
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.wal.sync(), g.wbl.sync())
}

// MinAppendable returns the oldest timestamp (milliseconds) the store accepts now, given the
// newest sample it holds: samples older than the out-of-order window behind the head are
// refused by the TSDB.
func (s *Store) MinAppendable() int64 {
	g := s.current()
	if g == nil {
		return math.MinInt64
	}
	maxt := g.db.Head().MaxTime()
	if maxt == math.MinInt64 {
		return math.MinInt64
	}
	return maxt - s.opts.OutOfOrderWindow.Milliseconds()
}

// MaxValue returns the largest value of the series named metric with the label device=device
// within the out-of-order window behind the newest sample, and whether there was one.
func (s *Store) MaxValue(ctx context.Context, metric, device string) (float64, bool, error) {
	g := s.current()
	if g == nil {
		return 0, false, ErrUnavailable
	}
	maxt := g.db.Head().MaxTime()
	if maxt == math.MinInt64 {
		return 0, false, nil
	}
	q, err := s.Querier(maxt-s.opts.OutOfOrderWindow.Milliseconds(), math.MaxInt64)
	if err != nil {
		return 0, false, fmt.Errorf("query %s of %s: %w", metric, device, err)
	}
	defer q.Close()
	set := q.Select(ctx, false, nil,
		labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, metric),
		labels.MustNewMatcher(labels.MatchEqual, "device", device))
	var (
		last  float64
		found bool
		it    chunkenc.Iterator
	)
	for set.Next() {
		it = set.At().Iterator(it)
		for it.Next() != chunkenc.ValNone {
			_, v := it.At()
			last, found = max(last, v), true
		}
		if err := it.Err(); err != nil {
			return 0, false, fmt.Errorf("read %s of %s: %w", metric, device, err)
		}
	}
	if err := set.Err(); err != nil {
		return 0, false, fmt.Errorf("query %s of %s: %w", metric, device, err)
	}
	return last, found, nil
}

// DeleteSeries deletes every sample of the series that match ms, in the head and in every
// block: the blocks are rewritten without them (CleanTombstones), so the data is gone from the
// disk, not only hidden. A deleted device's data goes this way.
func (s *Store) DeleteSeries(ctx context.Context, ms ...*labels.Matcher) error {
	g := s.current()
	if g == nil {
		return ErrUnavailable
	}
	if err := g.db.Delete(ctx, math.MinInt64, math.MaxInt64, ms...); err != nil {
		return fmt.Errorf("delete series %v: %w", ms, err)
	}
	if err := g.db.CleanTombstones(); err != nil {
		return fmt.Errorf("rewrite blocks without the deleted series: %w", err)
	}
	return nil
}

// ErrClosed is returned by Ready once the store is closed.
var ErrClosed = errors.New("telemetry store closed")

// Ready reports whether the store takes writes and queries: nil when it is open, ErrClosed
// once Close was called, ErrUnavailable while it reopens after a write error.
func (s *Store) Ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.gen == nil:
		return ErrUnavailable
	}
	return nil
}

// Close closes the store; it syncs the WAL first.
func (s *Store) Close() error {
	s.mu.Lock()
	g := s.gen
	s.gen = nil
	s.closed = true
	s.mu.Unlock()
	if g == nil {
		return nil
	}
	var err error
	if s.opts.Sync == SyncAlways {
		g.mu.Lock()
		err = errors.Join(g.wal.sync(), g.wbl.sync())
		g.mu.Unlock()
	}
	g.readers.Wait()
	return errors.Join(err, g.close())
}

// collectorSet registers collectors with a parent registerer and remembers them, so that a
// reopened TSDB can register its metrics again under the same names.
type collectorSet struct {
	parent prometheus.Registerer
	mu     sync.Mutex
	cs     []prometheus.Collector
}

func (r *collectorSet) Register(c prometheus.Collector) error {
	if err := r.parent.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.cs = append(r.cs, c)
	r.mu.Unlock()
	return nil
}

func (r *collectorSet) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *collectorSet) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.cs {
		if x == c {
			r.cs = append(r.cs[:i], r.cs[i+1:]...)
			break
		}
	}
	return r.parent.Unregister(c)
}

func (r *collectorSet) unregisterAll() {
	r.mu.Lock()
	cs := r.cs
	r.cs = nil
	r.mu.Unlock()
	for _, c := range cs {
		r.parent.Unregister(c)
	}
}

// segmentSyncer fsyncs the newest segment of a Prometheus write-ahead log directory. The TSDB
// fsyncs a segment itself when it cuts a new one, so syncing the newest segment after a commit
// makes every committed record durable.
type segmentSyncer struct {
	dir string
	idx int
	f   *os.File
}

func newSegmentSyncer(dir string) (*segmentSyncer, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return &segmentSyncer{dir: dir}, nil
	}
	_, last, err := wlog.Segments(dir)
	if err != nil {
		return nil, fmt.Errorf("list WAL segments in %s: %w", dir, err)
	}
	s := &segmentSyncer{dir: dir, idx: max(last, 0)}
	return s, nil
}

func (s *segmentSyncer) sync() error {
	if s == nil {
		return nil
	}
	// Move to the newest segment: the TSDB already fsynced the ones it finished.
	moved := false
	for {
		if _, err := os.Stat(wlog.SegmentName(s.dir, s.idx+1)); err != nil {
			break
		}
		s.idx++
		moved = true
	}
	if moved || s.f == nil {
		if s.f != nil {
			_ = s.f.Close()
			s.f = nil
		}
		f, err := os.Open(wlog.SegmentName(s.dir, s.idx))
		if errors.Is(err, os.ErrNotExist) {
			return nil // nothing written yet
		}
		if err != nil {
			return fmt.Errorf("open WAL segment: %w", err)
		}
		s.f = f
		// A new segment's directory entry must be durable too.
		if err := syncDir(s.dir); err != nil {
			return err
		}
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("fsync WAL segment %s: %w", s.f.Name(), err)
	}
	return nil
}

func (s *segmentSyncer) close() error {
	if s == nil || s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}
