package spool

import "time"

// counters are the cumulative numbers behind Stats; guarded by Spool.mu.
type counters struct {
	droppedRaw, droppedEvents, movedEvents uint64
	tornRecords                            uint64
	tornBytes                              int64
	corruptSegments                        int
	syncs, syncErrors, writeErrors         uint64
	lastSync, totalSync                    time.Duration
}

// Stats is a snapshot of the spool's state and counters since Open.
type Stats struct {
	// Records is the number of unacknowledged records (the depth).
	Records uint64
	// Bytes is the total size of the segment files, the quantity bounded by
	// Options.MaxBytes (acknowledged records count until their segment is
	// deleted).
	Bytes int64
	// Segments is the number of segment files.
	Segments int
	// OldestAge is the age, by Options.Clock, of the oldest unacknowledged
	// record; zero when there is none.
	OldestAge time.Duration
	// NextID is the ID the next Append will get.
	NextID uint64
	// DurableID is the durable watermark (see Durable).
	DurableID uint64
	// AckedID is the acknowledgement watermark: every record up to it is
	// acknowledged or gone.
	AckedID uint64

	// DroppedOverflow counts raw records dropped, unacknowledged, to stay
	// under MaxBytes.
	DroppedOverflow uint64
	// DroppedOverflowEvents counts event records dropped to stay under
	// MaxBytes when no raw record was left to drop.
	DroppedOverflowEvents uint64
	// MovedEvents counts event records re-appended (with a new ID) because
	// their segment was dropped on overflow.
	MovedEvents uint64
	// TornRecords counts damaged records found: at Open one per truncated
	// segment tail (a torn last write or a bad record), later one per
	// record lost to damage found while reading.
	TornRecords uint64
	// TornBytes counts the bytes cut off with them, including unreadable
	// segment headers.
	TornBytes int64
	// CorruptSegments counts segment files set aside at Open as unreadable
	// (renamed to *.seg.corrupt; not counted in Bytes).
	CorruptSegments int

	// Syncs counts successful fsync rounds (group commits).
	Syncs uint64
	// SyncErrors counts failed fsync rounds.
	SyncErrors uint64
	// WriteErrors counts failed appends (disk full or other write errors).
	WriteErrors uint64
	// LastSyncLatency is the wall-clock duration of the last fsync round.
	LastSyncLatency time.Duration
	// AvgSyncLatency is the mean duration of the fsync rounds.
	AvgSyncLatency time.Duration
}

// Stats returns a snapshot of the spool's state and counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Bytes:                 s.totalBytes,
		Segments:              len(s.segs),
		NextID:                s.nextID,
		DurableID:             s.synced,
		AckedID:               s.acked,
		DroppedOverflow:       s.st.droppedRaw,
		DroppedOverflowEvents: s.st.droppedEvents,
		MovedEvents:           s.st.movedEvents,
		TornRecords:           s.st.tornRecords,
		TornBytes:             s.st.tornBytes,
		CorruptSegments:       s.st.corruptSegments,
		Syncs:                 s.st.syncs,
		SyncErrors:            s.st.syncErrors,
		WriteErrors:           s.st.writeErrors,
		LastSyncLatency:       s.st.lastSync,
	}
	if s.st.syncs > 0 {
		st.AvgSyncLatency = s.st.totalSync / time.Duration(s.st.syncs)
	}
	for _, g := range s.segs {
		if g.count == 0 {
			continue
		}
		if lo := max(g.id, s.acked+1); lo <= g.lastID() {
			st.Records += g.lastID() - lo + 1
		}
	}
	st.Records -= min(st.Records, uint64(len(s.ackSet)))
	if id, ok := s.firstUnacked(0); ok && !s.closed {
		if nano, ok := s.recordTime(id); ok {
			st.OldestAge = s.clk.Now().Sub(time.Unix(0, nano))
		}
	}
	return st
}

// recordTime returns the append time of record id. s.mu is held.
func (s *Spool) recordTime(id uint64) (int64, bool) {
	if s.oldest.id == id && id != 0 {
		return s.oldest.nano, true
	}
	i := s.findSeg(id)
	if i == len(s.segs) || !s.segs[i].contains(id) {
		return 0, false
	}
	g := s.segs[i]
	f, err := s.fileFor(g)
	if err != nil {
		return 0, false
	}
	off, err := s.seek(g, f, id)
	if err != nil {
		return 0, false
	}
	s.rr.reset(f, off, g.size)
	rec, err := s.rr.next()
	if err != nil {
		return 0, false
	}
	s.oldest.id, s.oldest.nano = id, rec.unixNano
	return rec.unixNano, true
}
