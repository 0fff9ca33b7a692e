package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// deltaBase is the base the delta tests and the fuzz target decode with: 64 KiB of a
// pattern that does not repeat within it.
func deltaBase() ([]byte, string) {
	b := make([]byte, 64<<10)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// TestDelta: a target that changes a few bytes of the base encodes to a small delta and
// decodes back; the window covers base and target; another base's delta is refused.
func TestDelta(t *testing.T) {
	base, sha := deltaBase()
	target := append([]byte("new header "), base...)
	copy(target[30000:], "patched")
	var buf bytes.Buffer
	require.NoError(t, EncodeDelta(&buf, base, target, sha, zstd.SpeedBetterCompression))
	require.Less(t, buf.Len(), 200, "only the changes cost bytes")
	d, err := NewDeltaReader(bytes.NewReader(buf.Bytes()), base, sha, int64(len(target)))
	require.NoError(t, err)
	got, err := io.ReadAll(d)
	d.Close()
	require.NoError(t, err)
	require.Equal(t, target, got)

	require.Equal(t, 1<<17, DeltaWindow(64<<10, 64<<10))
	require.Equal(t, 1<<18, DeltaWindow(64<<10, 64<<10+1))
	require.Equal(t, zstd.MinWindowSize, DeltaWindow(0, 1))
	require.Equal(t, uint32(1), DeltaDictID("00000000"+sha[8:]), "never 0")

	other := append([]byte(nil), base...)
	other[0]++
	osum := sha256.Sum256(other)
	d, err = NewDeltaReader(bytes.NewReader(buf.Bytes()), other, hex.EncodeToString(osum[:]), int64(len(target)))
	require.NoError(t, err)
	_, err = io.ReadAll(d)
	d.Close()
	require.Error(t, err, "a delta made from another base")
}

// FuzzDeltaReader: whatever a server sends as a delta, decoding it never panics and never
// yields more than the reader is asked for.
func FuzzDeltaReader(f *testing.F) {
	base, sha := deltaBase()
	var buf bytes.Buffer
	target := append([]byte("v2 "), base[:40000]...)
	if err := EncodeDelta(&buf, base, target, sha, zstd.SpeedBetterCompression); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()/2])
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd})
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 1 << 20
		d, err := NewDeltaReader(bytes.NewReader(b), base, sha, limit)
		require.NoError(t, err)
		defer d.Close()
		n, _ := io.Copy(io.Discard, io.LimitReader(d, limit+1))
		require.LessOrEqual(t, n, int64(limit+1))
	})
}
