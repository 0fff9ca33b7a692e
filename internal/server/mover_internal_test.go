package server

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

type fakeGateway struct {
	mu        sync.Mutex
	connected map[string]bool
	moved     []string
	refs      []string
}

func (g *fakeGateway) MoveDevice(id, ref string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.connected[id] {
		return false
	}
	delete(g.connected, id)
	g.moved, g.refs = append(g.moved, id), append(g.refs, ref)
	return true
}

func (g *fakeGateway) Devices() []string { return nil }

func (g *fakeGateway) LocalAddr(id string) (netip.Addr, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return netip.Addr{}, g.connected[id]
}

func (g *fakeGateway) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.moved)
}

// TestMoverRate: moved devices are told to reconnect at most rate a second, on the injected
// clock; devices not connected here cost no wait; a device queued twice is moved once.
func TestMoverRate(t *testing.T) {
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	gw := &fakeGateway{connected: map[string]bool{"d1": true, "d2": true, "d3": true, "d5": true}}
	mv := &mover{gw: gw, clk: clk, log: slog.New(slog.DiscardHandler), zone: "gw.example.org", rate: 100,
		pending: map[string]bool{}, wake: make(chan struct{}, 1),
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "m"}, []string{"result"})}
	mv.next.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mv.Run(ctx) }()

	// A drain at 2 a second.
	mv.setNext(2)
	mv.onMoved([]string{"d1", "d2", "d3", "d4", "d5", "d2"}, false)
	require.Eventually(t, func() bool { return gw.count() == 1 }, 5*time.Second, time.Millisecond)
	for want := 2; want <= 4; want++ {
		clk.BlockUntil(1) // the mover waits on the clock
		require.Equal(t, want-1, gw.count(), "nothing moves before 1/rate passed")
		clk.Advance(500 * time.Millisecond)
		require.Eventually(t, func() bool { return gw.count() == want }, 5*time.Second, time.Millisecond)
	}
	require.Equal(t, []string{"d1", "d2", "d3", "d5"}, gw.moved, "d4 is not connected; d2 once")
	require.Equal(t, "d1.gw.example.org", gw.refs[0])
	cancel()
	require.NoError(t, <-done)
}
