package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Peek returns up to maxRecords of the oldest unacknowledged records, in ID
// order, without removing them. It is ReadFrom(0, maxRecords, maxBytes).
func (s *Spool) Peek(maxRecords, maxBytes int) ([]Record, error) {
	return s.ReadFrom(0, maxRecords, maxBytes)
}

// ReadFrom returns up to maxRecords unacknowledged records with IDs greater
// than afterID, in ID order, whose payloads total at most maxBytes; the
// first record is returned even if it alone exceeds maxBytes, so a large
// record never stalls the reader. maxRecords or maxBytes of zero or less
// mean no limit.
//
// A sender that keeps batches in flight passes the ID of the last record of
// the previous batch as afterID. Only records that are durable (under
// SyncNever: written) are returned; see Wait to block for more. Records
// acknowledged meanwhile are skipped.
func (s *Spool) ReadFrom(afterID uint64, maxRecords, maxBytes int) ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	limit := s.readable()
	var out []Record
	total := 0
	id := afterID + 1
	if id <= s.acked {
		id = s.acked + 1
	}
	for id <= limit && (maxRecords <= 0 || len(out) < maxRecords) {
		i := s.findSeg(id)
		if i == len(s.segs) || s.segs[i].count == 0 {
			break
		}
		g := s.segs[i]
		id = max(id, g.id)
		next, stopped, err := s.visitSeg(g, id, limit, func(id uint64, rec rawRecord) bool {
			if s.isAcked(id) {
				return true
			}
			if maxRecords > 0 && len(out) >= maxRecords {
				return false
			}
			if maxBytes > 0 && len(out) > 0 && total+len(rec.payload) > maxBytes {
				return false
			}
			total += len(rec.payload)
			p := make([]byte, len(rec.payload))
			copy(p, rec.payload)
			out = append(out, Record{ID: id, Class: rec.class, Time: time.Unix(0, rec.unixNano), Payload: p})
			return true
		})
		if err != nil {
			return out, fmt.Errorf("read records: %w", err)
		}
		if stopped {
			break
		}
		id = next
	}
	return out, nil
}

// visitSeg visits the records of g from ID from up to limit, stopping early
// when visit returns false (that record is not consumed). It returns the ID
// after the last consumed record and whether visit stopped it. A damaged
// record cuts the segment at that point and counts the loss. s.mu is held.
func (s *Spool) visitSeg(g *segment, from, limit uint64, visit func(uint64, rawRecord) bool) (uint64, bool, error) {
	f, err := s.fileFor(g)
	if err != nil {
		return from, false, err
	}
	off, err := s.seek(g, f, from)
	if err != nil {
		return s.damaged(g, from, err)
	}
	rr := s.rr
	rr.reset(f, off, g.size)
	id := from
	last := min(g.lastID(), limit)
	for ; id <= last; id++ {
		at := rr.off
		rec, err := rr.next()
		if err != nil {
			return s.damaged(g, id, err)
		}
		if !visit(id, rec) {
			s.cursor = cursor{seg: g, id: id, off: at}
			return id, true, nil
		}
	}
	s.cursor = cursor{seg: g, id: id, off: rr.off}
	return id, false, nil
}

// seek returns the offset of record id in g, from the cursor or the sparse
// index. s.mu is held.
func (s *Spool) seek(g *segment, f io.ReaderAt, id uint64) (int64, error) {
	if s.cursor.seg == g && s.cursor.id == id {
		return s.cursor.off, nil
	}
	k := id - g.id
	off := g.index[k/indexStride]
	rr := s.rr
	rr.reset(f, off, g.size)
	for range k % indexStride {
		if _, err := rr.next(); err != nil {
			return 0, err
		}
	}
	return rr.off, nil
}

// damaged handles a record of g that could not be decoded although recovery
// validated it (bit rot, or an outside truncation): the segment is cut before
// it and the loss counted. I/O errors are returned as they are.
func (s *Spool) damaged(g *segment, id uint64, err error) (uint64, bool, error) {
	if !errors.Is(err, errTorn) && !errors.Is(err, io.EOF) {
		return id, false, fmt.Errorf("read segment %s: %w", g.filename, err)
	}
	lost := g.lastID() - id + 1
	s.log.Error("spool segment damaged after open; dropping its tail", "file", g.filename, "id", id, "records", lost)
	if !g.sealed {
		// New records must not land behind the damage.
		if rerr := s.rotate(); rerr != nil {
			return id, false, fmt.Errorf("read segment %s: %w", g.filename, errors.Join(err, rerr))
		}
	}
	before := g.size
	if terr := s.truncateSeg(g, id-g.id); terr != nil {
		s.log.Warn("truncate damaged segment", "file", g.filename, "err", terr)
	}
	s.st.tornRecords += lost
	s.st.tornBytes += before - g.size
	next := g.id + g.count
	if g.count == 0 {
		if i := s.findSegIndex(g); i >= 0 {
			s.removeSegment(i)
		}
	}
	s.advanceAcks()
	return max(next, id+1), false, nil
}

// findSegIndex returns the index of g in s.segs, or -1.
func (s *Spool) findSegIndex(g *segment) int {
	for i, h := range s.segs {
		if h == g {
			return i
		}
	}
	return -1
}

// fileFor returns a handle to read g: its write handle if open, otherwise a
// cached read-only handle (one at a time). s.mu is held.
func (s *Spool) fileFor(g *segment) (file, error) {
	if g.wf != nil {
		return g.wf, nil
	}
	if s.readSeg == g && s.readFile != nil {
		return s.readFile, nil
	}
	s.closeReadFile()
	f, err := s.fs.OpenFile(s.path(g.filename), os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open segment: %w", err)
	}
	s.readSeg, s.readFile = g, f
	return f, nil
}

func (s *Spool) closeReadFile() {
	if s.readFile != nil {
		_ = s.readFile.Close()
	}
	s.readSeg, s.readFile = nil, nil
}

// Wait blocks until an unacknowledged record with an ID greater than afterID
// can be read, ctx is done (returning ctx.Err()) or the spool is closed
// (returning ErrClosed).
func (s *Spool) Wait(ctx context.Context, afterID uint64) error {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if id, ok := s.firstUnacked(afterID); ok && id <= s.readable() {
			s.mu.Unlock()
			return nil
		}
		if s.ready == nil {
			s.ready = make(chan struct{})
		}
		ch := s.ready
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return ErrClosed
		}
	}
}

// firstUnacked returns the smallest stored, unacknowledged ID above afterID.
func (s *Spool) firstUnacked(afterID uint64) (uint64, bool) {
	id := max(afterID, s.acked)
	for {
		n, ok := s.nextLive(id)
		if !ok {
			return 0, false
		}
		if _, acked := s.ackSet[n]; !acked {
			return n, true
		}
		id = n
	}
}
