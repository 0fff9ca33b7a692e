package netlimit_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/netlimit"
)

var (
	srcA = netip.MustParseAddr("192.0.2.1")
	srcB = netip.MustParseAddr("192.0.2.2")
	srcC = netip.MustParseAddr("192.0.2.3")
)

func TestSource(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr net.Addr
		want string
	}{
		{"IPv4", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{"IPv4 in a 16-byte slice", &net.TCPAddr{IP: net.ParseIP("192.0.2.7").To16(), Port: 1}, "192.0.2.7"},
		{"IPv4-mapped IPv6", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7")}, "192.0.2.7"},
		{"IPv6 grouped by /64", &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), Zone: "eth0"}, "2001:db8:1:2::"},
		{"UDP", &net.UDPAddr{IP: net.ParseIP("198.51.100.1")}, "198.51.100.1"},
		{"not an IP address", &net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "invalid IP"},
		{"no IP", &net.TCPAddr{}, "invalid IP"},
	} {
		require.Equal(t, tc.want, netlimit.Source(tc.addr).String(), tc.name)
	}
	a := netlimit.Source(&net.TCPAddr{IP: net.ParseIP("2001:db8::1")})
	b := netlimit.Source(&net.TCPAddr{IP: net.ParseIP("2001:db8::ffff:1")})
	require.Equal(t, a, b, "one /64 is one source")
}

// refusals counts OnRefuse calls by bound.
type refusals struct {
	mu sync.Mutex
	n  map[netlimit.Limit]int
}

func (r *refusals) hook(l netlimit.Limit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[netlimit.Limit]int{}
	}
	r.n[l]++
}

func (r *refusals) get(l netlimit.Limit) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[l]
}

func TestTryAcquire(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        netlimit.Options
		acquire     []netip.Addr
		wantErr     []error
		bySrc, byTo int // refusals per bound
	}{
		{"no bounds", netlimit.Options{}, []netip.Addr{srcA, srcA, srcA}, []error{nil, nil, nil}, 0, 0},
		{"per source", netlimit.Options{PerSource: 2}, []netip.Addr{srcA, srcA, srcA, srcB},
			[]error{nil, nil, netlimit.ErrSourceLimit, nil}, 1, 0},
		{"total", netlimit.Options{Total: 2}, []netip.Addr{srcA, srcB, srcC},
			[]error{nil, nil, netlimit.ErrTotalLimit}, 0, 1},
		{"source bound first", netlimit.Options{PerSource: 1, Total: 2}, []netip.Addr{srcA, srcB, srcA, srcC},
			[]error{nil, nil, netlimit.ErrSourceLimit, netlimit.ErrTotalLimit}, 1, 1},
	} {
		var r refusals
		tc.opts.OnRefuse = r.hook
		l := netlimit.New(tc.opts)
		held := 0
		for i, src := range tc.acquire {
			err := l.TryAcquire(src)
			if tc.wantErr[i] == nil {
				require.NoError(t, err, "%s: #%d", tc.name, i)
				held++
			} else {
				require.ErrorIs(t, err, tc.wantErr[i], "%s: #%d", tc.name, i)
			}
		}
		require.Equal(t, held, l.InProgress(), tc.name)
		require.Equal(t, tc.bySrc, r.get(netlimit.LimitSource), tc.name)
		require.Equal(t, tc.byTo, r.get(netlimit.LimitTotal), tc.name)
	}

	l := netlimit.New(netlimit.Options{PerSource: 1})
	require.NoError(t, l.TryAcquire(srcA))
	require.Equal(t, 1, l.InProgressFrom(srcA))
	l.Release(srcA)
	require.Zero(t, l.InProgressFrom(srcA))
	require.NoError(t, l.TryAcquire(srcA), "the place is free again")
	require.Panics(t, func() { l.Release(srcB) })
}

// acquireAsync starts an Acquire and returns a channel that receives its result.
func acquireAsync(ctx context.Context, l *netlimit.Limiter, src netip.Addr) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- l.Acquire(ctx, src) }()
	return ch
}

func waitFor(t *testing.T, l *netlimit.Limiter, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return l.Waiting() == n }, 5*time.Second, time.Millisecond)
}

func requireBlocked(t *testing.T, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("admitted early: %v", err)
	default:
	}
}

func requireAdmitted(t *testing.T, ch <-chan error) {
	t.Helper()
	select {
	case err := <-ch:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("not admitted")
	}
}

// TestAcquireOrder: waiters are admitted in order of arrival when the total bound frees a
// place, but one held back by its own source's bound does not hold back other sources.
func TestAcquireOrder(t *testing.T) {
	ctx := context.Background()
	l := netlimit.New(netlimit.Options{PerSource: 1, Total: 2})
	require.NoError(t, l.Acquire(ctx, srcA))
	require.NoError(t, l.Acquire(ctx, srcB))

	a2 := acquireAsync(ctx, l, srcA) // held by A's bound and the total
	waitFor(t, l, 1)
	c1 := acquireAsync(ctx, l, srcC) // held by the total only
	waitFor(t, l, 2)
	c2 := acquireAsync(ctx, l, srcC)
	waitFor(t, l, 3)

	l.Release(srcB) // a place in total; A is still at its bound, so C's first waiter goes
	requireAdmitted(t, c1)
	requireBlocked(t, a2)
	requireBlocked(t, c2)

	l.Release(srcA) // A's waiter is older than C's second
	requireAdmitted(t, a2)
	requireBlocked(t, c2)
	require.Equal(t, 2, l.InProgress())

	l.Release(srcA)
	requireBlocked(t, c2) // C at its bound
	l.Release(srcC)
	requireAdmitted(t, c2)
	require.Zero(t, l.Waiting())
	require.Equal(t, 1, l.InProgress())
}

// TestAcquireGivesUp: a waiter whose context ends returns both the bound and the context's
// error, is counted, and leaves no trace.
func TestAcquireGivesUp(t *testing.T) {
	var r refusals
	l := netlimit.New(netlimit.Options{PerSource: 1, OnRefuse: r.hook})
	require.NoError(t, l.Acquire(context.Background(), srcA))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := l.Acquire(ctx, srcA)
	require.ErrorIs(t, err, netlimit.ErrSourceLimit)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Equal(t, 1, r.get(netlimit.LimitSource))
	require.Zero(t, l.Waiting())
	l.Release(srcA)
	require.Zero(t, l.InProgress())
	require.NoError(t, l.TryAcquire(srcA))
}

// TestConcurrent: many goroutines acquiring and releasing never exceed either bound, and
// every waiter is admitted in the end.
func TestConcurrent(t *testing.T) {
	const perSource, total = 3, 5
	l := netlimit.New(netlimit.Options{PerSource: perSource, Total: total})
	srcs := []netip.Addr{srcA, srcB, srcC}
	var (
		mu         sync.Mutex
		bySrc      = map[netip.Addr]int{}
		current    int
		violations atomic.Int64
		wg         sync.WaitGroup
	)
	for i := range 300 {
		wg.Go(func() {
			src := srcs[i%len(srcs)]
			if l.Acquire(context.Background(), src) != nil {
				violations.Add(1)
				return
			}
			mu.Lock()
			bySrc[src]++
			current++
			if bySrc[src] > perSource || current > total {
				violations.Add(1)
			}
			mu.Unlock()
			mu.Lock()
			bySrc[src]--
			current--
			mu.Unlock()
			l.Release(src)
		})
	}
	wg.Wait()
	require.Zero(t, l.InProgress())
	require.Zero(t, l.Waiting())
	require.Zero(t, violations.Load())
}

// TestListener: over real TCP from two source addresses, connections over the per-source
// bound are closed at accept and counted, and closing one makes room for the next.
func TestListener(t *testing.T) {
	var r refusals
	lim := netlimit.New(netlimit.Options{PerSource: 2, Total: 3, OnRefuse: r.hook})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln := netlimit.NewListener(raw, lim)
	defer ln.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", raw.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// closedByServer reports whether the server closed c (EOF), rather than keeping it open.
	closedByServer := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return err == io.EOF
	}

	a1, a2 := dial("127.0.0.1"), dial("127.0.0.1")
	s1, s2 := <-accepted, <-accepted
	a3 := dial("127.0.0.1")
	require.True(t, closedByServer(a3), "third from one source")
	require.Eventually(t, func() bool { return r.get(netlimit.LimitSource) == 1 }, 5*time.Second, time.Millisecond)

	b1 := dial("127.0.0.2")
	<-accepted
	b2 := dial("127.0.0.2")
	require.True(t, closedByServer(b2), "fourth in total")
	require.Eventually(t, func() bool { return r.get(netlimit.LimitTotal) == 1 }, 5*time.Second, time.Millisecond)
	require.False(t, closedByServer(a1))
	require.False(t, closedByServer(a2))
	require.False(t, closedByServer(b1))

	require.NoError(t, s1.Close())
	_ = s1.Close()
	require.Equal(t, 2, lim.InProgress(), "a second close gives back nothing")
	dial("127.0.0.1")
	s4 := <-accepted
	require.Equal(t, netip.MustParseAddr("127.0.0.1"), netlimit.Source(s4.RemoteAddr()))
	require.Equal(t, 3, lim.InProgress())
	require.NoError(t, s2.Close())
	require.NoError(t, s4.Close())
	require.Equal(t, 1, lim.InProgress())
}
