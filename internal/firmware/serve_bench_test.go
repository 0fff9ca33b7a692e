package firmware

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// BenchmarkServeResumable has 1,000 devices download one 1 MiB artifact at once over TLS, each
// in two requests — the first half, then, as after a cut connection, the rest with Range and
// If-Range — from the archive (Store.Serve) and, for comparison, from a plain static file
// server (net/http's FileServer) on the same file. MB/s is the bytes delivered to all clients
// per second of wall time.
func BenchmarkServeResumable(b *testing.B) {
	const (
		clients = 1000
		size    = 1 << 20
	)
	s, err := Open(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	img := make([]byte, size)
	_, _ = rand.Read(img)
	sum, _, err := s.Put(bytes.NewReader(img))
	if err != nil {
		b.Fatal(err)
	}
	static := http.StripPrefix("/static/", http.FileServer(http.Dir(s.dir)))
	rel, _ := filepath.Rel(s.dir, s.path(sum))
	for _, c := range []struct{ name, path string }{
		{"archive", "/fw/" + sum},
		{"static", "/static/" + filepath.ToSlash(rel)},
	} {
		b.Run(c.name, func(b *testing.B) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if sha, ok := strings.CutPrefix(r.URL.Path, "/fw/"); ok {
					s.Serve(w, r, sha)
					return
				}
				static.ServeHTTP(w, r)
			}))
			srv.StartTLS()
			defer srv.Close()
			tr := srv.Client().Transport.(*http.Transport).Clone()
			tr.MaxIdleConnsPerHost = clients
			tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(clients)
			client := &http.Client{Transport: tr}
			defer tr.CloseIdleConnections()
			get := func(hdr map[string]string) (int64, string, error) {
				req, _ := http.NewRequest(http.MethodGet, srv.URL+c.path, nil)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					return 0, "", err
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				return n, resp.Header.Get("ETag"), err
			}
			b.ResetTimer()
			for b.Loop() {
				var (
					wg    sync.WaitGroup
					mu    sync.Mutex
					total int64
					fail  error
				)
				for range clients {
					wg.Go(func() {
						n1, etag, err := get(map[string]string{"Range": fmt.Sprintf("bytes=0-%d", size/2-1)})
						if err == nil {
							var n2 int64
							n2, _, err = get(map[string]string{"Range": fmt.Sprintf("bytes=%d-", size/2), "If-Range": etag})
							n1 += n2
						}
						mu.Lock()
						defer mu.Unlock()
						total += n1
						if err != nil && fail == nil {
							fail = err
						}
					})
				}
				wg.Wait()
				if fail != nil {
					b.Fatal(fail)
				}
				if total != clients*size {
					b.Fatalf("delivered %d bytes, want %d", total, clients*size)
				}
			}
			b.ReportMetric(float64(clients*size)*float64(b.N)/b.Elapsed().Seconds()/1e6, "MB/s")
		})
	}
}
