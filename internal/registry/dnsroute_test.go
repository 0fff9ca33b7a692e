package registry

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestClustersAndRoutes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		for _, id := range []string{"dev-1", "dev-2", "dev-3"} {
			_, err := r.CreateDevice(ctx, id, map[string]string{"site": "north"}, []string{"line-a"}, "o-test", "")
			require.NoError(t, err)
		}
		rev0, err := r.DNSRevision(ctx)
		require.NoError(t, err)

		eu, err := r.AddCluster(ctx, Cluster{Name: "eu-1", Region: "eu", Default: true,
			Addresses: []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.1")}}, "o-test", "10.0.0.9")
		require.NoError(t, err)
		require.Equal(t, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}, eu.Addresses)
		_, err = r.AddCluster(ctx, Cluster{Name: "us-1", Default: true, Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}, "o-test", "")
		require.NoError(t, err)
		cs, err := r.Clusters(ctx)
		require.NoError(t, err)
		require.Len(t, cs, 2)
		require.False(t, cs[0].Default, "the newer default took the default from eu-1")
		require.True(t, cs[1].Default)

		// Bad input touches nothing.
		_, err = r.AddCluster(ctx, Cluster{Name: "eu-1", Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.9")}}, "o-test", "")
		require.ErrorIs(t, err, ErrExists)
		_, err = r.AddCluster(ctx, Cluster{Name: "none"}, "o-test", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, err = r.AddCluster(ctx, Cluster{Name: "zero", Addresses: []netip.Addr{netip.IPv4Unspecified()}}, "o-test", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, _, err = r.SetRoute(ctx, Route{Scope: RouteDevice, Selector: "dev-1", Cluster: "mars-1"}, "o-test", "")
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorContains(t, err, `"mars-1"`)
		_, _, err = r.SetRoute(ctx, Route{Scope: RouteDevice, Selector: "dev-9", Cluster: "eu-1"}, "o-test", "")
		require.ErrorIs(t, err, ErrNotFound)
		_, _, err = r.SetRoute(ctx, Route{Scope: RouteTag, Selector: "site", Cluster: "eu-1"}, "o-test", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, _, err = r.SetRoute(ctx, Route{Scope: RouteDevice, Selector: "dev-1"}, "o-test", "")
		require.ErrorIs(t, err, ErrInvalid)
		_, _, err = r.SetRoute(ctx, Route{Scope: RouteDevice, Selector: "dev-1", Cluster: "eu-1", ExpiresAt: testStart.Add(-time.Second)}, "o-test", "")
		require.ErrorIs(t, err, ErrInvalid)
		rts, err := r.Routes(ctx)
		require.NoError(t, err)
		require.Empty(t, rts)

		// A group route moves its members and is in each one's history.
		_, moved, err := r.SetRoute(ctx, Route{Scope: RouteGroup, Selector: "line-a", Cluster: "eu-1"}, "o-test", "10.0.0.9")
		require.NoError(t, err)
		require.Equal(t, []string{"dev-1", "dev-2", "dev-3"}, moved)
		hist, err := r.UpdateHistory(ctx, "dev-2", 0, 0)
		require.NoError(t, err)
		require.Len(t, hist, 1)
		require.Equal(t, HistoryRoute, hist[0].Event)
		require.Contains(t, hist[0].Detail, "group:line-a -> cluster eu-1 by o-test")
		audit, err := r.ListAudit(ctx, 1, 0)
		require.NoError(t, err)
		require.Equal(t, ActionRouteSet, audit[0].Action)
		require.Equal(t, "group:line-a", audit[0].Target)
		require.Equal(t, "10.0.0.9", audit[0].Remote)

		// A device's debug redirect to an address, with an expiry.
		rt, moved, err := r.SetRoute(ctx, Route{Scope: RouteDevice, Selector: "dev-1", Address: netip.MustParseAddr("203.0.113.7"),
			ExpiresAt: testStart.Add(10 * time.Minute)}, "o-test", "")
		require.NoError(t, err)
		require.Equal(t, []string{"dev-1"}, moved)
		require.Equal(t, testStart.Add(10*time.Minute).UTC().Truncate(time.Millisecond), rt.ExpiresAt)
		_, _, err = r.SetRoute(ctx, Route{Scope: RouteTag, Selector: "site=north", Cluster: "us-1"}, "o-test", "")
		require.NoError(t, err)

		// A cluster with routes cannot be removed.
		require.ErrorIs(t, r.RemoveCluster(ctx, "eu-1", "o-test", ""), ErrInUse)
		require.ErrorIs(t, r.RemoveCluster(ctx, "nope", "o-test", ""), ErrNotFound)

		d, err := r.DNSData(ctx)
		require.NoError(t, err)
		require.Greater(t, d.Revision, rev0)
		require.Len(t, d.Routes, 3)
		require.Equal(t, map[string][]string{"line-a": {"dev-1", "dev-2", "dev-3"}}, d.GroupMembers)
		require.Equal(t, map[string][]string{"site=north": {"dev-1", "dev-2", "dev-3"}}, d.TagMembers)

		// Membership changes of routed groups and tags move the revision; others do not.
		rev := d.Revision
		require.NoError(t, r.SetGroups(ctx, "dev-3", nil, []string{"line-a"}, "o-test", ""))
		rev2, err := r.DNSRevision(ctx)
		require.NoError(t, err)
		require.Greater(t, rev2, rev)
		require.NoError(t, r.SetGroups(ctx, "dev-3", []string{"line-b"}, nil, "o-test", ""))
		require.NoError(t, r.SetTags(ctx, "dev-3", map[string]string{"colour": "red"}, nil, "o-test", ""))
		rev3, err := r.DNSRevision(ctx)
		require.NoError(t, err)
		require.Equal(t, rev2, rev3)
		require.NoError(t, r.SetTags(ctx, "dev-3", map[string]string{"site": "south"}, nil, "o-test", ""))
		rev4, err := r.DNSRevision(ctx)
		require.NoError(t, err)
		require.Greater(t, rev4, rev3)

		// Expiry follows the registry's clock.
		none, err := r.ExpireRoutes(ctx)
		require.NoError(t, err)
		require.Empty(t, none)
		fakeClock(r).Advance(10 * time.Minute)
		expired, err := r.ExpireRoutes(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"dev-1"}, expired)
		hist, err = r.UpdateHistory(ctx, "dev-1", 0, 0)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(hist[0].Detail, ActionRouteExpire+" device:dev-1"), hist[0].Detail)

		// Clearing.
		cleared, err := r.ClearRoute(ctx, RouteGroup, "line-a", "o-test", "")
		require.NoError(t, err)
		require.Equal(t, []string{"dev-1", "dev-2"}, cleared)
		_, err = r.ClearRoute(ctx, RouteGroup, "line-a", "o-test", "")
		require.ErrorIs(t, err, ErrNotFound)

		// Draining a cluster names the devices its routes send there.
		drained, err := r.SetClusterDraining(ctx, "us-1", true, "o-test", "")
		require.NoError(t, err)
		require.Equal(t, []string{"dev-1", "dev-2"}, drained)
		cs, err = r.Clusters(ctx)
		require.NoError(t, err)
		require.True(t, cs[1].Draining)

		_, err = r.ClearRoute(ctx, RouteTag, "site=north", "o-test", "")
		require.NoError(t, err)
		require.NoError(t, r.RemoveCluster(ctx, "us-1", "o-test", ""))
		cs, err = r.Clusters(ctx)
		require.NoError(t, err)
		require.Len(t, cs, 1)
	})
}
