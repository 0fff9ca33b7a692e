package eventlog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Erase removes every event of device from the log (a deleted device's values go with it),
// rewriting only the segments whose index lists the device: each is rewritten beside itself,
// fsynced and renamed over the old one, and its index rewritten (an index left stale by a
// crash is rebuilt on open). Buffered events are written first. It returns how many lines it
// removed.
func (l *Log) Erase(device string) (int, error) {
	l.files.Lock()
	defer l.files.Unlock()
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
	key := deviceKey(device)
	removed := 0
	for i, s := range l.closed {
		if !s.has(key) {
			continue
		}
		n, ns, err := l.rewrite(s.seq, device)
		if err != nil {
			return removed, err
		}
		if err := writeIndex(l.dir, ns); err != nil {
			return removed, err
		}
		l.closed[i] = ns
		removed += n
	}
	if !l.active.has(key) {
		return removed, nil
	}
	n, _, err := l.rewrite(l.active.seq, device)
	if err != nil {
		return removed, err
	}
	removed += n
	old := l.f
	if err := l.openActive(l.active.seq); err != nil {
		l.broken = err // the old handle names the replaced file: appends would be lost
		return removed, fmt.Errorf("reopen event log: %w", err)
	}
	_ = old.Close()
	return removed, nil
}

// rewrite replaces segment seq by a copy without device's lines, returning how many it removed
// and the new segment's in-memory index.
func (l *Log) rewrite(seq int64, device string) (int, *segment, error) {
	path := segPath(l.dir, seq)
	src, err := os.Open(path)
	if err != nil {
		return 0, nil, fmt.Errorf("erase from event log: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(l.dir, filepath.Base(path)+".tmp-erase-*")
	if err != nil {
		return 0, nil, fmt.Errorf("erase from event log: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	removed, err := copyOthers(tmp, src, device)
	var s *segment
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil {
		s, _, _, err = scanSegment(tmp, seq)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("erase from event log: %w", err)
	}
	return removed, s, nil
}

// copyOthers copies to w the lines of r whose event is not of device.
func copyOthers(w io.Writer, r io.Reader, device string) (removed int, err error) {
	br, bw := bufio.NewReaderSize(r, 64<<10), bufio.NewWriterSize(w, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return removed, bw.Flush()
		}
		if err != nil {
			return 0, err
		}
		var e struct {
			Device string `json:"device"`
		}
		if err := json.Unmarshal(line, &e); err != nil {
			return 0, fmt.Errorf("decode event log line: %w", err)
		}
		if e.Device == device {
			removed++
			continue
		}
		if _, err := bw.Write(line); err != nil {
			return 0, err
		}
	}
}

// DropBefore removes the segments whose every event is older than cutoff (milliseconds since
// the Unix epoch): retention. An active segment that qualifies is closed first. It returns how
// many segments it removed.
func (l *Log) DropBefore(cutoff int64) (int, error) {
	l.files.Lock()
	defer l.files.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken == nil && !l.dirty && l.written > 0 && l.active.max < cutoff {
		if err := l.roll(); err != nil {
			return 0, err
		}
	}
	dropped := 0
	kept := l.closed[:0]
	var errs []error
	for _, s := range l.closed {
		if s.max >= cutoff && s.count > 0 || len(errs) > 0 {
			kept = append(kept, s)
			continue
		}
		if err := os.Remove(segPath(l.dir, s.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("drop event log segment: %w", err))
			kept = append(kept, s)
			continue
		}
		_ = os.Remove(idxPath(l.dir, s.seq)) // an orphaned index is removed on open
		dropped++
	}
	clear(l.closed[len(kept):])
	l.closed = kept
	if dropped > 0 {
		errs = append(errs, syncDir(l.dir))
	}
	return dropped, errors.Join(errs...)
}

// Backup calls fn for each file of a consistent copy of the log — the closed segments with
// their indexes, and the active segment up to its last Flush — while appends go on. Erase and
// DropBefore wait until it returns. Names are relative to the log's directory.
func (l *Log) Backup(fn func(name string, size int64, r io.Reader) error) error {
	l.files.RLock()
	defer l.files.RUnlock()
	l.mu.Lock()
	var files []string
	for _, s := range l.closed {
		files = append(files, segPath(l.dir, s.seq), idxPath(l.dir, s.seq))
	}
	active, activeSize := segPath(l.dir, l.active.seq), l.written
	l.mu.Unlock()
	files = append(files, active)
	for _, path := range files {
		if err := backupFile(path, path == active, activeSize, fn); err != nil {
			return fmt.Errorf("back up event log: %w", err)
		}
	}
	return nil
}

func backupFile(path string, active bool, activeSize int64, fn func(string, int64, io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	size := activeSize
	if !active {
		st, err := f.Stat()
		if err != nil {
			return err
		}
		size = st.Size()
	}
	return fn(filepath.Base(path), size, io.NewSectionReader(f, 0, size))
}
