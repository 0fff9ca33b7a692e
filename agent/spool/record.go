package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"
)

// Class tells how precious a record is when the spool must drop data to stay
// under Options.MaxBytes.
type Class uint8

const (
	// ClassRaw marks ordinary samples: the first to be dropped on overflow.
	ClassRaw Class = 0
	// ClassEvent marks events and alarms: kept as long as raw records remain
	// to drop.
	ClassEvent Class = 1
)

// String returns "raw", "event" or "class(N)".
func (c Class) String() string {
	switch c {
	case ClassRaw:
		return "raw"
	case ClassEvent:
		return "event"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// keep reports whether records of class c survive while raw records remain
// to drop. Classes unknown to this version (written by a newer one) are kept
// like events: when in doubt, keep data.
func (c Class) keep() bool { return c != ClassRaw }

// Record is one spooled record as returned by Peek and ReadFrom.
type Record struct {
	// ID is the record's position in the spool: unique, increasing in append
	// order, never reused for an acknowledged record. Pass it to Ack.
	ID uint64
	// Class is the class given to Append.
	Class Class
	// Time is the append time, from Options.Clock.
	Time time.Time
	// Payload is the bytes given to Append; the caller owns this copy.
	Payload []byte
}

// Record framing (little endian):
//
//	0  4  body length N (record header + payload)
//	4  4  CRC32C (Castagnoli) of bytes 0..3 followed by the N body bytes
//	8  N  body: record header (its first byte is its own length) + payload
//
// Record header, version 1.0 (recHeaderSize bytes):
//
//	0  1  header length H (10 in 1.0; a reader skips bytes it does not know)
//	1  1  class
//	2  8  append time, Unix nanoseconds (int64)
const (
	frameHeaderSize = 8
	recHeaderSize   = 10
	recordOverhead  = frameHeaderSize + recHeaderSize
	// maxBodyLen caps the length field when decoding, independent of the
	// options, so a record written under other options stays readable and
	// garbage cannot make the reader allocate gigabytes.
	maxBodyLen = 1 << 28
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errTorn marks a record that is cut short or fails its checks.
var errTorn = fmt.Errorf("%w: torn or invalid record", ErrCorrupt)

// appendRecord appends the encoded record to dst.
func appendRecord(dst []byte, c Class, unixNano int64, payload []byte) []byte {
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(recHeaderSize+len(payload)))
	dst = append(dst, 0, 0, 0, 0)
	dst = append(dst, recHeaderSize, byte(c))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(unixNano))
	dst = append(dst, payload...)
	crc := crc32.Update(crc32.Checksum(dst[start:start+4], castagnoli), castagnoli, dst[start+frameHeaderSize:])
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst
}

// rawRecord is a decoded record whose payload aliases the reader's buffer.
type rawRecord struct {
	class    Class
	unixNano int64
	payload  []byte
	size     int64 // encoded size, frame included
}

// recordReader decodes consecutive records from a segment file region.
type recordReader struct {
	br   *bufio.Reader
	off  int64 // offset of the next record
	end  int64 // end of the region
	hdr  [frameHeaderSize]byte
	body []byte
}

func newRecordReader() *recordReader {
	return &recordReader{br: bufio.NewReaderSize(nil, 64<<10)}
}

// reset positions the reader at off in r, reading no further than end.
func (rr *recordReader) reset(r io.ReaderAt, off, end int64) {
	rr.br.Reset(io.NewSectionReader(r, off, max(end-off, 0)))
	rr.off, rr.end = off, end
}

// next decodes the record at rr.off. It returns io.EOF exactly at the end of
// the region, an error wrapping errTorn for a short or invalid record, and
// other errors for I/O failures. The payload is valid until the next call.
func (rr *recordReader) next() (rawRecord, error) {
	if rr.off >= rr.end {
		return rawRecord{}, io.EOF
	}
	if _, err := io.ReadFull(rr.br, rr.hdr[:]); err != nil {
		return rawRecord{}, tornOr(err)
	}
	n := binary.LittleEndian.Uint32(rr.hdr[0:4])
	if n < 1 || n > maxBodyLen || int64(n) > rr.end-rr.off-frameHeaderSize {
		return rawRecord{}, errTorn
	}
	if cap(rr.body) < int(n) {
		rr.body = make([]byte, n)
	}
	body := rr.body[:n]
	if _, err := io.ReadFull(rr.br, body); err != nil {
		return rawRecord{}, tornOr(err)
	}
	crc := crc32.Update(crc32.Checksum(rr.hdr[0:4], castagnoli), castagnoli, body)
	if crc != binary.LittleEndian.Uint32(rr.hdr[4:8]) {
		return rawRecord{}, errTorn
	}
	h := int(body[0])
	if h < recHeaderSize || h > len(body) {
		return rawRecord{}, errTorn
	}
	rec := rawRecord{
		class:    Class(body[1]),
		unixNano: int64(binary.LittleEndian.Uint64(body[2:10])),
		payload:  body[h:],
		size:     frameHeaderSize + int64(n),
	}
	rr.off += rec.size
	return rec, nil
}

// tornOr maps a short read to errTorn and passes I/O errors through.
func tornOr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errTorn
	}
	return err
}
