// Package netlimit bounds what network peers may have in progress at once: in total and per
// source address. A Limiter counts things in progress (handshakes, open connections, requests)
// per source; a Listener wraps a net.Listener and closes, at accept, the connections over its
// Limiter's bounds.
//
// The listeners of the server use it so that no one source address can take every handshake
// slot or every file descriptor: the MQTT gateway bounds the TLS handshakes in progress per
// source, and the HTTPS listener the connections open per source and in total.
//
// A source is an IP address; IPv6 sources are grouped by their /64 prefix, since one host
// commonly holds a whole /64 and could otherwise take a new address for every connection.
// Addresses that are not IP addresses (a Unix socket, a pipe) are one source together.
package netlimit

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Limit names the bound that refused an Acquire: a label value for a metric.
type Limit string

const (
	// LimitSource is the per-source-address bound (Options.PerSource).
	LimitSource Limit = "source"
	// LimitTotal is the bound across all sources (Options.Total).
	LimitTotal Limit = "total"
)

var (
	// ErrSourceLimit is an Acquire refused because its source address already has
	// Options.PerSource in progress.
	ErrSourceLimit = errors.New("too many in progress from this source address")
	// ErrTotalLimit is an Acquire refused because Options.Total are in progress.
	ErrTotalLimit = errors.New("too many in progress")
)

// Options configure a Limiter.
type Options struct {
	// PerSource bounds what one source address may have in progress at once. Zero or less
	// means no bound.
	PerSource int
	// Total bounds what all source addresses together may have in progress at once. Zero or
	// less means no bound.
	Total int
	// OnRefuse, when not nil, is called once for every refusal: a TryAcquire over a bound, or
	// an Acquire whose context ended while it waited. It receives the bound that stood in the
	// way, and is called without the Limiter's lock held; a Prometheus counter's Inc is what
	// it is for.
	OnRefuse func(Limit)
}

// Limiter counts what is in progress per source address, and admits more only within
// Options.PerSource and Options.Total. The zero Limiter is not usable; call New. It is safe for
// concurrent use.
//
// Acquire waits its turn, in order of arrival among the waiters it could run beside; TryAcquire
// refuses at once. Every successful Acquire or TryAcquire must be matched by one Release with
// the same source.
type Limiter struct {
	opts Options

	mu       sync.Mutex
	total    int
	bySource map[netip.Addr]int
	waiters  list.List                 // of *waiter, oldest first
	queues   map[netip.Addr]*list.List // the waiters of each source, oldest first
}

type waiter struct {
	src      netip.Addr
	granted  chan struct{} // closed once the waiter holds its place
	all, own *list.Element // in Limiter.waiters and in its source's queue
}

// New returns a Limiter with the bounds of opts.
func New(opts Options) *Limiter {
	return &Limiter{opts: opts, bySource: map[netip.Addr]int{}, queues: map[netip.Addr]*list.List{}}
}

// Source is the source address a limiter counts addr under: its IP address, an IPv4-mapped
// IPv6 address as IPv4, and an IPv6 address masked to its /64 prefix. Any other address (not
// a *net.TCPAddr or *net.UDPAddr, or one without an IP) is the zero netip.Addr.
func Source(addr net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		return netip.Addr{}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err == nil {
			ip = p.Addr()
		}
	}
	return ip.WithZone("")
}

// blocker is the bound src would exceed now, or "" when it may proceed. Called with mu held.
func (l *Limiter) blocker(src netip.Addr) Limit {
	if l.opts.PerSource > 0 && l.bySource[src] >= l.opts.PerSource {
		return LimitSource
	}
	if l.opts.Total > 0 && l.total >= l.opts.Total {
		return LimitTotal
	}
	return ""
}

func (l *Limiter) takeLocked(src netip.Addr) {
	l.total++
	l.bySource[src]++
}

// TryAcquire takes a place for src if both bounds allow it now, and otherwise returns
// ErrSourceLimit or ErrTotalLimit (and calls Options.OnRefuse). It never waits, and never
// takes a place a waiter could have: waiters are admitted as soon as the bounds allow.
func (l *Limiter) TryAcquire(src netip.Addr) error {
	l.mu.Lock()
	b := l.blocker(src)
	if b == "" {
		l.takeLocked(src)
	}
	l.mu.Unlock()
	if b == "" {
		return nil
	}
	l.refused(b)
	return b.err()
}

// Acquire takes a place for src, waiting while either bound is reached, until ctx ends; then
// it returns an error that wraps both the bound it waited for (ErrSourceLimit or
// ErrTotalLimit) and ctx's error, and calls Options.OnRefuse.
//
// Waiters are admitted in order of arrival, except that one held back only by its own
// source's bound does not hold back the waiters of other sources behind it.
func (l *Limiter) Acquire(ctx context.Context, src netip.Addr) error {
	l.mu.Lock()
	if l.blocker(src) == "" {
		l.takeLocked(src)
		l.mu.Unlock()
		return nil
	}
	w := &waiter{src: src, granted: make(chan struct{})}
	w.all = l.waiters.PushBack(w)
	q := l.queues[src]
	if q == nil {
		q = list.New()
		l.queues[src] = q
	}
	w.own = q.PushBack(w)
	l.mu.Unlock()

	select {
	case <-w.granted:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	select {
	case <-w.granted:
		l.mu.Unlock() // admitted as ctx ended: the place is held
		return nil
	default:
	}
	l.dequeueLocked(w)
	b := l.blocker(src)
	l.mu.Unlock()
	if b == "" {
		b = LimitTotal // not reached: a waiter is always held back by a bound
	}
	l.refused(b)
	return fmt.Errorf("%w: %w", b.err(), ctx.Err())
}

func (l *Limiter) dequeueLocked(w *waiter) {
	l.waiters.Remove(w.all)
	q := l.queues[w.src]
	q.Remove(w.own)
	if q.Len() == 0 {
		delete(l.queues, w.src)
	}
}

func (l *Limiter) grantLocked(w *waiter) {
	l.dequeueLocked(w)
	l.takeLocked(w.src)
	close(w.granted)
}

// Release gives back a place taken for src by Acquire or TryAcquire, and admits the waiter
// that may now proceed, if any. Releasing a place never taken panics.
func (l *Limiter) Release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.bySource[src]
	if n <= 0 {
		panic("netlimit: Release without Acquire for " + src.String())
	}
	wasFull := l.opts.Total > 0 && l.total >= l.opts.Total
	if n == 1 {
		delete(l.bySource, src)
	} else {
		l.bySource[src] = n - 1
	}
	l.total--
	if l.waiters.Len() == 0 {
		return
	}
	if !wasFull {
		// Only src's own bound can have held anyone back: admit its oldest waiter.
		if q := l.queues[src]; q != nil {
			l.grantLocked(q.Front().Value.(*waiter))
		}
		return
	}
	// The total bound held everyone back: admit the oldest waiter whose own source is within
	// its bound. This scan passes over the waiters of sources at their bound, at most every
	// waiter once.
	for e := l.waiters.Front(); e != nil; e = e.Next() {
		if w := e.Value.(*waiter); l.blocker(w.src) == "" {
			l.grantLocked(w)
			return
		}
	}
}

// InProgress is the number of places held now, over all sources.
func (l *Limiter) InProgress() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// InProgressFrom is the number of places src holds now.
func (l *Limiter) InProgressFrom(src netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bySource[src]
}

// Waiting is the number of Acquire calls waiting for a place now.
func (l *Limiter) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiters.Len()
}

func (l *Limiter) refused(b Limit) {
	if l.opts.OnRefuse != nil {
		l.opts.OnRefuse(b)
	}
}

func (b Limit) err() error {
	if b == LimitSource {
		return ErrSourceLimit
	}
	return ErrTotalLimit
}
