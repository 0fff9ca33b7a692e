package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
)

// Segment file header (little endian). Bytes 0..5 keep this meaning in every
// version, so any reader can tell a newer major version from garbage:
//
//	0   4  magic "MWSP"
//	4   1  major version (1): a reader refuses a major it does not know
//	5   1  minor version (0): a reader accepts any minor of its major
//	6   2  header length L, CRC included (20 in 1.0); a reader skips the
//	       bytes between its known fields and the CRC
//	8   8  first record ID (equals the number in the file name)
//	..     fields added by later minor versions
//	L-4 4  CRC32C of bytes 0..L-5
const (
	segMagic      = "MWSP"
	segMajor      = 1
	segMinor      = 0
	segHeaderSize = 20
	segSuffix     = ".seg"
	segNameDigits = 20
)

// segHeader is a decoded segment header.
type segHeader struct {
	major, minor uint8
	size         int64 // header length L
	firstID      uint64
}

// encodeSegHeader returns the header of a segment whose first record is id.
func encodeSegHeader(id uint64) []byte { return encodeFixed(segMagic, segMajor, segMinor, id) }

// readSegHeader decodes the header of a segment file of the given size. It
// returns an error wrapping ErrUnsupportedVersion for an unknown major
// version and one wrapping ErrCorrupt for anything else that is wrong.
func readSegHeader(r io.ReaderAt, size int64) (segHeader, error) {
	var fixed [8]byte
	if size < int64(len(fixed)) {
		return segHeader{}, fmt.Errorf("read segment header: %w: %d bytes, header torn", ErrCorrupt, size)
	}
	if _, err := r.ReadAt(fixed[:], 0); err != nil {
		return segHeader{}, fmt.Errorf("read segment header: %w", err)
	}
	if !bytes.Equal(fixed[0:4], []byte(segMagic)) {
		return segHeader{}, fmt.Errorf("read segment header: %w: bad magic %q", ErrCorrupt, fixed[0:4])
	}
	h := segHeader{major: fixed[4], minor: fixed[5], size: int64(binary.LittleEndian.Uint16(fixed[6:8]))}
	if h.major != segMajor {
		return segHeader{}, fmt.Errorf("read segment header: %w: format %d.%d, this build reads %d.x",
			ErrUnsupportedVersion, h.major, h.minor, segMajor)
	}
	if h.size < segHeaderSize {
		return segHeader{}, fmt.Errorf("read segment header: %w: header length %d", ErrCorrupt, h.size)
	}
	if h.size > size {
		return segHeader{}, fmt.Errorf("read segment header: %w: header length %d beyond file size %d", ErrCorrupt, h.size, size)
	}
	b := make([]byte, h.size)
	if _, err := r.ReadAt(b, 0); err != nil {
		return segHeader{}, fmt.Errorf("read segment header: %w", err)
	}
	if crc32.Checksum(b[:h.size-4], castagnoli) != binary.LittleEndian.Uint32(b[h.size-4:]) {
		return segHeader{}, fmt.Errorf("read segment header: %w: checksum mismatch", ErrCorrupt)
	}
	h.firstID = binary.LittleEndian.Uint64(b[8:16])
	return h, nil
}

// scanResult summarises one segment file.
type scanResult struct {
	header segHeader
	count  uint64  // valid records
	nKeep  int     // valid records of a class kept on overflow (events)
	end    int64   // offset just past the last valid record
	index  []int64 // offset of every indexStride-th record
	torn   bool    // an invalid or partial record was found at end
}

// indexStride is the distance, in records, between sparse index entries.
const indexStride = 128

// scanSegment validates a whole segment: header, then records until the
// first invalid one. Record damage is reported in the result (torn, end);
// the error is non-nil only for a bad header or an I/O failure. fn, if not
// nil, is called for every valid record with its ordinal and offset and may
// stop the scan by returning false.
func scanSegment(r io.ReaderAt, size int64, rr *recordReader, fn func(k uint64, off int64, rec rawRecord) bool) (scanResult, error) {
	h, err := readSegHeader(r, size)
	if err != nil {
		return scanResult{}, err
	}
	res := scanResult{header: h, end: h.size}
	rr.reset(r, h.size, size)
	for {
		off := rr.off
		rec, err := rr.next()
		if errors.Is(err, io.EOF) {
			return res, nil
		}
		if errors.Is(err, errTorn) {
			res.torn = true
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("scan segment: %w", err)
		}
		if res.count%indexStride == 0 {
			res.index = append(res.index, off)
		}
		if rec.class.keep() {
			res.nKeep++
		}
		res.count++
		res.end = rr.off
		if fn != nil && !fn(res.count-1, off, rec) {
			return res, nil
		}
	}
}

// segmentName is the file name of the segment whose first record is id.
func segmentName(id uint64) string {
	return fmt.Sprintf("%0*d%s", segNameDigits, id, segSuffix)
}

// parseSegmentName returns the first ID a segment file name encodes.
func parseSegmentName(name string) (uint64, bool) {
	digits, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(digits) != segNameDigits {
		return 0, false
	}
	id, err := strconv.ParseUint(digits, 10, 64)
	return id, err == nil
}

// segment is the in-memory state of one segment file. All fields are
// guarded by Spool.mu.
type segment struct {
	id      uint64 // first record ID, also in the name and header
	count   uint64 // records; IDs are id..id+count-1, dense
	nKeep   int    // records of a class kept on overflow
	hdrSize int64
	size    int64   // bytes of header and valid records
	index   []int64 // offset of record id+k*indexStride

	synced      int64  // bytes known to be on stable storage
	syncedCount uint64 // records known to be on stable storage

	wf       file // read-write handle, open while written or unsynced
	refs     int  // fsyncs in flight on wf
	closeWF  bool // close wf when refs drops to zero
	sealed   bool // no longer the active segment
	filename string
}

func (g *segment) lastID() uint64 { return g.id + g.count - 1 }

// contains reports whether id is one of the segment's records.
func (g *segment) contains(id uint64) bool { return g.count > 0 && id >= g.id && id <= g.lastID() }
