package millwrightcli

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server/servertest"
)

// artifactsDir is where the browser tests write their screenshots: $MILLWRIGHT_TEST_ARTIFACTS
// (scripts/test sets it), else a new temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MILLWRIGHT_TEST_ARTIFACTS")
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "millwright-artifacts-")
		require.NoError(t, err)
	}
	dir = filepath.Join(dir, "dashboard")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	t.Logf("screenshots in %s", dir)
	return dir
}

// TestDashboardInABrowser drives Debian's chromium through the dashboard of a real server:
// a viewer sees no button that would fail; an operator logs in through the form, filters the
// devices list, opens a device whose telemetry is charted, suspends and resumes it with the
// buttons, and pauses and resumes a rollout; every page is screenshot.
func TestDashboardInABrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	require.NoError(t, err, "Debian's chromium (scripts/test installs it)")
	srv := servertest.Start(t, nil)
	ctx := context.Background()
	base := "https://" + srv.HTTPAddr().String()
	shots := artifactsDir(t)

	// A device that sent telemetry over MQTT/TLS half an hour ago, and 40 more for a rollout.
	pair, err := srv.CA().DeviceKeyPair("pump-7", time.Now(), 24*time.Hour)
	require.NoError(t, err)
	require.NoError(t, srv.Registry().AddCertificate(ctx, "pump-7", pair.Leaf, true))
	require.NoError(t, srv.Registry().SetStatus(ctx, "pump-7", registry.StatusActive, "test", ""))
	sendBatches(t, &publisher{device: "pump-7", tls: &tls.Config{RootCAs: srv.CA().Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"},
		base: time.Now().Add(-30 * time.Minute).UnixMilli(), per: 20}, srv.MQTTAddr().String(), 0, 20)
	devs := make([]registry.DeviceImport, 40)
	for i := range devs {
		devs[i] = registry.DeviceImport{ID: fmt.Sprintf("gw-%03d", i), Model: "gw-200", Firmware: "1.0.0", LastSeen: time.Now()}
	}
	_, err = srv.Registry().ImportDevices(ctx, devs, "test", "")
	require.NoError(t, err)
	cli := newCLI(t, srv)
	cli.uploadReleases("gw-200", 1000, "1.0.0", "1.1.0")
	plan := filepath.Join(t.TempDir(), "plan.yml")
	require.NoError(t, os.WriteFile(plan, []byte("phases:\n  - {name: canary, percent: 10, soak: 1h}\n  - {name: complete, percent: 100}\ngates: []\n"), 0o600))
	cli.ok("rollouts", "create", "--version", "1.1.0", "--plan", plan, "--select", "model=gw-200", "--id", "r-web")
	_, viewerToken, err := srv.Registry().CreateOperator(ctx, "grafana", registry.RoleViewer, "test", "")
	require.NoError(t, err)

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 1000))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// Start the browser on its own context: a first action under a timeout's context would
	// tie the browser's life to that context.
	require.NoError(t, chromedp.Do(browser))
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(browser, 60*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(c, steps...), what)
	}
	shot := func(name string) {
		t.Helper()
		png := browserRun(t, browser, chromedp.FullScreenshot(100))
		require.NoError(t, os.WriteFile(filepath.Join(shots, name+".png"), png, 0o644))
	}
	login := func(token string) {
		do("log in", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Submit(chromedp.CSS("#token")),
			chromedp.WaitVisible(chromedp.CSS(".tiles")))
	}
	text := func(sel string) string {
		return strings.TrimSpace(browserRun(t, browser, chromedp.Text(chromedp.CSS(sel))))
	}
	count := func(sel string) int {
		return browserRun(t, browser, chromedp.Evaluate[int](`document.querySelectorAll(`+strconv.Quote(sel)+`).length`))
	}

	// A viewer sees the device, and no button to suspend it.
	do("login page", chromedp.Navigate(base+"/login"), chromedp.WaitVisible(chromedp.CSS("#token")))
	shot("login")
	login(viewerToken)
	do("viewer's device page", chromedp.Navigate(base+"/devices/pump-7"), chromedp.WaitVisible(chromedp.CSS("#device-status")))
	require.Zero(t, count("#suspend, #resume, #revoke, #run-diagnostic"), "a viewer sees no button that would fail")
	do("viewer's rollout page", chromedp.Navigate(base+"/rollouts/r-web"), chromedp.WaitVisible(chromedp.CSS("#rollout-state")))
	require.Zero(t, count("#pause, #resume, #abort, #rollback"))
	do("log out", chromedp.Click(chromedp.CSS(".logout button")), chromedp.WaitVisible(chromedp.CSS("#token")))

	// An operator.
	login(srv.AdminToken())
	shot("overview")
	do("filter the devices", chromedp.Navigate(base+"/devices"), chromedp.WaitVisible(chromedp.CSS("#q")),
		chromedp.SendKeys(chromedp.CSS("#q"), "gw-00"), chromedp.Submit(chromedp.CSS("#q")),
		chromedp.WaitVisible(chromedp.CSS(`a[href="/devices/gw-009"]`)))
	shot("devices-filtered")
	require.Equal(t, 10, count("#devices tbody tr"), "gw-000 … gw-009")
	do("devices", chromedp.Navigate(base+"/devices"), chromedp.WaitVisible(chromedp.CSS("#devices")))
	shot("devices")
	do("open the device", chromedp.Navigate(base+"/devices?q=pump"), chromedp.Click(chromedp.CSS(`a[href="/devices/pump-7"]`)),
		chromedp.WaitVisible(chromedp.CSS("#device-status")))
	points := browserRun(t, browser, chromedp.Evaluate[[]string](`[...document.querySelectorAll("svg.chart")].map(s => s.getAttribute("aria-label") + "=" + s.dataset.points)`))
	require.True(t, slices.ContainsFunc(points, func(p string) bool { return strings.HasPrefix(p, "dur=") && p != "dur=0" }),
		"the device's telemetry is charted with data: %v", points)
	shot("device")
	require.Equal(t, "active", text("#device-status"))
	do("suspend", chromedp.Click(chromedp.CSS("#suspend")), chromedp.WaitVisible(chromedp.CSS("#resume")))
	require.Equal(t, "suspended", text("#device-status"))
	do("resume", chromedp.Click(chromedp.CSS("#resume")), chromedp.WaitVisible(chromedp.CSS("#suspend")))
	require.Equal(t, "active", text("#device-status"))

	do("rollout", chromedp.Navigate(base+"/rollouts/r-web"), chromedp.WaitVisible(chromedp.CSS("#pause")))
	shot("rollout")
	require.Equal(t, "running", text("#rollout-state"))
	do("pause", chromedp.Click(chromedp.CSS("#pause")), chromedp.WaitVisible(chromedp.CSS("#resume")))
	require.Equal(t, "paused", text("#rollout-state"))
	do("resume", chromedp.Click(chromedp.CSS("#resume")), chromedp.WaitVisible(chromedp.CSS("#pause")))
	require.Equal(t, "running", text("#rollout-state"))

	for _, p := range []struct{ name, path string }{
		{"firmware", "/firmware"}, {"rollouts", "/rollouts"}, {"alerts", "/alerts"}, {"tokens", "/tokens"}, {"dns", "/dns"},
		{"query", "/query?expr=" + "sum+by+%28device%29+%28millwright_device_received_bytes_total%29"},
	} {
		do(p.name, chromedp.Navigate(base+p.path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		shot(p.name)
	}
	// A phone-width screen: the overview fits without sideways scrolling.
	do("phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS(".tiles")))
	require.False(t, browserRun(t, browser, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)),
		"no sideways scrolling at phone width")
	shot("overview-phone")
}

// browserRun runs one browser action that answers a value, within a minute.
func browserRun[T any](t *testing.T, browser context.Context, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(browser, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	require.NoError(t, err)
	return v
}
