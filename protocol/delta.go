package protocol

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/bits"

	"github.com/klauspost/compress/zstd"
)

// Firmware deltas (docs/protocol.md, "Delta downloads"): a device that runs an artifact the
// archive holds may download the target as a zstd frame whose raw dictionary — the
// encoder's initial history — is the artifact it runs, so that what the two images share
// costs a few bytes. The device asks with DeltaQuery on the artifact's path; it rebuilds the
// target with NewDeltaReader and verifies it against the signed manifest like any download.

// DeltaQuery is the query parameter that asks for a delta: the SHA-256 (lowercase hex) of
// the artifact the device runs, GET FirmwarePathPrefix + <target> + "?delta_from=" + <base>.
const DeltaQuery = "delta_from"

// DeltaDictID is the zstd dictionary ID of a delta from the base with SHA-256 base (hex): its
// first four bytes, never 0. The frame so names the base it needs, and a decoder given
// another base refuses it.
func DeltaDictID(base string) uint32 {
	b, _ := hex.DecodeString(base)
	if len(b) < 4 {
		return 1
	}
	return max(binary.BigEndian.Uint32(b), 1)
}

// DeltaWindow is the zstd window of a delta of a target of targetSize bytes from a base of
// baseSize bytes: the power of two that covers both, so that the target may refer to any
// byte of the base. The decoder needs as much memory.
func DeltaWindow(baseSize, targetSize int64) int {
	n := max(baseSize+targetSize, zstd.MinWindowSize)
	return 1 << bits.Len64(uint64(n-1))
}

// EncodeDelta writes to w the delta of target from base (whose SHA-256 is baseSHA), at
// level.
func EncodeDelta(w io.Writer, base, target []byte, baseSHA string, level zstd.EncoderLevel) error {
	enc, err := zstd.NewWriter(w, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(DeltaWindow(int64(len(base)), int64(len(target)))),
		zstd.WithEncoderDictRaw(DeltaDictID(baseSHA), base), zstd.WithEncoderCRC(true))
	if err != nil {
		return fmt.Errorf("delta encoder: %w", err)
	}
	if _, err := enc.Write(target); err != nil {
		_ = enc.Close()
		return fmt.Errorf("encode delta: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode delta: %w", err)
	}
	return nil
}

// NewDeltaReader reads the target out of the delta r made from base (SHA-256 baseSHA), for a
// target of at most targetSize bytes: a window larger than such a delta needs is refused, as
// is a frame made from another base. Close it when done.
func NewDeltaReader(r io.Reader, base []byte, baseSHA string, targetSize int64) (*zstd.Decoder, error) {
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(uint64(DeltaWindow(int64(len(base)), targetSize))),
		zstd.WithDecoderDictRaw(DeltaDictID(baseSHA), base))
	if err != nil {
		return nil, fmt.Errorf("delta decoder: %w", err)
	}
	return d, nil
}
