package spool

import (
	"encoding/binary"
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
	id, stored, err := s.AppendBatch(c, [][]byte{payload})
	if stored == 0 {
		id = 0
	}
	return id, err
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
	if err := s.writeRecordsLocked(g, buf, c); err != nil {
		return 0, err
	}
	return s.nextID - 1, nil
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

// AppendBatch stores records of one class, like one Append per payload but
// with one lock and one write per segment they land in. It returns the ID
// of the first record and how many were stored; their IDs follow in order.
// It is how a writer that gets several records at once (a local API
// request, a source's sample set) stores them: the system call per record
// is the largest cost of storing a measurement. With an error, the records
// from the one that failed on were not stored, as with a sequence of
// Appends that failed at that record (under SyncAlways, a failed fsync
// leaves them stored, as Append does, and stored counts them).
func (s *Spool) AppendBatch(c Class, payloads [][]byte) (first uint64, stored int, err error) {
	if c != ClassRaw && c != ClassEvent {
		return 0, 0, fmt.Errorf("append record: %w: %d", ErrUnknownClass, uint8(c))
	}
	if len(payloads) == 0 {
		return 0, 0, nil
	}
	total := 0
	for i, p := range payloads {
		if len(p) > s.opts.MaxRecordBytes {
			return 0, 0, fmt.Errorf("append record %d: %w: %d bytes, limit %d", i, ErrRecordTooLarge, len(p), s.opts.MaxRecordBytes)
		}
		total += recordSize(len(p))
	}
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:0]
	now := s.now().UnixNano()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		bufPool.Put(bp)
		return 0, 0, ErrClosed
	}
	s.makeRoom(int64(total))
	first = s.nextID
	for i := 0; i < len(payloads) && err == nil; {
		// The records that fit in the active segment, at least one.
		g := s.active()
		buf = buf[:0]
		j := i
		for ; j < len(payloads); j++ {
			n := recordSize(len(payloads[j]))
			if (g.count > 0 || j > i) && g.size+int64(len(buf)+n) > s.opts.SegmentBytes {
				break
			}
			buf = appendRecord(buf, c, now, payloads[j])
		}
		if j == i {
			if err = s.rotate(); err != nil {
				s.st.writeErrors++
			}
			continue
		}
		err = s.writeRecordsLocked(g, buf, c)
		i = j
	}
	kick := s.opts.Sync == SyncBatch && s.dirtyBytes >= s.opts.SyncBytes
	last := s.nextID - 1
	stored = int(s.nextID - first)
	s.mu.Unlock()

	if cap(buf) <= 64<<10 {
		*bp = buf
		bufPool.Put(bp)
	}
	if err != nil {
		return first, stored, fmt.Errorf("append record: %w", err)
	}
	switch {
	case s.opts.Sync == SyncAlways:
		if err := s.syncTo(last); err != nil {
			return first, stored, fmt.Errorf("append record: %w", err)
		}
	case kick:
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return first, stored, nil
}

// recordSize is the encoded size of a record with an n-byte payload.
func recordSize(n int) int { return recordOverhead + n }

// writeRecordsLocked writes encoded records to the end of segment g with one
// write and assigns their IDs. s.mu is held.
func (s *Spool) writeRecordsLocked(g *segment, buf []byte, c Class) error {
	off := g.size
	if _, err := g.wf.WriteAt(buf, off); err != nil {
		s.st.writeErrors++
		// Drop whatever part was written so the next record starts at off.
		if terr := g.wf.Truncate(off); terr != nil {
			s.log.Warn("truncate after failed write", "file", g.filename, "err", terr)
		}
		return ioErr("write segment", s.path(g.filename), err, nil)
	}
	for k := 0; k < len(buf); {
		if g.count%indexStride == 0 {
			g.index = append(g.index, off+int64(k))
		}
		s.nextID++
		g.count++
		if c.keep() {
			g.nKeep++
		}
		k += frameHeaderSize + int(binary.LittleEndian.Uint32(buf[k:]))
	}
	n := int64(len(buf))
	g.size += n
	s.totalBytes += n
	s.dirtyBytes += n
	if s.opts.Sync == SyncNever {
		s.signalReady()
	}
	return nil
}
