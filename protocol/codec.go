package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Format is the serialization of a SenML pack.
type Format uint8

// Formats. FormatUnknown is what Decode reports when it could not tell.
const (
	FormatUnknown Format = iota
	FormatJSON           // application/senml+json (RFC 8428 §5)
	FormatCBOR           // application/senml+cbor (RFC 8428 §6)
)

// String returns "json", "cbor" or "unknown".
func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatCBOR:
		return "cbor"
	}
	return "unknown"
}

// Encoding is how a batch is put on the wire: a Format, optionally
// compressed as one or more zstd frames (RFC 8878).
type Encoding struct {
	Format     Format
	Compressed bool
}

// String returns "cbor", "json", "cbor+zstd" or "json+zstd", usable as a
// metric label value.
func (e Encoding) String() string {
	if e.Compressed {
		return e.Format.String() + "+zstd"
	}
	return e.Format.String()
}

// ContentType returns the media type of the encoding's format,
// "application/senml+cbor" or "application/senml+json". Compression is
// shown on HTTP by "Content-Encoding: zstd".
func (e Encoding) ContentType() string {
	switch e.Format {
	case FormatJSON:
		return "application/senml+json"
	case FormatCBOR:
		return "application/senml+cbor"
	}
	return "application/octet-stream"
}

// zstdMagic starts every zstd frame (RFC 8878 §3.1.1).
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// Sniff tells a payload's encoding from its first bytes: the zstd frame
// magic 28 B5 2F FD means compressed, and the format is then told from the
// decompressed content (decompressed within DefaultLimits); a first byte
// 0x80..0x9f (CBOR array) means CBOR; '[' after optional JSON whitespace
// means JSON. Anything else is an *Error with ReasonMalformed (or
// ReasonTooLarge for compressed content beyond the default limit).
func Sniff(payload []byte) (Encoding, error) {
	if !bytes.HasPrefix(payload, zstdMagic) {
		f, err := sniffFormat(payload)
		return Encoding{Format: f}, err
	}
	data, buf, err := decompress(payload, DefaultLimits().MaxDecompressed)
	if err != nil {
		return Encoding{Compressed: true}, err
	}
	defer putBuffer(buf)
	f, err := sniffFormat(data)
	return Encoding{Format: f, Compressed: true}, err
}

// sniffFormat tells the format of uncompressed content.
func sniffFormat(data []byte) (Format, error) {
	if len(data) == 0 {
		return FormatUnknown, errorf(ReasonMalformed, "empty payload")
	}
	if c := data[0]; c >= 0x80 && c <= 0x9f {
		return FormatCBOR, nil
	}
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i < len(data) && data[i] == '[' {
		return FormatJSON, nil
	}
	if bytes.HasPrefix(data, zstdMagic) {
		return FormatUnknown, errorf(ReasonMalformed, "zstd inside zstd")
	}
	return FormatUnknown, errorf(ReasonMalformed, "payload starts with byte 0x%02x: not a zstd frame, a CBOR array or a JSON array", data[0])
}

// Limits bound what Decode accepts; Decode refuses larger batches before
// spending memory on them.
type Limits struct {
	// MaxPayload is the largest payload on the wire, in bytes (compressed
	// size for a compressed payload). Default 256 KiB; zero or less means
	// the default. Beyond it: ReasonTooLarge.
	MaxPayload int `yaml:"max_payload"`
	// MaxDecompressed is the largest zstd-decompressed content, in bytes.
	// Decode never allocates more than this for decompression, however
	// well the payload compresses. Default 4 MiB; zero or less means the
	// default; at most 1 GiB. Beyond it: ReasonTooLarge.
	MaxDecompressed int `yaml:"max_decompressed"`
	// MaxRecords is the largest number of records in a pack. Default
	// 10,000; zero or less means the default; at most 1,048,576. Beyond it:
	// ReasonTooManyRecords.
	MaxRecords int `yaml:"max_records"`
}

const (
	defaultMaxPayload      = 256 << 10
	defaultMaxDecompressed = 4 << 20
	defaultMaxRecords      = 10_000
	maxDecompressedCeiling = 1 << 30
	maxRecordsCeiling      = 1 << 20
)

// DefaultLimits returns the default limits: 256 KiB payload, 4 MiB
// decompressed, 10,000 records.
func DefaultLimits() Limits {
	return Limits{
		MaxPayload:      defaultMaxPayload,
		MaxDecompressed: defaultMaxDecompressed,
		MaxRecords:      defaultMaxRecords,
	}
}

// normalized replaces zero and negative fields by their defaults and clamps
// fields to their ceilings.
func (l Limits) normalized() Limits {
	if l.MaxPayload <= 0 {
		l.MaxPayload = defaultMaxPayload
	}
	if l.MaxDecompressed <= 0 {
		l.MaxDecompressed = defaultMaxDecompressed
	}
	if l.MaxRecords <= 0 {
		l.MaxRecords = defaultMaxRecords
	}
	l.MaxDecompressed = min(l.MaxDecompressed, maxDecompressedCeiling)
	l.MaxRecords = min(l.MaxRecords, maxRecordsCeiling)
	return l
}

// Decode turns one device message into a Batch: it checks the payload size,
// tells the encoding (see Sniff), decompresses zstd within
// lim.MaxDecompressed, parses CBOR or JSON, checks lim.MaxRecords, and
// resolves the pack (see Resolve) with now as the time relative SenML times
// count from. It returns the encoding even with an error, when it got that
// far. Every error is an *Error whose Reason is malformed, invalid,
// too_large or too_many_records. The Batch shares no memory with payload.
// Decode is safe for concurrent use.
func Decode(payload []byte, now time.Time, lim Limits) (Batch, Encoding, error) {
	lim = lim.normalized()
	var enc Encoding
	if len(payload) > lim.MaxPayload {
		return Batch{}, enc, errorf(ReasonTooLarge, "payload is %d bytes, the limit is %d", len(payload), lim.MaxPayload)
	}
	data := payload
	if bytes.HasPrefix(payload, zstdMagic) {
		enc.Compressed = true
		var buf *[]byte
		var err error
		if data, buf, err = decompress(payload, lim.MaxDecompressed); err != nil {
			return Batch{}, enc, err
		}
		defer putBuffer(buf)
	}
	f, err := sniffFormat(data)
	if err != nil {
		return Batch{}, enc, err
	}
	enc.Format = f
	var b Batch
	if f == FormatCBOR {
		b, err = decodeCBOR(data, now, lim.MaxRecords)
	} else {
		b, err = decodeJSON(data, now, lim.MaxRecords)
	}
	return b, enc, err
}

// Encode marshals a pack: CBOR per RFC 8428 §6 with integer labels, every
// number in its shortest exact form (integer, float16, float32 or float64),
// definite lengths; or JSON per RFC 8428 §5 (vd as unpadded base64url).
// With enc.Compressed the result is one zstd frame. Encode checks only what
// it needs to write a valid encoding (finite numbers, UTF-8 strings); call
// Resolve to check a pack against the rules Decode applies. Errors are
// *Error with ReasonInvalid.
func Encode(p Pack, enc Encoding) ([]byte, error) {
	for i := range p {
		if err := p[i].check(i); err != nil {
			return nil, err
		}
	}
	var out []byte
	switch enc.Format {
	case FormatCBOR:
		out = appendCBORPack(make([]byte, 0, 32*len(p)+1), p)
	case FormatJSON:
		out = appendJSONPack(make([]byte, 0, 64*len(p)+2), p)
	default:
		return nil, errorf(ReasonInvalid, "cannot encode format %v", enc.Format)
	}
	if !enc.Compressed {
		return out, nil
	}
	e, err := zstdEncoder()
	if err != nil {
		return nil, fmt.Errorf("encode: zstd: %w", err)
	}
	return e.EncodeAll(out, make([]byte, 0, len(out)/2+32)), nil
}

// The zstd codecs are built on first use and shared: EncodeAll and
// DecodeAll are safe for concurrent use.
var (
	zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedDefault),
		)
	})
	// The decoder's own bound is the ceiling; each call is bounded by the
	// capacity of its destination buffer (WithDecodeAllCapLimit), at most
	// Limits.MaxDecompressed. A frame that declares a larger content size
	// is refused before anything is decoded; one that does not is refused
	// as soon as its output passes the bound.
	zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
		return zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0), // GOMAXPROCS decodes at once
			zstd.WithDecoderMaxMemory(maxDecompressedCeiling),
			zstd.WithDecodeAllCapLimit(true),
		)
	})
)

// Decompression buffers come from pools by size class (64 KiB, 256 KiB,
// 1 MiB, …), so a steady stream of batches decompresses without
// allocating. A buffer is sized from the frame's declared content size, or
// else from the payload size; when the content does not fit, decoding is
// retried into a buffer four times larger, up to the limit. Memory is never
// reserved for the limit itself.
const (
	minBufferSize    = 64 << 10
	bufferClasses    = 8 // up to 64 KiB·4^7 = 1 GiB
	maxPooledBufSize = 16 << 20
)

var bufferPools [bufferClasses]sync.Pool

// bufferClass returns the size class that holds size bytes, and its size.
func bufferClass(size int) (int, int) {
	c, n := 0, minBufferSize
	for n < size && c < bufferClasses-1 {
		c, n = c+1, n*4
	}
	return c, max(n, size)
}

// getBuffer returns a buffer with room for size bytes.
func getBuffer(size int) *[]byte {
	c, n := bufferClass(size)
	if p, ok := bufferPools[c].Get().(*[]byte); ok && cap(*p) >= size {
		return p
	}
	b := make([]byte, 0, n)
	return &b
}

func putBuffer(p *[]byte) {
	if cap(*p) > maxPooledBufSize {
		return
	}
	c, _ := bufferClass(cap(*p))
	bufferPools[c].Put(p)
}

// decompress decodes the zstd frames of payload, at most limit bytes. The
// result lives in buf, which the caller must put back with putBuffer when
// done with the result.
func decompress(payload []byte, limit int) (out []byte, buf *[]byte, err error) {
	d, err := zstdDecoder()
	if err != nil {
		return nil, nil, &Error{Reason: ReasonUnavailable, Err: fmt.Errorf("zstd: %w", err)}
	}
	var h zstd.Header
	if err := h.Decode(payload); err != nil {
		return nil, nil, errorf(ReasonMalformed, "zstd: %v", err)
	}
	size := min(limit, max(minBufferSize, 16*len(payload)))
	if h.HasFCS {
		if h.FrameContentSize > uint64(limit) {
			return nil, nil, errorf(ReasonTooLarge, "zstd frame declares %d bytes of content, the limit is %d", h.FrameContentSize, limit)
		}
		size = max(int(h.FrameContentSize), 1024)
	}
	for {
		size = min(size, limit)
		buf = getBuffer(size)
		// WithDecodeAllCapLimit: DecodeAll writes at most cap(dst) bytes.
		out, err = d.DecodeAll(payload, (*buf)[:0:size])
		if err == nil && len(out) <= limit {
			return out, buf, nil
		}
		putBuffer(buf)
		// Out of room shows either as ErrDecoderSizeExceeded or, from the assembly sequence
		// decoder, as "output bigger than max block size": both mean "retry with a larger
		// buffer" until the limit is reached.
		outOfRoom := errors.Is(err, zstd.ErrDecoderSizeExceeded) ||
			(err != nil && strings.Contains(err.Error(), "output bigger than max block size"))
		switch {
		case err == nil, errors.Is(err, zstd.ErrWindowSizeExceeded):
			return nil, nil, errorf(ReasonTooLarge, "zstd content exceeds %d bytes", limit)
		case !outOfRoom:
			return nil, nil, errorf(ReasonMalformed, "zstd: %v", err)
		case size >= limit:
			return nil, nil, errorf(ReasonTooLarge, "zstd content exceeds %d bytes", limit)
		}
		size *= 4
	}
}
