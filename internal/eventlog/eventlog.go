// Package eventlog is the append-only log of telemetry values that are not numbers: SenML
// string values (vs) and data values (vd). The TSDB stores floats only; these values go here so
// that no value kind a device sends is silently dropped, and the API lists them.
//
// The log is a directory of segments: JSON-lines files named by a sequence number
// (00000000000000000001.jsonl), of which the newest is the active one that Append writes to.
// Appends are buffered and made durable by Flush (write) and Sync (fsync), which the ingest
// pipeline calls in its group commit next to the TSDB's. On open, a torn last line of the
// active segment (from a crash mid-write) is cut off and counted. When the active segment
// reaches Options.SegmentBytes at a Flush it is closed: fsynced, and given a sidecar index
// (.idx) holding its time range and, for each device and each name, the offsets of its lines.
// List reads segments newest first and stops once no older segment can hold a newer event
// than the page it has; a device or name filter reads only the indexed lines. Retention drops
// whole segments (DropBefore). A re-sent batch appends its values again; List folds identical
// entries, so retransmits stay harmless.
//
// A directory holding the single events.jsonl of earlier versions is migrated on open: the
// file becomes segment 0.
package eventlog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// FileName is the single log file of earlier versions; Open migrates it into segment 0.
const FileName = "events.jsonl"

const (
	segExt = ".jsonl"
	idxExt = ".idx"
)

// Event is one non-numeric value.
type Event struct {
	// Time is the sample time in milliseconds since the Unix epoch.
	Time   int64  `json:"t"`
	Device string `json:"device"`
	Name   string `json:"name"`
	Unit   string `json:"unit,omitempty"`
	// String is a SenML string value (vs).
	String *string `json:"vs,omitempty"`
	// Data is a SenML data value (vd), base64 in JSON.
	Data []byte `json:"vd,omitempty"`
}

// Options tune the log.
type Options struct {
	// SegmentBytes is the size in bytes at which the active segment is closed and a new one
	// started (at the next Flush). Default 8 MiB; zero means the default.
	SegmentBytes int64 `yaml:"segment_bytes"`
}

// DefaultOptions are the options Open uses.
func DefaultOptions() Options { return Options{SegmentBytes: 8 << 20} }

// ErrBroken is returned by Append and Flush after a failed write, until Repair succeeds.
var ErrBroken = errors.New("event log needs repair after a failed write")

// Log is an append-only event log.
type Log struct {
	dir  string
	opts Options
	// files is held shared by List and Backup while they read segments, and exclusively by
	// Erase and DropBefore while they replace or remove them.
	files  sync.RWMutex
	mu     sync.Mutex
	closed []*segment // oldest first; each with its index written
	active *segment
	f      *os.File
	w      *bufio.Writer
	size   int64 // bytes appended to the active segment, buffered ones included
	// written is the end of the last successful Flush: the bytes of whole lines in the file.
	written int64
	torn    int64 // cut off by Open
	opened  int64 // cut off by the last openActive
	dirty   bool
	broken  error // the write error that left a partial line in the file, until Repair
}

// Open opens or creates the log in dir with the default options.
func Open(dir string) (*Log, error) { return OpenOptions(dir, DefaultOptions()) }

// OpenOptions opens or creates the log in dir, migrating an events.jsonl of earlier versions,
// rebuilding missing or stale segment indexes and cutting off a torn tail.
func OpenOptions(dir string, opts Options) (_ *Log, err error) {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultOptions().SegmentBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create event log directory: %w", err)
	}
	if err := migrate(dir); err != nil {
		return nil, err
	}
	seqs, err := segmentSeqs(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir, opts: opts}
	if len(seqs) == 0 {
		seqs = []int64{1}
	}
	for _, seq := range seqs[:len(seqs)-1] {
		s, err := l.openClosed(seq)
		if err != nil {
			return nil, err
		}
		l.closed = append(l.closed, s)
	}
	if err := l.openActive(seqs[len(seqs)-1]); err != nil {
		return nil, err
	}
	l.torn = l.opened
	if l.size >= l.opts.SegmentBytes {
		if err := l.roll(); err != nil {
			return nil, errors.Join(err, l.f.Close())
		}
	}
	return l, nil
}

// migrate makes the events.jsonl of earlier versions segment 0.
func migrate(dir string) error {
	old := filepath.Join(dir, FileName)
	if _, err := os.Stat(old); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("migrate event log: %w", err)
	}
	to := segPath(dir, 0)
	if _, err := os.Stat(to); err == nil {
		return fmt.Errorf("migrate event log: both %s and %s exist", FileName, filepath.Base(to))
	}
	if err := os.Rename(old, to); err != nil {
		return fmt.Errorf("migrate event log: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("migrate event log: %w", err)
	}
	return nil
}

// segmentSeqs lists the segments' sequence numbers, oldest first, and removes indexes whose
// segment is gone and scratch files of an interrupted rewrite.
func segmentSeqs(dir string) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read event log directory: %w", err)
	}
	var seqs []int64
	have := map[int64]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.Contains(name, ".tmp") {
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		if base, ok := strings.CutSuffix(name, segExt); ok {
			if seq, err := strconv.ParseInt(base, 10, 64); err == nil {
				seqs = append(seqs, seq)
				have[seq] = true
			}
		}
	}
	for _, e := range entries {
		if base, ok := strings.CutSuffix(e.Name(), idxExt); ok {
			if seq, err := strconv.ParseInt(base, 10, 64); err == nil && !have[seq] {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

func segPath(dir string, seq int64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", seq, segExt))
}
func idxPath(dir string, seq int64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", seq, idxExt))
}

// openClosed loads a closed segment's index, rebuilding it when it is missing or stale.
func (l *Log) openClosed(seq int64) (*segment, error) {
	s, err := readIndex(l.dir, seq)
	if err == nil {
		return s, nil
	}
	f, err := os.OpenFile(segPath(l.dir, seq), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open event log segment: %w", err)
	}
	defer f.Close()
	s, good, size, err := scanSegment(f, seq)
	if err != nil {
		return nil, fmt.Errorf("read event log segment %d: %w", seq, err)
	}
	if good != size {
		if err := f.Truncate(good); err != nil {
			return nil, fmt.Errorf("truncate torn event log segment: %w", err)
		}
	}
	if err := writeIndex(l.dir, s); err != nil {
		return nil, err
	}
	return s, nil
}

// openActive opens (or creates) the active segment, cutting off a torn tail.
func (l *Log) openActive(seq int64) error {
	f, err := os.OpenFile(segPath(l.dir, seq), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	s, good, size, err := scanSegment(f, seq)
	if err != nil {
		return errors.Join(fmt.Errorf("read event log: %w", err), f.Close())
	}
	if good != size {
		if err := f.Truncate(good); err != nil {
			return errors.Join(fmt.Errorf("truncate torn event log tail: %w", err), f.Close())
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return errors.Join(fmt.Errorf("seek event log: %w", err), f.Close())
	}
	_ = os.Remove(idxPath(l.dir, seq)) // an active segment has no index on disk
	l.active, l.f, l.size, l.written, l.opened = s, f, good, good, size-good
	if l.w == nil {
		l.w = bufio.NewWriterSize(f, 64<<10)
	} else {
		l.w.Reset(f)
	}
	return nil
}

// TornBytes is how many bytes of a torn tail Open cut off.
func (l *Log) TornBytes() int64 { return l.torn }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Close flushes, fsyncs and closes the log.
func (l *Log) Close() error {
	err := l.Flush(true)
	return errors.Join(err, l.f.Close())
}
