package spool_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
)

// recordSize is the on-disk size of a record: 8 bytes framing (length,
// CRC32C) + 10 bytes record header + payload.
func recordSize(p []byte) int64 { return int64(8 + 10 + len(p)) }

// lastDataSegment returns the newest segment file that holds records.
func lastDataSegment(t *testing.T, dir string) string {
	t.Helper()
	files := segmentFiles(t, dir)
	for i := len(files) - 1; i >= 0; i-- {
		fi, err := os.Stat(files[i])
		require.NoError(t, err)
		if fi.Size() > 20 {
			return files[i]
		}
	}
	t.Fatal("no segment with records")
	return ""
}

// spoolWith writes n records into a closed spool and returns its directory.
func spoolWith(t *testing.T, n int) string {
	dir := t.TempDir()
	s := openT(t, dir, testOptions(spool.SyncAlways))
	appendN(t, s, 0, n)
	require.NoError(t, s.Close())
	return dir
}

func TestTornTailEveryOffset(t *testing.T) {
	const n = 40 // all in one 4 KiB segment
	base := spoolWith(t, n)
	seg := lastDataSegment(t, base)
	fi, err := os.Stat(seg)
	require.NoError(t, err)
	end := fi.Size()
	start := end - recordSize(payload(n-1))

	for cut := start; cut < end; cut++ {
		dir := copyDir(t, base)
		require.NoError(t, os.Truncate(filepath.Join(dir, filepath.Base(seg)), cut))
		s := openT(t, dir, testOptions(spool.SyncAlways))
		recs := readAll(t, s)
		require.Len(t, recs, n-1, "cut at %d", cut)
		for i, r := range recs {
			require.Equal(t, payload(i), r.Payload)
		}
		st := s.Stats()
		if cut == start {
			require.Zero(t, st.TornRecords, "a cut at a record boundary loses a whole record, nothing torn")
		} else {
			require.Equal(t, uint64(1), st.TornRecords, "cut at %d", cut)
			require.Equal(t, cut-start, st.TornBytes)
		}
		// The torn bytes are gone from disk and the spool keeps working.
		id, err := s.Append(spool.ClassRaw, []byte("after"))
		require.NoError(t, err)
		require.Equal(t, uint64(n), id, "the lost record's ID is reused: it was never durable")
		require.NoError(t, s.Close())
		s = openT(t, dir, testOptions(spool.SyncAlways))
		require.Len(t, readAll(t, s), n)
		require.Zero(t, s.Stats().TornRecords)
		require.NoError(t, s.Close())
	}
}

func TestCorruptByteInLastRecord(t *testing.T) {
	const n = 40
	base := spoolWith(t, n)
	seg := lastDataSegment(t, base)
	orig, err := os.ReadFile(seg)
	require.NoError(t, err)
	end := int64(len(orig))
	start := end - recordSize(payload(n-1))
	for off := start; off < end; off++ {
		dir := copyDir(t, base)
		b := append([]byte(nil), orig...)
		b[off] ^= 0x5a
		require.NoError(t, os.WriteFile(filepath.Join(dir, filepath.Base(seg)), b, 0o644))
		s := openT(t, dir, testOptions(spool.SyncAlways))
		require.Len(t, readAll(t, s), n-1, "flip at %d", off)
		require.Equal(t, uint64(1), s.Stats().TornRecords)
		require.NoError(t, s.Close())
	}
}

func TestCorruptRecordMidSegmentKeepsOtherSegments(t *testing.T) {
	dir := spoolWith(t, 600) // several segments
	files := segmentFiles(t, dir)
	require.Greater(t, len(files), 3)
	victim := files[1]
	b, err := os.ReadFile(victim)
	require.NoError(t, err)
	// Damage the payload of the 11th record of the second segment.
	off := 20 + 10*recordSize(payload(0)) + 18
	b[off] ^= 0xff
	require.NoError(t, os.WriteFile(victim, b, 0o644))

	s := openT(t, dir, testOptions(spool.SyncAlways))
	defer s.Close()
	recs := readAll(t, s)
	st := s.Stats()
	require.Equal(t, uint64(1), st.TornRecords)
	lostBytes := int64(len(b)) - (20 + 10*recordSize(payload(0)))
	require.Equal(t, lostBytes, st.TornBytes)
	lost := int(lostBytes / recordSize(payload(0)))
	require.Len(t, recs, 600-lost)
	// IDs stay increasing; the records after the damage in that segment are
	// gone, everything else is intact.
	for i := 1; i < len(recs); i++ {
		require.Greater(t, recs[i].ID, recs[i-1].ID)
		require.Equal(t, payload(int(recs[i].ID-1)), recs[i].Payload)
	}
	require.Equal(t, uint64(600), recs[len(recs)-1].ID)
}

func TestHeaderlessLastSegment(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{name: "zero length", data: nil},
		{name: "partial magic", data: []byte("MW")},
		{name: "partial header", data: []byte("MWSP\x01\x00\x14\x00\x29\x00\x00")},
		{name: "zeroed header", data: make([]byte, 20)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := spoolWith(t, 40)
			// A crash right after creating the next segment file.
			name := filepath.Join(dir, "00000000000000000041.seg")
			require.NoError(t, os.WriteFile(name, tc.data, 0o644))
			s := openT(t, dir, testOptions(spool.SyncAlways))
			defer s.Close()
			require.Len(t, readAll(t, s), 40)
			require.Equal(t, int64(len(tc.data)), s.Stats().TornBytes)
			id, err := s.Append(spool.ClassRaw, nil)
			require.NoError(t, err)
			require.Equal(t, uint64(41), id)
		})
	}
}

func TestGarbageSegmentIsQuarantined(t *testing.T) {
	dir := spoolWith(t, 600)
	files := segmentFiles(t, dir)
	victim := files[1]
	fi, err := os.Stat(victim)
	require.NoError(t, err)
	garbage := make([]byte, fi.Size())
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	require.NoError(t, os.WriteFile(victim, garbage, 0o644))

	s := openT(t, dir, testOptions(spool.SyncAlways))
	st := s.Stats()
	require.Equal(t, 1, st.CorruptSegments)
	require.Equal(t, fi.Size(), st.TornBytes)
	recs := readAll(t, s)
	require.NotEmpty(t, recs)
	require.Equal(t, uint64(1), recs[0].ID, "segments before the bad one are kept")
	require.Equal(t, uint64(600), recs[len(recs)-1].ID, "segments after it are kept")
	require.FileExists(t, victim+".corrupt")
	id, err := s.Append(spool.ClassRaw, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(601), id)
	require.NoError(t, s.Close())
}

func TestDamagedAckFileMeansResend(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, testOptions(spool.SyncAlways))
	appendN(t, s, 0, 10)
	require.NoError(t, s.Ack(4))
	require.NoError(t, s.Close())
	good, err := os.ReadFile(filepath.Join(dir, "ack"))
	require.NoError(t, err)
	badCRC := append([]byte(nil), good...)
	badCRC[9] ^= 1
	for i, bad := range [][]byte{[]byte("garbage"), nil, badCRC} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "ack"), bad, 0o644))
		s = openT(t, dir, testOptions(spool.SyncAlways))
		require.Len(t, readAll(t, s), 10+i, "at-least-once: a lost watermark re-sends")
		id, err := s.Append(spool.ClassRaw, nil)
		require.NoError(t, err)
		require.Equal(t, uint64(11+i), id)
		require.NoError(t, s.Close())
	}
}

func TestLeftoverTempFilesRemoved(t *testing.T) {
	dir := spoolWith(t, 5)
	tmp := filepath.Join(dir, "ack.tmp")
	require.NoError(t, os.WriteFile(tmp, []byte("half"), 0o644))
	s := openT(t, dir, testOptions(spool.SyncAlways))
	defer s.Close()
	require.NoFileExists(t, tmp)
	require.Len(t, readAll(t, s), 5)
}

// flipByte damages one byte of a file in place (same inode, as bit rot
// would).
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, 1)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
}

func TestDamageFoundWhileReading(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, testOptions(spool.SyncAlways))
	defer s.Close()
	appendN(t, s, 0, 600)
	files := segmentFiles(t, dir)
	require.Greater(t, len(files), 3)
	size := recordSize(payload(0))

	// Bit rot in a sealed segment after Open: the reader cuts that segment
	// at the damaged record and carries on with the next one.
	flipByte(t, files[1], 20+5*size+20)
	recs := readAll(t, s)
	st := s.Stats()
	require.Positive(t, st.TornRecords)
	require.Equal(t, 600-int(st.TornRecords), len(recs))
	require.Equal(t, uint64(600), recs[len(recs)-1].ID)
	require.Equal(t, uint64(len(recs)), st.Records)

	// Damage in the active segment: it is sealed and cut, and new records go
	// to a fresh segment.
	active := files[len(files)-1]
	flipByte(t, active, 20+size+20)
	before := s.Stats().TornRecords
	recs = readAll(t, s)
	require.Greater(t, s.Stats().TornRecords, before)
	id, err := s.Append(spool.ClassRaw, []byte("after damage"))
	require.NoError(t, err)
	recs2 := readAll(t, s)
	require.Len(t, recs2, len(recs)+1)
	require.Equal(t, id, recs2[len(recs2)-1].ID)
	require.Equal(t, "after damage", string(recs2[len(recs2)-1].Payload))

	// Everything acknowledged still cleans up, and a reopen agrees.
	require.NoError(t, s.Ack(id))
	require.Equal(t, uint64(0), s.Stats().Records)
	require.NoError(t, s.Close())
	s = openT(t, dir, testOptions(spool.SyncAlways))
	require.Empty(t, readAll(t, s))
}
