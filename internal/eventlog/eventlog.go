// Package eventlog is the append-only log of telemetry values that are not numbers: SenML
// string values (vs) and data values (vd). The TSDB stores floats only; these values go here so
// that no value kind a device sends is silently dropped, and the API lists them.
//
// The log is a file of JSON lines. Appends are buffered and made durable by Flush (write) and
// Sync (fsync), which the ingest pipeline calls in its group commit next to the TSDB's. On open,
// a torn last line (from a crash mid-write) is cut off and counted. A re-sent batch appends its
// values again; List folds identical entries, so retransmits stay harmless.
package eventlog

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// FileName is the log's file name inside its directory.
const FileName = "events.jsonl"

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

// ErrBroken is returned by Append and Flush after a failed write, until Repair succeeds.
var ErrBroken = errors.New("event log needs repair after a failed write")

// Log is an append-only event log.
type Log struct {
	// file is held shared by List while it reads the file, and exclusively by Erase while it
	// replaces it.
	file    sync.RWMutex
	mu      sync.Mutex
	f       *os.File
	w       *bufio.Writer
	size    int64 // bytes appended, buffered ones included
	written int64 // bytes known to be whole in the file: the end of the last successful Flush
	torn    int64
	dirty   bool
	broken  error // the write error that left a partial line in the file, until Repair
}

// Open opens or creates the log at dir/events.jsonl, cutting off a torn tail.
func Open(dir string) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create event log directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	good, size, err := validPrefix(f)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("read event log: %w", err), f.Close())
	}
	l := &Log{f: f, size: good, written: good, torn: size - good}
	if good != size {
		if err := f.Truncate(good); err != nil {
			return nil, errors.Join(fmt.Errorf("truncate torn event log tail: %w", err), f.Close())
		}
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		return nil, errors.Join(fmt.Errorf("seek event log: %w", err), f.Close())
	}
	l.w = bufio.NewWriterSize(f, 64<<10)
	return l, nil
}

// validPrefix returns the length of the longest prefix of whole, valid JSON lines.
func validPrefix(f *os.File) (good, size int64, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size = st.Size()
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return good, size, nil // a line without its newline is torn
		}
		if err != nil {
			return 0, 0, err
		}
		if !json.Valid(bytes.TrimSpace(line)) {
			return good, size, nil
		}
		good += int64(len(line))
	}
}

// TornBytes is how many bytes of a torn tail Open cut off.
func (l *Log) TornBytes() int64 { return l.torn }

// Append buffers events; they are durable after Flush (process crash) and Sync (power cut).
func (l *Log) Append(events ...Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return fmt.Errorf("%w: %w", ErrBroken, l.broken)
	}
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		b = append(b, '\n')
		if _, err := l.w.Write(b); err != nil {
			l.broken = err // a full buffer was being written out
			return fmt.Errorf("append event: %w", err)
		}
		l.size += int64(len(b))
		l.dirty = true
	}
	return nil
}

// Flush writes buffered events to the file, and with sync also fsyncs it.
func (l *Log) Flush(sync bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return fmt.Errorf("%w: %w", ErrBroken, l.broken)
	}
	if !l.dirty {
		return nil
	}
	if err := l.w.Flush(); err != nil {
		// The file may now end in part of a line, and the buffered writer keeps failing:
		// every later line would follow the partial one and be cut off at the next open.
		l.broken = err
		return fmt.Errorf("write event log: %w", err)
	}
	if sync {
		if err := l.f.Sync(); err != nil {
			l.broken = err
			return fmt.Errorf("fsync event log: %w", err)
		}
	}
	l.written = l.size
	l.dirty = false
	return nil
}

// Repair drops what was appended since the last successful Flush — buffered events and any
// part of them a failed write left in the file — so that the log again ends in a whole line,
// and clears the failure. Call it after Append or Flush failed; the dropped events were never
// acknowledged as durable.
func (l *Log) Repair() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.f.Truncate(l.written); err != nil {
		return fmt.Errorf("truncate event log to its last whole line: %w", err)
	}
	if _, err := l.f.Seek(l.written, io.SeekStart); err != nil {
		return fmt.Errorf("seek event log: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("fsync event log: %w", err)
	}
	l.w.Reset(l.f)
	l.size = l.written
	l.dirty = false
	l.broken = nil
	return nil
}

// Query selects events.
type Query struct {
	Device string // empty: any
	Name   string // empty: any
	Start  int64  // milliseconds, inclusive
	End    int64  // milliseconds, inclusive; zero means no bound
	Limit  int    // newest first; zero means 1000
}

// List returns the events matching q, newest first, identical entries folded into one.
func (l *Log) List(q Query) ([]Event, error) {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	l.file.RLock()
	defer l.file.RUnlock()
	l.mu.Lock()
	size := l.written
	l.mu.Unlock()
	r := bufio.NewReaderSize(io.NewSectionReader(l.f, 0, size), 64<<10)
	seen := map[string]bool{}
	var out []Event
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read event log: %w", err)
		}
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("decode event log line: %w", err)
		}
		if (q.Device != "" && e.Device != q.Device) || (q.Name != "" && e.Name != q.Name) ||
			e.Time < q.Start || (q.End != 0 && e.Time > q.End) {
			continue
		}
		key := string(bytes.TrimSpace(line))
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b Event) int { return cmp.Compare(b.Time, a.Time) })
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// Erase removes every event of device from the log (a deleted device's values go with it) by
// rewriting the file beside it and renaming it over the old one, fsynced; it returns how many
// lines it removed. Buffered events are written first; a crash midway leaves the old file whole.
func (l *Log) Erase(device string) (int, error) {
	l.file.Lock()
	defer l.file.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken != nil {
		return 0, fmt.Errorf("%w: %w", ErrBroken, l.broken)
	}
	if err := l.w.Flush(); err != nil {
		l.broken = err
		return 0, fmt.Errorf("write event log: %w", err)
	}
	l.written, l.dirty = l.size, false
	path := l.f.Name()
	tmp, err := os.CreateTemp(filepath.Dir(path), FileName+".erase-*")
	if err != nil {
		return 0, fmt.Errorf("erase from event log: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	removed, kept, err := copyOthers(tmp, io.NewSectionReader(l.f, 0, l.size), device)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil || removed == 0 {
		if err != nil {
			err = fmt.Errorf("erase from event log: %w", err)
		}
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("erase from event log: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return 0, fmt.Errorf("erase from event log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err == nil {
		_, err = f.Seek(kept, io.SeekStart)
	}
	if err != nil {
		l.broken = err // the old handle names the replaced file: appends would be lost
		return removed, fmt.Errorf("reopen event log: %w", err)
	}
	_ = l.f.Close()
	l.f, l.size, l.written = f, kept, kept
	l.w.Reset(f)
	return removed, nil
}

// copyOthers copies to w the lines of r whose event is not of device.
func copyOthers(w io.Writer, r io.Reader, device string) (removed int, kept int64, err error) {
	br, bw := bufio.NewReaderSize(r, 64<<10), bufio.NewWriterSize(w, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return removed, kept, bw.Flush()
		}
		if err != nil {
			return 0, 0, err
		}
		var e struct {
			Device string `json:"device"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			return 0, 0, fmt.Errorf("decode event log line: %w", err)
		}
		if e.Device == device {
			removed++
			continue
		}
		if _, err := bw.Write(line); err != nil {
			return 0, 0, err
		}
		kept += int64(len(line))
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// CopyFlushed calls fn with the log's whole lines flushed so far — their length and a reader
// of them — while appends go on: a consistent copy, for a backup. An erasure waits until fn
// returns.
func (l *Log) CopyFlushed(fn func(size int64, r io.Reader) error) error {
	l.file.RLock()
	defer l.file.RUnlock()
	l.mu.Lock()
	n, f := l.written, l.f
	l.mu.Unlock()
	return fn(n, io.NewSectionReader(f, 0, n))
}

// Close flushes, fsyncs and closes the log.
func (l *Log) Close() error {
	err := l.Flush(true)
	return errors.Join(err, l.f.Close())
}
