package eventlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

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
		l.active.add(l.size, e.Time, e.Device, e.Name)
		l.size += int64(len(b))
		l.dirty = true
	}
	return nil
}

// Flush writes buffered events to the file, and with sync also fsyncs it. When the active
// segment has reached Options.SegmentBytes, Flush then closes it and starts the next; an error
// doing so leaves the flushed events durable and the segment active.
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
	if l.size >= l.opts.SegmentBytes {
		return l.roll()
	}
	return nil
}

// roll closes the active segment — fsynced, its index written — and starts the next one.
// It needs l.mu held and nothing buffered.
func (l *Log) roll() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("close event log segment: %w", err)
	}
	seq := l.active.seq + 1
	f, err := os.OpenFile(segPath(l.dir, seq), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("start event log segment: %w", err)
	}
	l.active.size = l.written
	if err := writeIndex(l.dir, l.active); err != nil {
		return errors.Join(err, f.Close(), os.Remove(f.Name()))
	}
	if err := syncDir(l.dir); err != nil {
		// The index is written: the segment is closed whatever happens to the new file.
		err = fmt.Errorf("start event log segment: %w", err)
		return errors.Join(err, f.Close(), os.Remove(f.Name()), l.reopenAfterFailedRoll())
	}
	_ = l.f.Close()
	l.closed = append(l.closed, l.active)
	l.active, l.f, l.size, l.written = newSegment(seq), f, 0, 0
	l.w.Reset(f)
	return nil
}

// reopenAfterFailedRoll takes back an active segment whose index roll had already written.
func (l *Log) reopenAfterFailedRoll() error {
	_ = os.Remove(idxPath(l.dir, l.active.seq))
	s, _, _, err := scanSegment(l.f, l.active.seq)
	if err != nil {
		l.broken = err
		return err
	}
	l.active = s
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
	for k, offs := range l.active.post {
		i := len(offs)
		for i > 0 && offs[i-1] >= l.written {
			i--
		}
		if i == 0 {
			delete(l.active.post, k)
		} else {
			l.active.post[k] = offs[:i]
		}
	}
	l.w.Reset(l.f)
	l.size = l.written
	l.dirty = false
	l.broken = nil
	return nil
}
