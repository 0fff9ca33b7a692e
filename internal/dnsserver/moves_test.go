package dnsserver

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
)

type moveLog struct {
	mu       sync.Mutex
	devices  [][]string
	unrouted int
}

func (l *moveLog) record(devices []string, unrouted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.devices = append(l.devices, devices)
	if unrouted {
		l.unrouted++
	}
}

func (l *moveLog) last() ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.devices) == 0 {
		return nil, l.unrouted
	}
	return l.devices[len(l.devices)-1], l.unrouted
}

// TestOnMoved: each reload tells which devices' answers changed: a group route, a route to
// a cluster with the same addresses (no move), a new default (every unrouted device), an
// expiry on the injected clock.
func TestOnMoved(t *testing.T) {
	r := newRig(t, nil)
	log := &moveLog{}
	r.srv.OnMoved(log.record)
	ctx := context.Background()

	r.route(t, registry.Route{Scope: registry.RouteGroup, Selector: "line-a", Cluster: "us-1"})
	got, unrouted := log.last()
	require.Equal(t, []string{"dev-1", "dev-2"}, got)
	require.Zero(t, unrouted)
	require.True(t, r.srv.HasRoute("dev-1"))
	require.False(t, r.srv.HasRoute("dev-3"))

	_, err := r.reg.AddCluster(ctx, registry.Cluster{Name: "us-2", Addresses: []netip.Addr{netip.MustParseAddr("198.51.100.1")}}, "o-test", "")
	require.NoError(t, err)
	n := len(log.devices)
	r.route(t, registry.Route{Scope: registry.RouteGroup, Selector: "line-a", Cluster: "us-2"})
	require.Len(t, log.devices, n, "the same addresses: nobody moves")

	_, err = r.reg.AddCluster(ctx, registry.Cluster{Name: "eu-2", Default: true, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.2")}}, "o-test", "")
	require.NoError(t, err)
	require.NoError(t, r.srv.Reload(ctx))
	_, unrouted = log.last()
	require.Equal(t, 1, unrouted, "a new default moves every device without a route")

	r.route(t, registry.Route{Scope: registry.RouteDevice, Selector: "dev-3", Address: netip.MustParseAddr("203.0.113.7"), ExpiresAt: testStart.Add(time.Minute)})
	got, _ = log.last()
	require.Equal(t, []string{"dev-3"}, got)
	n = len(log.devices)
	r.clk.Advance(time.Minute)
	require.Eventually(t, func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.devices) > n
	}, 10*time.Second, 5*time.Millisecond, "the expiry's reload tells the move")
	got, _ = log.last()
	require.Equal(t, []string{"dev-3"}, got)
}
