package firmware

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// deltaPair is a base image and a target that changes a few places of it, as a new build
// does: a patched region, an inserted block, a longer tail.
func deltaPair(t testing.TB, size int) (base, target []byte) {
	base = make([]byte, size)
	_, _ = rand.Read(base)
	target = append([]byte(nil), base[:size/3]...)
	patch := make([]byte, 4<<10)
	_, _ = rand.Read(patch)
	target = append(target, patch...)
	target = append(target, base[size/3+1024:]...)
	tail := make([]byte, 16<<10)
	_, _ = rand.Read(tail)
	return base, append(target, tail...)
}

// TestDeltaServe: over HTTPS, a device that names the artifact it runs gets the target as a
// zstd delta from it, far smaller than the target; the delta is made once and kept, resumes
// with Range and If-Range, and rebuilds the target exactly. No delta (404) from an artifact
// the archive does not hold, from one that shares nothing with the target, or for a pair
// beyond MaxDeltaBytes; a delta decoded with another base is refused; deleting the base
// removes its deltas.
func TestDeltaServe(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	require.NoError(t, err)
	base, target := deltaPair(t, 1<<20)
	bsum, _, err := s.Put(bytes.NewReader(base))
	require.NoError(t, err)
	tsum, _, err := s.Put(bytes.NewReader(target))
	require.NoError(t, err)

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeDevice(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	defer srv.Close()
	get := func(from string, header ...string) (*http.Response, []byte) {
		url := srv.URL + "/" + tsum
		if from != "" {
			url += "?" + protocol.DeltaQuery + "=" + from
		}
		req, err := http.NewRequest(http.MethodGet, url, nil)
		require.NoError(t, err)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, b
	}

	resp, full := get("")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, target, full, "without delta_from: the artifact")

	resp, delta := get(bsum)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/zstd", resp.Header.Get("Content-Type"))
	etag := resp.Header.Get("ETag")
	require.True(t, strings.HasPrefix(etag, `"`+tsum+"."+bsum+"."), etag)
	require.Less(t, len(delta), len(target)/20, "a delta of a 1 MiB image with 20 KiB changed")
	got := decodeDelta(t, delta, base, bsum, int64(len(target)))
	require.Equal(t, target, got)
	kept, _ := filepath.Glob(filepath.Join(s.dir, "delta", tsum, bsum+".*"))
	require.Len(t, kept, 1, "kept on disk")
	dsum := sha256.Sum256(delta)
	require.Equal(t, bsum+"."+hex.EncodeToString(dsum[:]), filepath.Base(kept[0]), "named by its content")

	// Resumed: the rest from byte 100, the same bytes.
	resp, rest := get(bsum, "Range", "bytes=100-", "If-Range", etag)
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, delta[100:], rest)
	resp, _ = get(bsum, "If-None-Match", etag)
	require.Equal(t, http.StatusNotModified, resp.StatusCode)

	// Another base: the frame names the base it needs.
	other := append([]byte(nil), base...)
	other[0] ^= 0xff
	osum := sha256.Sum256(other)
	_, err = io.ReadAll(mustDeltaReader(t, delta, other, hex.EncodeToString(osum[:]), int64(len(target))))
	require.Error(t, err, "decoded with another base")

	// No delta.
	unknown := strings.Repeat("ab", 32)
	resp, body := get(unknown)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, string(body), "no delta")
	unrelated := make([]byte, 1<<20)
	_, _ = rand.Read(unrelated)
	usum, _, err := s.Put(bytes.NewReader(unrelated))
	require.NoError(t, err)
	resp, body = get(usum)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, string(body), "no smaller than the target")

	// Beyond MaxDeltaBytes (sparse files: the bound is checked before anything is read).
	for i, n := range []int64{MaxDeltaBytes / 2, MaxDeltaBytes/2 + 1} {
		name := strings.Repeat(string(rune('c'+i)), 64)
		require.NoError(t, os.MkdirAll(filepath.Dir(s.path(name)), 0o700))
		f, err := os.Create(s.path(name))
		require.NoError(t, err)
		require.NoError(t, f.Truncate(n))
		require.NoError(t, f.Close())
	}
	_, _, err = s.Delta(strings.Repeat("c", 64), strings.Repeat("d", 64))
	require.ErrorIs(t, err, ErrNoDelta)
	require.ErrorContains(t, err, "more than 268435456")

	made, served, none := s.DeltaStats()
	require.Equal(t, []uint64{1, 3, 2}, []uint64{made, served, none}, "made once; served whole, resumed and not modified; two without a delta")

	require.NoError(t, s.Delete(bsum))
	kept, _ = filepath.Glob(filepath.Join(s.dir, "delta", tsum, bsum+".*"))
	require.Empty(t, kept, "deleting the base deletes its deltas")
}

func mustDeltaReader(t *testing.T, delta, base []byte, baseSHA string, size int64) io.Reader {
	d, err := protocol.NewDeltaReader(bytes.NewReader(delta), base, baseSHA, size)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

func decodeDelta(t *testing.T, delta, base []byte, baseSHA string, size int64) []byte {
	b, err := io.ReadAll(mustDeltaReader(t, delta, base, baseSHA, size))
	require.NoError(t, err)
	return b
}
