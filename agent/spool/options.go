package spool

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/millwright/millwright/clock"
)

// SyncPolicy says when appended records are fsynced to stable storage.
type SyncPolicy uint8

const (
	// SyncBatch is group commit, the default. Append returns once the record
	// is written to the file (write(2)); a background loop fsyncs at most
	// SyncInterval after a write, or earlier once SyncBytes are pending;
	// Sync forces it. Readers see a record only after it is durable. A
	// power cut loses at most the records appended since the start of the
	// last successful fsync: about SyncInterval (plus one fsync time) or
	// SyncBytes of appends, whichever is less.
	SyncBatch SyncPolicy = iota
	// SyncAlways fsyncs before Append returns. Concurrent appenders share
	// fsyncs (group commit), so throughput grows with their number. A power
	// cut loses nothing that Append returned without error for.
	SyncAlways
	// SyncNever leaves writeback to the operating system (typically within
	// 30 s on Linux); only Sync and Close fsync. Readers see records at once.
	// For tests and benchmarks: a power cut may lose anything not synced,
	// and the IDs of lost records may be reused after restart.
	SyncNever
)

var syncPolicyNames = [...]string{SyncBatch: "batch", SyncAlways: "always", SyncNever: "never"}

// String returns "batch", "always" or "never".
func (p SyncPolicy) String() string {
	if int(p) < len(syncPolicyNames) {
		return syncPolicyNames[p]
	}
	return fmt.Sprintf("SyncPolicy(%d)", uint8(p))
}

// MarshalText implements encoding.TextMarshaler.
func (p SyncPolicy) MarshalText() ([]byte, error) {
	if int(p) >= len(syncPolicyNames) {
		return nil, fmt.Errorf("marshal sync policy: %w: unknown policy %d", ErrInvalidOptions, uint8(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, so configuration files
// can say sync: always|batch|never.
func (p *SyncPolicy) UnmarshalText(b []byte) error {
	for i, n := range syncPolicyNames {
		if string(b) == n {
			*p = SyncPolicy(i)
			return nil
		}
	}
	return fmt.Errorf("parse sync policy: %w: %q is not one of always, batch, never", ErrInvalidOptions, b)
}

// Options configure a Spool. The zero value of every field means its default;
// start from DefaultOptions to see them.
type Options struct {
	// MaxBytes bounds the total size of the segment files in bytes. When an
	// Append would exceed it, the oldest raw records are dropped (see the
	// package documentation). Default 64 MiB; zero means the default;
	// minimum 4 KiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// SegmentBytes is the size in bytes at which the active segment file is
	// closed and a new one started; it is also the granularity of deletion
	// and of overflow dropping. Default min(1 MiB, MaxBytes/8); zero means
	// the default; at most MaxBytes/2.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// MaxRecordBytes is the largest payload Append accepts, in bytes.
	// Default min(64 KiB, SegmentBytes/2); zero means the default; at most
	// SegmentBytes.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// Sync is the fsync policy. Default (and zero) SyncBatch.
	Sync SyncPolicy `yaml:"sync"`
	// SyncInterval is, under SyncBatch, the longest time a written record
	// waits for its fsync; it bounds the power-cut loss window in time.
	// Acknowledgements are persisted on the same schedule under SyncBatch
	// and SyncNever. Default 200 ms; zero means the default.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// SyncBytes is, under SyncBatch, the number of written but unsynced
	// bytes that triggers an fsync before SyncInterval has passed; it bounds
	// the loss window in volume. Default 256 KiB; zero means the default.
	SyncBytes int64 `yaml:"sync_bytes"`
	// Clock stamps records with their append time and drives the sync loop.
	// Default (nil) clock.Real().
	Clock clock.Clock `yaml:"-"`
	// Logger receives recovery reports and background sync errors. Default
	// (nil) discards them.
	Logger *slog.Logger `yaml:"-"`
}

// Defaults and limits.
const (
	DefaultMaxBytes     int64 = 64 << 20
	DefaultSyncInterval       = 200 * time.Millisecond
	DefaultSyncBytes    int64 = 256 << 10
	MinMaxBytes         int64 = 4 << 10

	defaultSegmentBytes   int64 = 1 << 20
	defaultMaxRecordBytes       = 64 << 10
)

// DefaultOptions returns the options used for zero fields.
func DefaultOptions() Options {
	o := Options{}
	o.fill()
	return o
}

// fill replaces zero fields with their defaults.
func (o *Options) fill() {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = min(defaultSegmentBytes, o.MaxBytes/8)
	}
	if o.MaxRecordBytes == 0 {
		o.MaxRecordBytes = int(min(int64(defaultMaxRecordBytes), o.SegmentBytes/2))
	}
	if o.SyncInterval == 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.SyncBytes == 0 {
		o.SyncBytes = DefaultSyncBytes
	}
	if o.Clock == nil {
		o.Clock = clock.Real()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports the first option out of range, after applying defaults
// to zero fields. The error wraps ErrInvalidOptions and names the field.
func (o Options) Validate() error {
	o.fill()
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("validate options: %w: %s %s", ErrInvalidOptions, field, fmt.Sprintf(format, args...))
	}
	switch {
	case o.MaxBytes < MinMaxBytes:
		return bad("max_bytes", "%d is below the minimum %d", o.MaxBytes, MinMaxBytes)
	case o.SegmentBytes < segHeaderSize+recordOverhead+1:
		return bad("segment_bytes", "%d is too small", o.SegmentBytes)
	case o.SegmentBytes > o.MaxBytes/2:
		return bad("segment_bytes", "%d exceeds max_bytes/2 (%d)", o.SegmentBytes, o.MaxBytes/2)
	case o.MaxRecordBytes < 1:
		return bad("max_record_bytes", "%d is below 1", o.MaxRecordBytes)
	case int64(o.MaxRecordBytes) > o.SegmentBytes:
		return bad("max_record_bytes", "%d exceeds segment_bytes (%d)", o.MaxRecordBytes, o.SegmentBytes)
	case o.Sync > SyncNever:
		return bad("sync", "%d is not a policy", uint8(o.Sync))
	case o.SyncInterval < 0:
		return bad("sync_interval", "%v is negative", o.SyncInterval)
	case o.SyncBytes < 0:
		return bad("sync_bytes", "%d is negative", o.SyncBytes)
	}
	return nil
}
