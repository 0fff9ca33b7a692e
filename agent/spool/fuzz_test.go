package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// segmentSeeds are the seed inputs of FuzzReadSegment, also stored in
// testdata/fuzz/FuzzReadSegment (regenerate with SPOOL_UPDATE_FUZZ_SEEDS=1).
func segmentSeeds() map[string][]byte {
	valid := encodeSegHeader(7)
	for i, p := range []string{"", "a", "sensor=12.5", strings.Repeat("z", 300)} {
		valid = appendRecord(valid, Class(i%2), int64(i)*1e9, []byte(p))
	}
	future := append([]byte(nil), valid...)
	{ // minor 9 with 6 extra header bytes
		h := []byte(segMagic)
		h = append(h, segMajor, 9)
		h = binary.LittleEndian.AppendUint16(h, segHeaderSize+6)
		h = binary.LittleEndian.AppendUint64(h, 7)
		h = append(h, "extra!"...)
		h = binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
		future = append(h, valid[segHeaderSize:]...)
	}
	badCRC := append([]byte(nil), valid...)
	badCRC[segHeaderSize+recordOverhead+3] ^= 1
	major := append([]byte(nil), valid...)
	major[4] = 2
	hugeLen := append([]byte(nil), valid...)
	binary.LittleEndian.PutUint32(hugeLen[segHeaderSize:], 0xFFFFFFF0)
	shortHdr := append([]byte(nil), valid...)
	shortHdr = append(shortHdr, 0x0b, 0, 0, 0) // length with no body
	return map[string][]byte{
		"valid":        valid,
		"future-minor": future,
		"torn-tail":    valid[:len(valid)-5],
		"bad-crc":      badCRC,
		"major-2":      major,
		"huge-length":  hugeLen,
		"short-frame":  shortHdr,
		"header-only":  encodeSegHeader(1),
		"torn-header":  valid[:11],
		"empty":        {},
		"garbage":      []byte("not a segment at all, just some bytes"),
	}
}

func FuzzReadSegment(f *testing.F) {
	for _, seed := range segmentSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSegmentBytes(t, data)
	})
}

// checkSegmentBytes decodes data as a segment and checks the decoder's
// invariants; it must never panic.
func checkSegmentBytes(t *testing.T, data []byte) {
	r := bytes.NewReader(data)
	res, err := scanSegment(r, int64(len(data)), newRecordReader(), nil)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		return
	}
	if res.end < res.header.size || res.end > int64(len(data)) {
		t.Fatalf("valid end %d outside [%d, %d]", res.end, res.header.size, len(data))
	}
	if res.torn == (res.end == int64(len(data))) {
		t.Fatalf("torn=%v but end=%d of %d", res.torn, res.end, len(data))
	}
	// The valid region decodes again to the same records, and records with
	// a 1.0 header re-encode to the same bytes.
	rr := newRecordReader()
	rr.reset(r, res.header.size, res.end)
	var n uint64
	for {
		off := rr.off
		rec, err := rr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("record %d in the valid region: %v", n, err)
		}
		if data[off+frameHeaderSize] == recHeaderSize {
			enc := appendRecord(nil, rec.class, rec.unixNano, rec.payload)
			if !bytes.Equal(enc, data[off:rr.off]) {
				t.Fatalf("record %d does not re-encode to its bytes", n)
			}
		}
		n++
	}
	if n != res.count {
		t.Fatalf("scan counted %d records, rereading found %d", res.count, n)
	}
}

const fuzzDir = "testdata/fuzz/FuzzReadSegment"

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SPOOL_UPDATE_FUZZ_SEEDS") == "" {
		t.Skip("set SPOOL_UPDATE_FUZZ_SEEDS=1 to regenerate the seed corpus")
	}
	require.NoError(t, os.MkdirAll(fuzzDir, 0o755))
	for name, data := range segmentSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		require.NoError(t, os.WriteFile(filepath.Join(fuzzDir, "seed-"+name), []byte(body), 0o644))
	}
}

// TestOpenFuzzCorpus opens every corpus entry as the only segment of a real
// spool: Open must succeed (or refuse a major version) and never panic.
func TestOpenFuzzCorpus(t *testing.T) {
	entries, err := os.ReadDir(fuzzDir)
	require.NoError(t, err)
	require.NotEmpty(t, entries)
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(fuzzDir, e.Name()))
			require.NoError(t, err)
			data := parseCorpusEntry(t, raw)
			checkSegmentBytes(t, data)

			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, segmentName(7)), data, 0o644))
			s, err := Open(dir, Options{Clock: nil, SyncInterval: time.Hour})
			if errors.Is(err, ErrUnsupportedVersion) {
				return
			}
			require.NoError(t, err)
			recs, err := s.Peek(0, 0)
			require.NoError(t, err)
			st := s.Stats()
			require.Equal(t, uint64(len(recs)), st.Records)
			_, err = s.Append(ClassRaw, []byte("still works"))
			require.NoError(t, err)
			require.NoError(t, s.Close())
		})
	}
}

func parseCorpusEntry(t *testing.T, raw []byte) []byte {
	lines := strings.SplitN(string(raw), "\n", 3)
	require.GreaterOrEqual(t, len(lines), 2)
	require.Equal(t, "go test fuzz v1", lines[0])
	lit, ok := strings.CutPrefix(lines[1], "[]byte(")
	require.True(t, ok)
	lit, ok = strings.CutSuffix(lit, ")")
	require.True(t, ok)
	s, err := strconv.Unquote(lit)
	require.NoError(t, err)
	return []byte(s)
}
