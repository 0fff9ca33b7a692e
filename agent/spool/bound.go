package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// makeRoom drops records until need more bytes fit under MaxBytes. It never
// fails: if nothing more can be dropped (or dropping fails), the record is
// written anyway and the bound is exceeded until the next Append. s.mu is
// held.
//
// Dropping works on whole segments. The victim is the oldest sealed segment
// that holds raw records; its unacknowledged events are first re-appended to
// the active segment (with new IDs), then the file is deleted. Only when no
// raw record is left anywhere does the oldest segment go with its events.
func (s *Spool) makeRoom(need int64) {
	for iter := 0; s.totalBytes+need+s.rotationCost(need) > s.opts.MaxBytes; iter++ {
		if iter > 4*len(s.segs)+8 {
			s.log.Warn("spool bound exceeded: cannot drop more", "bytes", s.totalBytes, "max_bytes", s.opts.MaxBytes)
			return
		}
		i, keepEvents := s.pickVictim()
		if i < 0 {
			return
		}
		if i == len(s.segs)-1 {
			// Only the active segment can give: seal it and try again.
			if s.active().count == 0 {
				return
			}
			if err := s.rotate(); err != nil {
				s.log.Warn("rotate segment to drop records", "err", err)
				return
			}
			continue
		}
		if err := s.dropSegment(i, keepEvents); err != nil {
			s.log.Warn("drop segment on overflow", "file", s.segs[i].filename, "err", err)
			return
		}
	}
}

// rotationCost is the header of the segment that writing n more bytes will
// start, if it does.
func (s *Spool) rotationCost(n int64) int64 {
	if a := s.active(); a.count > 0 && a.size+n > s.opts.SegmentBytes {
		return segHeaderSize
	}
	return 0
}

// pickVictim returns the index of the segment to drop and whether its events
// must be kept, or -1 if nothing can be dropped.
func (s *Spool) pickVictim() (int, bool) {
	for i, g := range s.segs {
		if uint64(g.nKeep) < g.count {
			return i, true
		}
	}
	for i, g := range s.segs {
		if g.count > 0 {
			return i, false
		}
	}
	return -1, false
}

// movedEvent is an unacknowledged event read from a segment being dropped.
type movedEvent struct {
	id       uint64
	class    Class
	unixNano int64
	payload  []byte
}

// dropSegment deletes the sealed segment s.segs[i], counting its
// unacknowledged records as dropped; with keepEvents its unacknowledged
// events are first re-appended. s.mu is held.
func (s *Spool) dropSegment(i int, keepEvents bool) error {
	g := s.segs[i]
	var events []movedEvent
	var droppedRaw, droppedEvents uint64
	if g.nKeep == 0 {
		for id := g.id; id <= g.lastID(); id++ {
			if !s.isAcked(id) {
				droppedRaw++
			}
		}
	} else {
		f, err := s.fileFor(g)
		if err != nil {
			return err
		}
		rr := newRecordReader()
		rr.reset(f, g.hdrSize, g.size)
		for id := g.id; id <= g.lastID(); id++ {
			rec, err := rr.next()
			if errors.Is(err, errTorn) || errors.Is(err, io.EOF) {
				s.st.tornRecords += g.lastID() - id + 1
				s.st.tornBytes += g.size - rr.off
				break
			}
			if err != nil {
				return fmt.Errorf("read segment %s: %w", g.filename, err)
			}
			switch {
			case s.isAcked(id):
			case !rec.class.keep():
				droppedRaw++
			case keepEvents:
				events = append(events, movedEvent{id, rec.class, rec.unixNano, slices.Clone(rec.payload)})
			default:
				droppedEvents++
			}
		}
	}
	if len(events) > 0 {
		var buf []byte
		for _, e := range events {
			buf = appendRecord(buf[:0], e.class, e.unixNano, e.payload)
			id, err := s.writeLocked(buf, e.class)
			if err != nil {
				return fmt.Errorf("move event %d: %w", e.id, err)
			}
			s.noteMoved(e.id, id)
		}
		if s.opts.Sync != SyncNever {
			// The copies must be on disk before the originals go.
			for _, h := range s.segs[i+1:] {
				if h.wf != nil && h.synced < h.size {
					if err := h.wf.Sync(); err != nil {
						return ioErr("fsync segment", s.path(h.filename), err, ErrSyncFailed)
					}
				}
			}
		}
		s.st.movedEvents += uint64(len(events))
	}
	s.st.droppedRaw += droppedRaw
	s.st.droppedEvents += droppedEvents
	s.log.Debug("dropped segment on overflow", "file", g.filename, "raw", droppedRaw, "events", droppedEvents, "moved", len(events))
	s.removeSegment(i)
	s.advanceAcks()
	return nil
}

// noteMoved records that event old now lives at new, so acknowledging the
// original (already in flight to the server) also acknowledges the copy.
func (s *Spool) noteMoved(old, new uint64) {
	for k, v := range s.moved {
		if v == old {
			s.moved[k] = new
		}
	}
	s.moved[old] = new
	if len(s.moved) > 4096 {
		for k, v := range s.moved {
			if s.isAcked(v) || !s.isLive(v) {
				delete(s.moved, k)
			}
		}
	}
}

// removeSegment deletes the sealed segment s.segs[i] from memory and disk.
// s.mu is held.
func (s *Spool) removeSegment(i int) {
	g := s.segs[i]
	if !g.sealed {
		return
	}
	if err := s.fs.Remove(s.path(g.filename)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("remove segment", "file", g.filename, "err", err)
	}
	if g.wf != nil {
		if g.refs > 0 {
			g.closeWF = true
		} else {
			_ = g.wf.Close()
			g.wf = nil
		}
	}
	if s.readSeg == g {
		s.closeReadFile()
	}
	if s.cursor.seg == g {
		s.cursor = cursor{}
	}
	if g.count > 0 {
		s.dropAckedRange(g.id, g.lastID())
	}
	s.segs = slices.Delete(s.segs, i, i+1)
	s.totalBytes -= g.size
}

// dropAckedRange forgets out-of-order acknowledgements of records that no
// longer exist.
func (s *Spool) dropAckedRange(lo, hi uint64) {
	if lo > hi {
		return
	}
	for id := range s.ackSet {
		if id >= lo && id <= hi {
			delete(s.ackSet, id)
		}
	}
}
