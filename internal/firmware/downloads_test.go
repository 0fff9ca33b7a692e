package firmware

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDownloadsBound: over an HTTPS server, with the bound at 2, a third GET while two are
// being served is answered 503 with Retry-After before any byte; HEAD passes; once a slot is
// free a GET is served again, resumed with Range. The default bound is DefaultMaxDownloads.
func TestDownloadsBound(t *testing.T) {
	require.Equal(t, DefaultMaxDownloads, NewDownloads(0).Max())
	require.Equal(t, DefaultMaxDownloads, DefaultOptions().MaxDownloads)
	opts := DefaultOptions()
	opts.MaxDownloads = 0
	require.ErrorContains(t, opts.Validate(), "max_downloads")

	s, err := Open(t.TempDir(), 0)
	require.NoError(t, err)
	img := make([]byte, 64<<10)
	_, _ = rand.Read(img)
	sum, _, err := s.Put(bytes.NewReader(img))
	require.NoError(t, err)

	d := NewDownloads(2)
	hold := make(chan struct{})
	entered := make(chan struct{}, 2)
	serve := d.Serve(func(w http.ResponseWriter, r *http.Request, sum string) {
		if r.Header.Get("X-Hold") != "" {
			entered <- struct{}{}
			<-hold
		}
		s.Serve(w, r, sum)
	})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serve(w, r, strings.TrimPrefix(r.URL.Path, "/"))
	}))
	defer srv.Close()
	c := srv.Client()
	get := func(method string, hold bool, rng string) *http.Response {
		req, err := http.NewRequest(method, srv.URL+"/"+sum, nil)
		require.NoError(t, err)
		if hold {
			req.Header.Set("X-Hold", "1")
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := c.Do(req)
		require.NoError(t, err)
		return resp
	}
	held := make(chan *http.Response, 2)
	for range 2 {
		go func() { held <- get(http.MethodGet, true, "") }()
	}
	<-entered
	<-entered
	require.Equal(t, 2, d.InProgress())

	resp := get(http.MethodGet, false, "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "30", resp.Header.Get("Retry-After"))
	require.Contains(t, string(body), "busy: 2 firmware downloads in progress")
	require.Equal(t, uint64(1), d.Refused())

	resp = get(http.MethodHead, false, "")
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "HEAD is not bounded")

	close(hold)
	for range 2 {
		r := <-held
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		require.Equal(t, img, b)
	}
	require.Zero(t, d.InProgress())
	resp = get(http.MethodGet, false, "bytes=1000-")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Equal(t, img[1000:], b)
	require.Equal(t, uint64(3), d.Served())
}
