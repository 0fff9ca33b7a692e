package firmware

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPutOpenDelete(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, 1<<20)
	require.NoError(t, err)
	img := make([]byte, 300_000)
	_, _ = rand.Read(img)
	sum, size, err := s.Put(bytes.NewReader(img))
	require.NoError(t, err)
	want := sha256.Sum256(img)
	require.Equal(t, hex.EncodeToString(want[:]), sum)
	require.Equal(t, int64(len(img)), size)
	again, _, err := s.Put(bytes.NewReader(img))
	require.NoError(t, err)
	require.Equal(t, sum, again, "content-addressed: the same bytes, the same artifact")

	f, err := s.Open(sum)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, img, got)

	_, _, err = s.Put(bytes.NewReader(make([]byte, 1<<20+1)))
	require.ErrorIs(t, err, ErrTooLarge)
	tmp, err := os.ReadDir(filepath.Join(dir, "tmp"))
	require.NoError(t, err)
	require.Empty(t, tmp, "a refused upload leaves nothing behind")

	require.NoError(t, s.Delete(sum))
	_, err = s.Open(sum)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.Open("../../etc/passwd")
	require.ErrorIs(t, err, ErrNotFound, "only SHA-256 names")
}

func TestOpenRemovesHalfWritten(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(dir, 0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tmp", "upload-123"), []byte("half"), 0o600))
	_, err = Open(dir, 0)
	require.NoError(t, err)
	tmp, err := os.ReadDir(filepath.Join(dir, "tmp"))
	require.NoError(t, err)
	require.Empty(t, tmp)
}

// TestServeResumes: a download cut halfway resumes with Range from where it stopped, and the
// two parts make the artifact.
func TestServeResumes(t *testing.T) {
	s, err := Open(t.TempDir(), 0)
	require.NoError(t, err)
	img := make([]byte, 1<<20)
	_, _ = rand.Read(img)
	sum, _, err := s.Put(bytes.NewReader(img))
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.Serve(w, r, r.URL.Path[1:]) }))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/" + sum)
	require.NoError(t, err)
	first := make([]byte, 400_000)
	_, err = io.ReadFull(resp.Body, first)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close()) // cut
	require.Equal(t, `"`+sum+`"`, resp.Header.Get("ETag"))

	req, err := http.NewRequest(http.MethodGet, srv.URL+"/"+sum, nil)
	require.NoError(t, err)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(first)))
	req.Header.Set("If-Range", `"`+sum+`"`)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, img, append(first, rest...))

	req.Header.Del("Range")
	req.Header.Set("If-None-Match", `"`+sum+`"`)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNotModified, resp.StatusCode)

	other := sum[:63] + map[bool]string{true: "1", false: "0"}[sum[63] == '0']
	resp, err = http.Get(srv.URL + "/" + other)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, DefaultOptions().Validate())
	for _, c := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.MaxArtifactBytes = 0 }, "invalid max_artifact_bytes 0: must be positive"},
		{func(o *Options) { o.UploadTimeout = -time.Second }, "invalid upload_timeout -1s: must be positive"},
		{func(o *Options) { o.DownloadTimeout = 0 }, "invalid download_timeout 0s: must be positive"},
	} {
		o := DefaultOptions()
		c.mutate(&o)
		require.EqualError(t, o.Validate(), c.want)
	}
}
