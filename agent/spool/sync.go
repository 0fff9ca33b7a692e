package spool

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Sync makes every record appended so far, and the acknowledgement
// watermark, durable. Under SyncBatch it is the group commit the background
// loop performs; callers use it before reporting data as safe.
func (s *Spool) Sync() error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := s.syncTo(0); err != nil {
		return fmt.Errorf("sync spool: %w", err)
	}
	return s.persistAcks()
}

// Durable returns the durable watermark: every record with an ID up to it
// is on stable storage (or was acknowledged or dropped since).
func (s *Spool) Durable() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// syncItem is a segment snapshot taken for one fsync round.
type syncItem struct {
	g     *segment
	size  int64
	count uint64
}

// syncTo makes records up to target (0: all written) durable. Concurrent
// callers queue on syncMu; the first fsync covers everything written before
// it started, so the others usually find their records durable already:
// that is the group commit.
func (s *Spool) syncTo(target uint64) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()

	s.mu.Lock()
	if s.filesClosed {
		s.mu.Unlock()
		return ErrClosed
	}
	if target == 0 || target > s.nextID-1 {
		target = s.nextID - 1
	}
	if s.syncFailed {
		err := s.carryOver()
		s.mu.Unlock()
		return err
	}
	if s.synced >= target && !s.dirDirty {
		s.mu.Unlock()
		return nil
	}
	var items []syncItem
	for _, g := range s.segs {
		if g.synced >= g.size {
			continue
		}
		if g.wf == nil {
			f, err := s.fs.OpenFile(s.path(g.filename), os.O_RDWR, 0)
			if err != nil {
				s.releaseItems(items)
				s.mu.Unlock()
				return ioErr("open segment", s.path(g.filename), err, ErrSyncFailed)
			}
			g.wf = f
		}
		g.refs++
		items = append(items, syncItem{g, g.size, g.count})
	}
	upTo := s.nextID - 1
	dir := s.dirDirty
	s.dirDirty = false
	s.dirtyBytes = 0
	s.mu.Unlock()

	start := time.Now()
	var err error
	for _, it := range items {
		if e := it.g.wf.Sync(); e != nil {
			err = ioErr("fsync segment", s.path(it.g.filename), e, ErrSyncFailed)
			break
		}
	}
	if err == nil && dir {
		if e := syncDir(s.fs, s.dir); e != nil {
			err = ioErr("fsync directory", s.dir, e, ErrSyncFailed)
		}
	}
	lat := time.Since(start)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		for _, it := range items {
			it.g.synced = max(it.g.synced, min(it.size, it.g.size))
			it.g.syncedCount = max(it.g.syncedCount, min(it.count, it.g.count))
		}
	}
	s.releaseItems(items)
	if err != nil {
		s.syncFailed = true
		s.dirDirty = s.dirDirty || dir
		s.st.syncErrors++
		return err
	}
	s.st.syncs++
	s.st.lastSync = lat
	s.st.totalSync += lat
	if upTo > s.synced {
		s.synced = upTo
		s.signalReady()
	}
	return nil
}

// releaseItems drops the references a sync round took and closes handles
// of sealed, fully synced or deleted segments. s.mu is held.
func (s *Spool) releaseItems(items []syncItem) {
	for _, it := range items {
		g := it.g
		g.refs--
		if g.refs == 0 && g.wf != nil && (g.closeWF || (g.sealed && g.synced >= g.size)) {
			if err := g.wf.Close(); err != nil {
				s.log.Warn("close segment", "file", g.filename, "err", err)
			}
			g.wf = nil
		}
	}
}

// carryOver recovers from a failed fsync. After a failed fsync the kernel
// may have dropped the dirty pages, so a later successful fsync proves
// nothing about them: every record not known to be durable is copied into a
// fresh segment file (temporary name, fsync, rename, directory fsync) and
// the original is cut back to its durable part. Records that no longer read
// back intact are counted as torn. s.mu and s.syncMu are held.
func (s *Spool) carryOver() error {
	for i := 0; i < len(s.segs); i++ {
		g := s.segs[i]
		if g.synced >= g.size {
			continue
		}
		if g.syncedCount == g.count {
			// Only the header (or a cut tail) is unsynced: a plain fsync will do.
			if err := s.fsyncSeg(g); err != nil {
				return err
			}
			continue
		}
		n, err := s.copyTail(g)
		if err != nil {
			return err
		}
		if g.wf != nil {
			_ = g.wf.Close()
			g.wf = nil
		}
		if g.syncedCount == 0 {
			// The copy replaced the file under the same name.
			s.totalBytes += n.size - g.size
			if s.cursor.seg == g {
				s.cursor = cursor{}
			}
			if s.readSeg == g {
				s.closeReadFile()
			}
			s.segs[i] = n
		} else {
			if err := s.truncateSeg(g, g.syncedCount); err != nil {
				s.log.Warn("truncate segment after carry-over", "file", g.filename, "err", err)
			}
			g.sealed = true
			s.segs = append(s.segs[:i+1], append([]*segment{n}, s.segs[i+1:]...)...)
			s.totalBytes += n.size
			i++
		}
	}
	a := s.active()
	if a.id+a.count != s.nextID {
		// Records were lost in the copy: keep IDs dense in the active segment.
		if err := s.rotate(); err != nil {
			return err
		}
	}
	s.syncFailed = false
	s.dirDirty = false
	s.dirtyBytes = 0
	s.st.syncs++
	if s.nextID-1 > s.synced {
		s.synced = s.nextID - 1
		s.signalReady()
	}
	s.log.Info("recovered from fsync failure by copying unsynced records", "next_id", s.nextID)
	return nil
}

// fsyncSeg fsyncs one segment and marks it synced. s.mu is held.
func (s *Spool) fsyncSeg(g *segment) error {
	f, err := s.fileFor(g)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		return ioErr("fsync segment", s.path(g.filename), err, ErrSyncFailed)
	}
	g.synced, g.syncedCount = g.size, g.count
	return nil
}

// copyTail writes the unsynced records of g into a new durable segment
// named after the first of them and returns it. s.mu is held.
func (s *Spool) copyTail(g *segment) (*segment, error) {
	src, err := s.fileFor(g)
	if err != nil {
		return nil, err
	}
	first := g.id + g.syncedCount
	name := segmentName(first)
	path := s.path(name)
	tmp := path + tmpExt
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, ioErr("create segment", tmp, err, ErrSyncFailed)
	}
	fail := func(err error) (*segment, error) {
		_ = f.Close()
		_ = s.fs.Remove(tmp)
		return nil, ioErr("copy unsynced records to", tmp, err, ErrSyncFailed)
	}
	hdr := encodeSegHeader(first)
	n := &segment{id: first, hdrSize: int64(len(hdr)), size: int64(len(hdr)), filename: name, sealed: g.sealed}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fail(err)
	}
	rr := newRecordReader()
	rr.reset(src, g.synced, g.size)
	var buf []byte
	for k := g.syncedCount; k < g.count; k++ {
		rec, err := rr.next()
		if errors.Is(err, errTorn) {
			s.st.tornRecords += g.count - k
			s.st.tornBytes += g.size - rr.off
			s.log.Error("unsynced records unreadable after fsync failure", "file", g.filename, "records", g.count-k)
			break
		}
		if err != nil {
			return fail(err)
		}
		buf = appendRecord(buf[:0], rec.class, rec.unixNano, rec.payload)
		if _, err := f.WriteAt(buf, n.size); err != nil {
			return fail(err)
		}
		if n.count%indexStride == 0 {
			n.index = append(n.index, n.size)
		}
		n.count++
		if rec.class.keep() {
			n.nKeep++
		}
		n.size += int64(len(buf))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := s.fs.Rename(tmp, path); err != nil {
		return fail(err)
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		_ = f.Close()
		return nil, ioErr("fsync directory", s.dir, err, ErrSyncFailed)
	}
	n.synced, n.syncedCount = n.size, n.count
	if n.sealed {
		_ = f.Close()
	} else {
		n.wf = f
	}
	return n, nil
}

// syncLoop is the group-commit loop: it fsyncs pending writes (SyncBatch)
// and persists the acknowledgement watermark every SyncInterval, or at once
// when Append reports SyncBytes pending.
func (s *Spool) syncLoop() {
	defer close(s.loopDone)
	t := s.clk.NewTimer(s.opts.SyncInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-s.done:
			return
		case <-s.kick:
		case <-t.C():
		}
		var err error
		if s.opts.Sync == SyncBatch {
			err = s.syncTo(0)
		}
		err = errors.Join(err, s.persistAcks())
		switch {
		case err != nil && !failing:
			s.log.Error("background sync failed; retrying", "err", err)
		case err == nil && failing:
			s.log.Info("background sync recovered")
		}
		failing = err != nil
		t.Reset(s.opts.SyncInterval)
	}
}
