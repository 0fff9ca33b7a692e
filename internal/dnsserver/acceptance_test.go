package dnsserver

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
)

// TestDigAcceptance asks Debian's dig what the acceptance lists: the wildcard
// default, a per-device override, a group override, a debug redirect that expires on the
// injected clock, and REFUSED outside the zone.
func TestDigAcceptance(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()

	// The wildcard: any device, known or not, gets the default cluster.
	for _, name := range []string{"dev-1." + testZone, "never-registered." + testZone, "a.b." + testZone} {
		res := r.dig(t, name, "A")
		require.Equal(t, "NOERROR", res.status, res.out)
		require.Equal(t, []string{"A 192.0.2.1"}, res.answers, res.out)
		require.Contains(t, res.flags, "aa")
		require.NotContains(t, res.flags, "ra")
	}
	require.Equal(t, []string{"AAAA 2001:db8::1"}, r.dig(t, "dev-3."+testZone, "AAAA").answers)
	require.Equal(t, []string{"A 192.0.2.1"}, r.dig(t, "DEV-1.GW.Example.ORG", "A").answers, "names are case-insensitive")
	require.Equal(t, "30", strings.Fields(r.dig(t, "dev-1."+testZone, "A").out[strings.Index(r.dig(t, "dev-1."+testZone, "A").out, "dev-1."):])[1], "the TTL")

	// A per-device override.
	r.route(t, registry.Route{Scope: registry.RouteDevice, Selector: "dev-3", Cluster: "us-1"})
	require.Equal(t, []string{"A 198.51.100.1"}, r.dig(t, "dev-3."+testZone, "A").answers)
	nodata := r.dig(t, "dev-3."+testZone, "AAAA")
	require.Equal(t, "NOERROR", nodata.status)
	require.Empty(t, nodata.answers, "us-1 has no IPv6 address")

	// A group override; a device's own route beats its group's.
	r.route(t, registry.Route{Scope: registry.RouteGroup, Selector: "line-a", Cluster: "us-1"})
	require.Equal(t, []string{"A 198.51.100.1"}, r.dig(t, "dev-1."+testZone, "A").answers)
	require.Equal(t, []string{"A 198.51.100.1"}, r.dig(t, "dev-2."+testZone, "A").answers)
	require.Equal(t, []string{"A 192.0.2.1"}, r.dig(t, "other."+testZone, "A").answers)

	// A debug redirect of dev-2 to one address, for ten minutes.
	serial := r.srv.Serial()
	r.route(t, registry.Route{Scope: registry.RouteDevice, Selector: "dev-2", Address: netip.MustParseAddr("203.0.113.7"),
		ExpiresAt: testStart.Add(10 * time.Minute)})
	require.Greater(t, r.srv.Serial(), serial)
	require.Equal(t, []string{"A 203.0.113.7"}, r.dig(t, "dev-2."+testZone, "A").answers)
	r.clk.Advance(10*time.Minute - time.Millisecond)
	require.Equal(t, []string{"A 203.0.113.7"}, r.dig(t, "dev-2."+testZone, "A").answers)
	serial = r.srv.Serial()
	r.clk.Advance(time.Millisecond)
	// At the expiry the answer reverts to the group's at once, and the server removes the
	// route from the registry (a new serial).
	require.Equal(t, []string{"A 198.51.100.1"}, r.dig(t, "dev-2."+testZone, "A").answers)
	require.Eventually(t, func() bool { return r.srv.Serial() > serial }, 10*time.Second, 5*time.Millisecond)
	rts, err := r.reg.Routes(ctx)
	require.NoError(t, err)
	require.Len(t, rts, 2)
	hist, err := r.reg.UpdateHistory(ctx, "dev-2", 1, 0)
	require.NoError(t, err)
	require.Contains(t, hist[0].Detail, registry.ActionRouteExpire)

	// Outside the zone: REFUSED, no recursion.
	for _, name := range []string{"example.com", "org", "example.org", "xgw.example.org"} {
		res := r.dig(t, name, "A")
		require.Equal(t, "REFUSED", res.status, res.out)
		require.Empty(t, res.answers)
	}

	// The apex: SOA and NS; a name below a device's own is not the wildcard's.
	soa := r.dig(t, testZone, "SOA")
	require.Len(t, soa.answers, 1)
	require.True(t, strings.HasPrefix(soa.answers[0], "SOA ns1."+testZone+". hostmaster."+testZone+". "), soa.answers[0])
	require.Equal(t, []string{"NS ns1." + testZone + "."}, r.dig(t, testZone, "NS").answers)
	require.Equal(t, "NXDOMAIN", r.dig(t, "x.dev-3."+testZone, "A").status)

	// TCP answers the same.
	require.Equal(t, []string{"A 198.51.100.1"}, r.dig(t, "+tcp", "dev-3."+testZone, "A").answers)
	require.Positive(t, testutil.ToFloat64(r.srv.m.queries.WithLabelValues("REFUSED")))
}

func TestNoDefaultCluster(t *testing.T) {
	r := newRig(t, nil)
	ctx := context.Background()
	_, err := r.reg.SetClusterDraining(ctx, "eu-1", true, "o-test", "")
	require.NoError(t, err)
	require.NoError(t, r.srv.Reload(ctx))
	res := r.dig(t, "dev-1."+testZone, "A")
	require.Equal(t, "NXDOMAIN", res.status, "a draining default answers nothing")
	r.route(t, registry.Route{Scope: registry.RouteTag, Selector: "site=north", Cluster: "us-1"})
	require.Equal(t, []string{"A 198.51.100.1"}, r.dig(t, "dev-3."+testZone, "A").answers, "a tag route")
}
