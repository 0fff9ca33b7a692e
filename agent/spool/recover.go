package spool

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// recover rebuilds the in-memory state from the directory and creates a
// fresh active segment. Only an unknown major format version or a failure to
// create the active segment makes it fail; damaged data is truncated or
// quarantined and counted.
func (s *Spool) recover() error {
	entries, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("list spool directory: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, tmpExt) {
			// A temporary file is an unfinished ack write or carry-over copy;
			// the file it was meant to replace is still intact.
			if err := s.fs.Remove(s.path(name)); err != nil {
				s.log.Warn("remove temporary file", "file", name, "err", err)
			}
			continue
		}
		if id, ok := parseSegmentName(name); ok && e.Type().IsRegular() {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)

	acked, err := s.readAckFile()
	if err != nil {
		return err
	}
	s.acked, s.ackPersisted = acked, acked

	next := max(1, acked+1)
	for i, id := range ids {
		g, after, err := s.recoverSegment(id, i == len(ids)-1)
		if err != nil {
			return err
		}
		next = max(next, after)
		if g != nil {
			s.segs = append(s.segs, g)
			s.totalBytes += g.size
		}
	}
	s.resolveOverlaps()

	g, err := s.createSegment(next)
	if err != nil {
		return err
	}
	s.segs = append(s.segs, g)
	s.totalBytes += g.size
	s.nextID = next
	s.synced = next - 1
	s.deleteAcked()
	if s.st.tornRecords > 0 || s.st.corruptSegments > 0 {
		s.log.Warn("spool recovered with losses", "torn_records", s.st.tornRecords,
			"torn_bytes", s.st.tornBytes, "corrupt_segments", s.st.corruptSegments)
	}
	s.log.Debug("spool opened", "segments", len(s.segs), "next_id", next, "acked", acked)
	return nil
}

// recoverSegment validates one segment file. It returns the segment (nil if
// the file held no records or was set aside) and the lowest ID that may be
// handed out after it.
func (s *Spool) recoverSegment(id uint64, last bool) (*segment, uint64, error) {
	name := segmentName(id)
	path := s.path(name)
	f, err := s.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open segment %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("stat segment %s: %w", path, err)
	}
	size := fi.Size()
	res, err := scanSegment(f, size, s.rr, nil)
	if err == nil && res.header.firstID != id {
		err = fmt.Errorf("%w: header says first ID %d", ErrCorrupt, res.header.firstID)
	}
	if errors.Is(err, ErrUnsupportedVersion) {
		_ = f.Close()
		return nil, 0, fmt.Errorf("open segment %s: %w", path, err)
	}
	if err != nil {
		_ = f.Close()
		// IDs up to the most records the file could hold may have been handed
		// out (and acknowledged); never reuse them.
		after := id + uint64(max(size, 0)/recordOverhead) + 1
		if size <= segHeaderSize {
			// A crash between creating the file and its header reaching disk.
			s.log.Warn("removing segment with torn header", "file", name, "bytes", size, "last", last)
			s.st.tornBytes += size
			if rerr := s.fs.Remove(path); rerr != nil {
				return nil, 0, fmt.Errorf("remove torn segment %s: %w", path, rerr)
			}
			return nil, id, nil
		}
		s.log.Error("quarantining unreadable segment", "file", name, "bytes", size, "err", err)
		s.st.corruptSegments++
		s.st.tornBytes += size
		if rerr := s.fs.Rename(path, path+".corrupt"); rerr != nil {
			return nil, 0, fmt.Errorf("quarantine segment %s: %w", path, errors.Join(err, rerr))
		}
		return nil, after, nil
	}
	if res.torn {
		lost := size - res.end
		s.log.Warn("truncating torn segment tail", "file", name, "valid_records", res.count, "torn_bytes", lost, "last", last)
		s.st.tornRecords++
		s.st.tornBytes += lost
		if err := f.Truncate(res.end); err != nil {
			s.log.Warn("truncate segment", "file", name, "err", err)
		}
	}
	if res.count > 0 {
		// What a killed process wrote may still be only in the page cache:
		// make it durable before readers may send it.
		if err := f.Sync(); err != nil {
			s.log.Warn("fsync recovered segment", "file", name, "err", err)
		}
	}
	if err := f.Close(); err != nil {
		return nil, 0, fmt.Errorf("close segment %s: %w", path, err)
	}
	if res.count == 0 {
		if err := s.fs.Remove(path); err != nil {
			return nil, 0, fmt.Errorf("remove empty segment %s: %w", path, err)
		}
		return nil, id, nil
	}
	g := &segment{
		id: id, count: res.count, nKeep: res.nKeep,
		hdrSize: res.header.size, size: res.end, index: res.index,
		synced: res.end, syncedCount: res.count,
		sealed: true, filename: name,
	}
	return g, g.id + g.count, nil
}

// resolveOverlaps cuts a segment whose tail was copied into the next one by
// a carry-over after an fsync failure, when a crash came before the original
// could be truncated. The copy is the one kept.
func (s *Spool) resolveOverlaps() {
	for i := 1; i < len(s.segs); i++ {
		prev, cur := s.segs[i-1], s.segs[i]
		if cur.id > prev.lastID() {
			continue
		}
		s.log.Warn("segments overlap; keeping the newer copy", "older", prev.filename, "newer", cur.filename)
		if cur.id <= prev.id {
			s.removeSegment(i - 1)
			i--
			continue
		}
		if err := s.truncateSeg(prev, cur.id-prev.id); err != nil {
			s.log.Warn("truncate overlapping segment", "file", prev.filename, "err", err)
		}
	}
}

// truncateSeg keeps the first keep records of g and cuts the rest, in memory
// and (best effort) on disk.
func (s *Spool) truncateSeg(g *segment, keep uint64) error {
	if keep >= g.count {
		return nil
	}
	f, err := s.fileFor(g)
	if err != nil {
		return err
	}
	cut := g.hdrSize
	nKeep := 0
	res, err := scanSegment(f, g.size, newRecordReader(), func(k uint64, off int64, rec rawRecord) bool {
		if k == keep {
			cut = off
			return false
		}
		if rec.class.keep() {
			nKeep++
		}
		cut = off + rec.size
		return true
	})
	if err != nil {
		return err
	}
	keep = min(keep, res.count)
	s.dropAckedRange(g.id+keep, g.lastID())
	s.totalBytes -= g.size - cut
	g.count, g.nKeep, g.size = keep, nKeep, cut
	g.index = g.index[:min(len(g.index), int((keep+indexStride-1)/indexStride))]
	g.synced, g.syncedCount = min(g.synced, cut), min(g.syncedCount, keep)
	if s.cursor.seg == g {
		s.cursor = cursor{}
	}
	if g.wf != nil {
		return g.wf.Truncate(cut)
	}
	tf, err := s.fs.OpenFile(s.path(g.filename), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return errors.Join(tf.Truncate(cut), tf.Close())
}

// createSegment creates the segment file whose first record will be id and
// makes its header and directory entry durable (except under SyncNever).
func (s *Spool) createSegment(id uint64) (*segment, error) {
	name := segmentName(id)
	path := s.path(name)
	f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, ioErr("create segment", path, err, nil)
	}
	fail := func(err error, kind error) (*segment, error) {
		_ = f.Close()
		_ = s.fs.Remove(path)
		return nil, ioErr("create segment", path, err, kind)
	}
	hdr := encodeSegHeader(id)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fail(err, nil)
	}
	g := &segment{id: id, hdrSize: int64(len(hdr)), size: int64(len(hdr)), wf: f, filename: name}
	g.index = make([]int64, 0, 8)
	if s.opts.Sync == SyncNever {
		s.dirDirty = true
		return g, nil
	}
	if err := f.Sync(); err != nil {
		return fail(err, ErrSyncFailed)
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		return fail(err, ErrSyncFailed)
	}
	g.synced = g.size
	return g, nil
}
