package spool_test

import (
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// The helpers below encode the 1.x format by hand, independently of the
// package, so these tests pin the on-disk layout documented in
// docs/spool.md.

// segHeader encodes a segment header with extra bytes before the CRC, as a
// later minor version may write.
func segHeader(major, minor byte, firstID uint64, extra []byte) []byte {
	n := 20 + len(extra)
	b := []byte("MWSP")
	b = append(b, major, minor)
	b = binary.LittleEndian.AppendUint16(b, uint16(n))
	b = binary.LittleEndian.AppendUint64(b, firstID)
	b = append(b, extra...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// encodeRecord encodes a record whose header carries extra bytes, as a
// later minor version may write.
func encodeRecord(class byte, t time.Time, extra, payload []byte) []byte {
	body := []byte{byte(10 + len(extra)), class}
	body = binary.LittleEndian.AppendUint64(body, uint64(t.UnixNano()))
	body = append(body, extra...)
	body = append(body, payload...)
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	crc := crc32.Update(crc32.Checksum(b, castagnoli), castagnoli, body)
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, body...)
}

func TestFutureMinorVersionIsRead(t *testing.T) {
	dir := spoolWith(t, 10)
	seg := lastDataSegment(t, dir)
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	records := b[20:]

	// A header two minors ahead with 12 bytes of fields this build does not
	// know, and one more record whose header has 4 unknown bytes.
	future := segHeader(1, 2, 1, []byte("future-field"))
	future = append(future, records...)
	future = append(future, encodeRecord(1, epoch, []byte{9, 9, 9, 9}, []byte("from 1.2"))...)
	require.NoError(t, os.WriteFile(seg, future, 0o644))

	s := openT(t, dir, testOptions(spool.SyncAlways))
	defer s.Close()
	recs := readAll(t, s)
	require.Len(t, recs, 11)
	for i := range 10 {
		require.Equal(t, payload(i), recs[i].Payload)
	}
	require.Equal(t, []byte("from 1.2"), recs[10].Payload)
	require.Equal(t, spool.ClassEvent, recs[10].Class)
	require.True(t, recs[10].Time.Equal(epoch))
	require.Zero(t, s.Stats().TornRecords)
	id, err := s.Append(spool.ClassRaw, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(12), id)
}

func TestUnknownMajorVersionIsRefused(t *testing.T) {
	dir := spoolWith(t, 10)
	seg := lastDataSegment(t, dir)
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	v2 := append(segHeader(2, 0, 1, []byte("a different layout")), b[20:]...)
	require.NoError(t, os.WriteFile(seg, v2, 0o644))

	_, err = spool.Open(dir, testOptions(spool.SyncAlways))
	require.ErrorIs(t, err, spool.ErrUnsupportedVersion)
	require.Contains(t, err.Error(), filepath.Base(seg), "the error names the file")
	require.Contains(t, err.Error(), "format 2.0")
	after, err := os.ReadFile(seg)
	require.NoError(t, err)
	require.Equal(t, v2, after, "a refused spool is left untouched")

	// The lock was released: once the file is dealt with, Open works.
	require.NoError(t, os.Remove(seg))
	s := openT(t, dir, testOptions(spool.SyncAlways))
	require.NoError(t, s.Close())
}

func TestUnknownMajorAckFileIsRefused(t *testing.T) {
	dir := spoolWith(t, 3)
	ack := []byte("MWAK")
	ack = append(ack, 3, 0)
	ack = binary.LittleEndian.AppendUint16(ack, 20)
	ack = binary.LittleEndian.AppendUint64(ack, 2)
	ack = binary.LittleEndian.AppendUint32(ack, crc32.Checksum(ack, castagnoli))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ack"), ack, 0o644))
	_, err := spool.Open(dir, testOptions(spool.SyncAlways))
	require.ErrorIs(t, err, spool.ErrUnsupportedVersion)
	require.Contains(t, err.Error(), "ack")
}

// goldenDir holds a spool written by format 1.0. Every later version must
// open it; regenerate only with a deliberate format change:
//
//	SPOOL_UPDATE_GOLDEN=1 go test ./agent/spool -run TestGolden
const goldenDir = "testdata/golden-v1.0"

func writeGoldenSpool(t *testing.T, dir string) {
	opts := testOptions(spool.SyncAlways)
	fake := opts.Clock.(*clock.Fake)
	s := openT(t, dir, opts)
	for i, p := range []string{"alpha", "bravo", "charlie", "delta", "echo"} {
		c := spool.ClassRaw
		if i == 3 {
			c = spool.ClassEvent
		}
		_, err := s.Append(c, []byte(p))
		require.NoError(t, err)
		fake.Advance(time.Second)
	}
	require.NoError(t, s.Ack(2))
	require.NoError(t, s.Close())
	require.NoError(t, os.Remove(filepath.Join(dir, "LOCK")))
}

func TestGoldenV1(t *testing.T) {
	if os.Getenv("SPOOL_UPDATE_GOLDEN") != "" {
		require.NoError(t, os.RemoveAll(goldenDir))
		require.NoError(t, os.MkdirAll(goldenDir, 0o755))
		writeGoldenSpool(t, goldenDir)
	}
	// The format is stable: writing the same records gives the same bytes.
	fresh := t.TempDir()
	writeGoldenSpool(t, fresh)
	for _, name := range []string{"00000000000000000001.seg", "ack"} {
		want, err := os.ReadFile(filepath.Join(goldenDir, name))
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join(fresh, name))
		require.NoError(t, err)
		require.Equal(t, want, got, "%s changed: a format change needs a version bump", name)
	}

	dir := copyDir(t, goldenDir)
	s := openT(t, dir, testOptions(spool.SyncAlways))
	defer s.Close()
	recs := readAll(t, s)
	require.Len(t, recs, 3)
	for i, want := range []struct {
		id      uint64
		class   spool.Class
		payload string
	}{{3, spool.ClassRaw, "charlie"}, {4, spool.ClassEvent, "delta"}, {5, spool.ClassRaw, "echo"}} {
		require.Equal(t, want.id, recs[i].ID)
		require.Equal(t, want.class, recs[i].Class)
		require.Equal(t, want.payload, string(recs[i].Payload))
		require.True(t, recs[i].Time.Equal(epoch.Add(time.Duration(want.id-1)*time.Second)))
	}
}
