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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	ptsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/wlog"
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

// Store is the embedded TSDB with its PromQL engine.
type Store struct {
	db     *ptsdb.DB
	opts   Options
	engine *promql.Engine

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
	topts := ptsdb.DefaultOptions()
	topts.RetentionDuration = opts.Retention.Milliseconds()
	topts.OutOfOrderTimeWindow = opts.OutOfOrderWindow.Milliseconds()
	// Blocks of up to a tenth of the retention, as Prometheus does, but never less than the
	// minimum block.
	if maxBlock := opts.Retention.Milliseconds() / 10; maxBlock > topts.MinBlockDuration {
		topts.MaxBlockDuration = min(maxBlock, 31*24*time.Hour.Milliseconds())
	}
	topts.SamplesPerChunk = SamplesPerChunk
	topts.OutOfOrderCapMax = OutOfOrderChunkSamples
	db, err := ptsdb.Open(dir, logger.With("component", "tsdb"), reg, topts, nil)
	if err != nil {
		return nil, fmt.Errorf("open tsdb %s: %w", dir, err)
	}
	s := &Store{db: db, opts: opts}
	s.engine = promql.NewEngine(promql.EngineOpts{
		Logger:               logger.With("component", "promql"),
		Reg:                  reg,
		MaxSamples:           opts.QueryMaxSamples,
		Timeout:              opts.QueryTimeout,
		LookbackDelta:        5 * time.Minute,
		EnableAtModifier:     true,
		EnableNegativeOffset: true,
	})
	if opts.Sync == SyncAlways {
		s.wal, err = newSegmentSyncer(filepath.Join(dir, "wal"))
		if err == nil {
			s.wbl, err = newSegmentSyncer(filepath.Join(dir, "wbl"))
		}
		if err != nil {
			return nil, errors.Join(err, db.Close())
		}
	}
	return s, nil
}

// Options returns the effective options.
func (s *Store) Options() Options { return s.opts }

// DB returns the underlying Prometheus TSDB.
func (s *Store) DB() *ptsdb.DB { return s.db }

// Queryable is the store as a storage.Queryable.
func (s *Store) Queryable() storage.Queryable { return s.db }

// Engine returns the PromQL engine.
func (s *Store) Engine() *promql.Engine { return s.engine }

// Appender starts an append transaction.
func (s *Store) Appender(ctx context.Context) storage.Appender { return s.db.Appender(ctx) }

// Sync makes everything committed so far durable according to the policy: with SyncAlways
// it fsyncs the current segments of the WAL and of the out-of-order WAL; with SyncNever it
// does nothing. Call it after Commit and before acknowledging.
func (s *Store) Sync() error {
	if s.opts.Sync != SyncAlways {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.wal.sync(), s.wbl.sync())
}

// MinAppendable returns the oldest timestamp (milliseconds) the store accepts now, given the
// newest sample it holds: samples older than the out-of-order window behind the head are
// refused by the TSDB.
func (s *Store) MinAppendable() int64 {
	maxt := s.db.Head().MaxTime()
	if maxt == math.MinInt64 {
		return math.MinInt64
	}
	return maxt - s.opts.OutOfOrderWindow.Milliseconds()
}

// Close closes the store; it syncs the WAL first.
func (s *Store) Close() error {
	err := s.Sync()
	s.mu.Lock()
	err = errors.Join(err, s.wal.close(), s.wbl.close())
	s.mu.Unlock()
	return errors.Join(err, s.db.Close())
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
