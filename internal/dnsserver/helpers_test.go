package dnsserver

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/registry"
)

const testZone = "gw.example.org"

// testKey is a TSIG key for tests: name:algorithm:base64 of 32 bytes.
const testKey = "xfr-key:hmac-sha256:bWlsbHdyaWdodC10ZXN0LXRzaWcta2V5LTMyLWJ5dGU="

var testStart = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

type rig struct {
	reg *registry.Registry
	clk *clock.Fake
	srv *Server
}

// newRig opens a SQLite registry on a fake clock with clusters eu-1 (default) and us-1 and
// devices dev-1..dev-3 (dev-1 and dev-2 in group line-a, dev-3 tagged site=north), and starts
// a server for testZone on a free loopback port.
func newRig(t *testing.T, change func(o *Options)) *rig {
	t.Helper()
	ctx := context.Background()
	clk := clock.NewFake(testStart)
	reg, err := registry.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "registry.db"), "", clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Close()) })
	for id, groups := range map[string][]string{"dev-1": {"line-a"}, "dev-2": {"line-a"}, "dev-3": nil} {
		var tags map[string]string
		if id == "dev-3" {
			tags = map[string]string{"site": "north"}
		}
		_, err := reg.CreateDevice(ctx, id, tags, groups, "o-test", "")
		require.NoError(t, err)
	}
	_, err = reg.AddCluster(ctx, registry.Cluster{Name: "eu-1", Default: true, Region: "eu",
		Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}, "o-test", "")
	require.NoError(t, err)
	_, err = reg.AddCluster(ctx, registry.Cluster{Name: "us-1", Region: "us",
		Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}, "o-test", "")
	require.NoError(t, err)
	opts := DefaultOptions()
	opts.Zone, opts.Listen, opts.TSIGKeys = testZone, "127.0.0.1:0", []string{testKey}
	if change != nil {
		change(&opts)
	}
	srv, err := New(opts, reg, clk, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, srv.Start(ctx))
	t.Cleanup(func() { require.NoError(t, srv.Stop()) })
	return &rig{reg: reg, clk: clk, srv: srv}
}

func (r *rig) route(t *testing.T, rt registry.Route) {
	t.Helper()
	_, _, err := r.reg.SetRoute(context.Background(), rt, "o-test", "")
	require.NoError(t, err)
	require.NoError(t, r.srv.Reload(context.Background()))
}

// digResult is what dig printed: the status and the answer section's data fields.
type digResult struct {
	status  string
	flags   string
	answers []string
	out     string
}

// dig runs Debian's dig against addr with args and parses its output.
func dig(t *testing.T, host string, port int, args ...string) digResult {
	t.Helper()
	all := append([]string{"@" + host, "-p", strconv.Itoa(port), "+norecurse", "+tries=1", "+time=3", "+noall", "+comments", "+answer"}, args...)
	out, err := exec.Command("dig", all...).CombinedOutput()
	res := digResult{out: string(out)}
	for line := range strings.SplitSeq(string(out), "\n") {
		if _, rest, ok := strings.Cut(line, "status: "); ok {
			res.status, _, _ = strings.Cut(rest, ",")
		}
		if _, rest, ok := strings.Cut(line, ";; flags: "); ok {
			res.flags, _, _ = strings.Cut(rest, ";")
		}
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 5 {
			res.answers = append(res.answers, f[3]+" "+strings.Join(f[4:], " "))
		}
	}
	if err != nil && res.status == "" {
		t.Logf("dig %v: %v\n%s", all, err, out)
	}
	return res
}

func (r *rig) dig(t *testing.T, args ...string) digResult {
	a := r.srv.Addr()
	return dig(t, a.IP.String(), a.Port, args...)
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
