package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
)

// BenchmarkDashboard times the dashboard's fleet overview and devices pages, as a browser asks
// for them over HTTPS, on a server with 100,000 registered devices of which 19,000 were heard
// from just now (online to the monitor) and the rest two days ago (offline), across 8
// firmware versions, 5 models and 4 network operators. It reports each page's HTML bytes,
// and the first load's weight: the overview's HTML and the style sheet together.
func BenchmarkDashboard(b *testing.B) {
	const devices, online = 100_000, 19_000
	srv := servertest.Start(b, func(o *server.Options) { o.Monitor.Interval = time.Second })
	ctx := context.Background()
	now := time.Now()
	devs := make([]registry.DeviceImport, devices)
	for i := range devs {
		seen := now.Add(-48 * time.Hour)
		if i%(devices/online) == 0 && i/(devices/online) < online {
			seen = now
		}
		devs[i] = registry.DeviceImport{ID: fmt.Sprintf("dev-%06d", i), Model: fmt.Sprintf("model-%d", i%5),
			Operator: fmt.Sprintf("op-%d", i%4), Firmware: fmt.Sprintf("1.%d.0", i%8), LastSeen: seen}
	}
	n, err := srv.Registry().ImportDevices(ctx, devs, "bench", "")
	require.NoError(b, err)
	require.Equal(b, devices, n)
	require.Eventually(b, func() bool {
		counts, err := srv.Monitor().Liveness().Count("")
		return err == nil && len(counts) == 1 && counts[0].Online+counts[0].Silent+counts[0].Offline == devices
	}, 2*time.Minute, 100*time.Millisecond, "the monitor judges the whole fleet")
	counts, _ := srv.Monitor().Liveness().Count("")
	b.Logf("liveness: %+v", counts[0])

	base := "https://" + srv.HTTPAddr().String()
	jar, err := cookiejar.New(nil)
	require.NoError(b, err)
	c := &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: clientTLS(srv.CA().Pool())}}
	get := func(path string) []byte {
		resp, err := c.Get(base + path)
		require.NoError(b, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(b, err)
		require.Equal(b, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		return body
	}
	login := get("/login")
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(login)
	require.NotNil(b, csrf)
	resp, err := c.PostForm(base+"/login", url.Values{"csrf": {string(csrf[1])}, "token": {srv.AdminToken()}})
	require.NoError(b, err)
	resp.Body.Close()
	css := get("/static/style.css")

	for _, p := range []struct{ name, path string }{
		{"overview", "/"},
		{"fleet_rules", ""},
		{"devices", "/devices"},
		{"devices_page_1000", "/devices?after=dev-050000"},
		{"devices_by_model", "/devices?model=model-3"},
		{"devices_online", "/devices?state=online"},
		{"devices_search", "/devices?q=dev-0999"},
	} {
		b.Run(p.name, func(b *testing.B) {
			if p.name == "fleet_rules" {
				// What the overview's recorded series cost the rules engine once a minute: the
				// four sums over every device's series, as instant queries.
				for b.Loop() {
					for _, q := range []string{
						`sum(rate(millwright_device_disconnects_total{cause=~"keepalive_timeout|reset|protocol_error|takeover"}[5m]))`,
						`sum(rate(millwright_device_received_bytes_total[5m]))`, `sum(rate(millwright_device_sent_bytes_total[5m]))`,
						`sum(rate(millwright_device_ingest_delay_seconds_sum[5m])) / sum(rate(millwright_device_ingest_delay_seconds_count[5m]))`,
					} {
						req, err := http.NewRequest(http.MethodGet, base+"/api/v1/query?"+url.Values{"query": {q}}.Encode(), nil)
						require.NoError(b, err)
						req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
						resp, err := c.Do(req)
						require.NoError(b, err)
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						require.Equal(b, http.StatusOK, resp.StatusCode)
					}
				}
				return
			}
			var size int
			for b.Loop() {
				size = len(get(p.path))
			}
			b.ReportMetric(float64(size), "html-bytes")
			if p.path == "/" {
				b.ReportMetric(float64(size+len(css)), "first-load-bytes")
			}
		})
	}
}
