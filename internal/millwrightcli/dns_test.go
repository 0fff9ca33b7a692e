package millwrightcli

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestDNSCLI drives millwright clusters, devices route and gateways drain against a real
// server with --dns-listen, checking the answers with dig; bad input is refused.
func TestDNSCLI(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, func(o *server.Options) {
		o.DNSListen = "127.0.0.1:0"
		o.Zone = "gw.example.org"
	})
	require.Eventually(t, func() bool { return srv.DNS().Addr() != nil }, 10*time.Second, 10*time.Millisecond)
	a := srv.DNS().Addr()
	dig := func(name string) string {
		out, err := exec.Command("dig", "@"+a.IP.String(), "-p", strconv.Itoa(a.Port), "+short", "+tries=1", "+time=3", name, "A").Output()
		require.NoError(t, err)
		return strings.TrimSpace(string(out))
	}
	cli := newCLI(t, srv)
	ctx := context.Background()
	for _, id := range []string{"dev-1", "dev-2"} {
		_, err := srv.Registry().CreateDevice(ctx, id, map[string]string{"site": "north"}, []string{"line-a"}, "test", "")
		require.NoError(t, err)
	}

	cli.ok("clusters", "add", "eu-1", "--address", "192.0.2.1", "--address", "2001:db8::1", "--region", "eu", "--default")
	cli.ok("clusters", "add", "us-1", "--address", "198.51.100.1", "--region", "us")
	var cl api.ClusterList
	decodeStrict(t, cli.ok("clusters", "list", "-o", "json"), &cl)
	require.Len(t, cl.Clusters, 2)
	require.Contains(t, cli.ok("clusters", "list"), "eu-1")
	require.Equal(t, "192.0.2.1", dig("dev-1.gw.example.org"))

	// Bad input.
	code, _, stderr := cli.run("", "clusters", "add", "x-1", "--address", "192.0.2.300")
	require.Equal(t, 2, code, stderr)
	require.Contains(t, stderr, "192.0.2.300")
	code, _, stderr = cli.run("", "devices", "route", "dev-1", "--cluster", "mars-1")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "mars-1")
	code, _, stderr = cli.run("", "devices", "route", "dev-1", "--address", "300.1.1.1")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "300.1.1.1")
	code, _, _ = cli.run("", "devices", "route", "dev-1", "--group", "line-a", "--cluster", "us-1")
	require.Equal(t, 2, code, "one selection at a time")

	// Group, tag and device routes, and a debug redirect.
	var ch api.RouteChange
	decodeStrict(t, cli.ok("devices", "route", "--group", "line-a", "--cluster", "us-1", "-o", "json"), &ch)
	require.Equal(t, []string{"dev-1", "dev-2"}, ch.Devices)
	require.Equal(t, "198.51.100.1", dig("dev-2.gw.example.org"))
	cli.ok("devices", "route", "--tag", "site=north", "--cluster", "eu-1")
	require.Equal(t, "198.51.100.1", dig("dev-2.gw.example.org"), "the group's route beats the tag's")
	out := cli.ok("devices", "route", "dev-1", "--address", "203.0.113.7", "--expires", "10m")
	require.Contains(t, out, "until")
	require.Equal(t, "203.0.113.7", dig("dev-1.gw.example.org"))
	cli.ok("devices", "route", "dev-1", "--clear")
	require.Equal(t, "198.51.100.1", dig("dev-1.gw.example.org"))

	// Removing a cluster in use is refused; draining it sends its devices on.
	code, _, stderr = cli.run("", "clusters", "remove", "us-1")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "in use")
	code, _, _ = cli.run("", "gateways", "drain", "us-1", "--rate", "0/s")
	require.Equal(t, 2, code)
	require.Contains(t, cli.ok("gateways", "drain", "us-1", "--rate", "50/s"), "draining cluster us-1")
	require.Equal(t, "192.0.2.1", dig("dev-2.gw.example.org"), "the tag's route answers now")
	cli.ok("gateways", "drain", "us-1", "--undo")
	require.Equal(t, "198.51.100.1", dig("dev-2.gw.example.org"))
	cli.ok("devices", "route", "--group", "line-a", "--clear")
	cli.ok("devices", "route", "--tag", "site=north", "--clear")
	cli.ok("clusters", "remove", "us-1")
}
