package spool

import (
	"fmt"
	"sync"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// Append stores a record and returns its ID. Under SyncBatch and SyncNever
// it returns once the record is written to the segment file (it survives a
// crash of the process); under SyncAlways once it is fsynced (it survives a
// power cut).
//
// Append never fails because the spool is full: it drops the oldest records
// instead (see the package documentation). It fails with an error wrapping
// ErrDiskFull when the file system is out of space, in which case the record
// is not stored and nothing stored before is lost. Under SyncAlways an error
// wrapping ErrSyncFailed with a non-zero ID means the record was written but
// its fsync failed; it stays in the spool and is synced on the next attempt.
func (s *Spool) Append(c Class, payload []byte) (uint64, error) {
	if c != ClassRaw && c != ClassEvent {
		return 0, fmt.Errorf("append record: %w: %d", ErrUnknownClass, uint8(c))
	}
	if len(payload) > s.opts.MaxRecordBytes {
		return 0, fmt.Errorf("append record: %w: %d bytes, limit %d", ErrRecordTooLarge, len(payload), s.opts.MaxRecordBytes)
	}
	bp := bufPool.Get().(*[]byte)
	buf := appendRecord((*bp)[:0], c, s.now().UnixNano(), payload)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		bufPool.Put(bp)
		return 0, ErrClosed
	}
	s.makeRoom(int64(len(buf)))
	id, err := s.writeLocked(buf, c)
	kick := s.opts.Sync == SyncBatch && s.dirtyBytes >= s.opts.SyncBytes
	s.mu.Unlock()

	if cap(buf) <= 64<<10 {
		*bp = buf
		bufPool.Put(bp)
	}
	if err != nil {
		return 0, fmt.Errorf("append record: %w", err)
	}
	switch {
	case s.opts.Sync == SyncAlways:
		if err := s.syncTo(id); err != nil {
			return id, fmt.Errorf("append record: %w", err)
		}
	case kick:
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return id, nil
}

// writeLocked writes an encoded record to the active segment, rotating first
// if it is full, and assigns the next ID. s.mu is held.
func (s *Spool) writeLocked(buf []byte, c Class) (uint64, error) {
	g := s.active()
	if g.count > 0 && g.size+int64(len(buf)) > s.opts.SegmentBytes {
		if err := s.rotate(); err != nil {
			s.st.writeErrors++
			return 0, err
		}
		g = s.active()
	}
	off := g.size
	if _, err := g.wf.WriteAt(buf, off); err != nil {
		s.st.writeErrors++
		// Drop whatever part was written so the next record starts at off.
		if terr := g.wf.Truncate(off); terr != nil {
			s.log.Warn("truncate after failed write", "file", g.filename, "err", terr)
		}
		return 0, ioErr("write segment", s.path(g.filename), err, nil)
	}
	id := s.nextID
	s.nextID++
	if g.count%indexStride == 0 {
		g.index = append(g.index, off)
	}
	g.count++
	if c.keep() {
		g.nKeep++
	}
	n := int64(len(buf))
	g.size += n
	s.totalBytes += n
	s.dirtyBytes += n
	if s.opts.Sync == SyncNever {
		s.signalReady()
	}
	return id, nil
}

// rotate seals the active segment and starts a new one. Under SyncBatch the
// sealed segment keeps its write handle until the sync loop has fsynced it.
// s.mu is held.
func (s *Spool) rotate() error {
	old := s.active()
	g, err := s.createSegment(s.nextID)
	if err != nil {
		return err
	}
	old.sealed = true
	if (old.synced >= old.size || s.opts.Sync == SyncNever) && old.refs == 0 && old.wf != nil {
		if err := old.wf.Close(); err != nil {
			s.log.Warn("close sealed segment", "file", old.filename, "err", err)
		}
		old.wf = nil
	}
	s.segs = append(s.segs, g)
	s.totalBytes += g.size
	return nil
}
