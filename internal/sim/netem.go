package sim

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/clock"
)

// errOutage is what a dial during a simulated network outage returns.
var errOutage = errors.New("network unreachable (simulated outage)")

// faults counts the faults the simulator injected, for the summary.
type faults struct {
	firmwareDrops, networkDrops, natKills, outageDials, outages atomic.Uint64
}

// dialer is the agent.Dialer of one simulated device: it binds the device's source address
// and wraps every connection in the profile's network behaviour and its firmware's faults.
type dialer struct {
	base   net.Dialer
	clk    clock.Clock
	net    Network
	fwDrop time.Duration // mean time between firmware drops; 0: none
	outage *outageState  // nil: no outages
	faults *faults
	rnd    *lockedRand
}

var _ agent.Dialer = (*dialer)(nil)

// lockedRand is a per-device random source shared by its connection goroutines.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) float() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

// exp draws an exponentially distributed duration with the given mean.
func (l *lockedRand) exp(mean time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Duration(l.r.ExpFloat64() * float64(mean))
}

func (d *dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.outage != nil && d.outage.active(d.clk.Now()) {
		d.faults.outageDials.Add(1)
		return nil, &net.OpError{Op: "dial", Net: network, Err: errOutage}
	}
	raw, err := d.base.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c := &conn{Conn: raw, d: d, closed: make(chan struct{}), last: d.clk.Now()}
	if d.fwDrop > 0 {
		c.timers = append(c.timers, d.clk.AfterFunc(d.rnd.exp(d.fwDrop), func() { c.cut(&d.faults.firmwareDrops) }))
	}
	if d.net.DropInterval > 0 {
		c.timers = append(c.timers, d.clk.AfterFunc(d.rnd.exp(d.net.DropInterval), func() { c.cut(&d.faults.networkDrops) }))
	}
	if d.outage != nil {
		d.outage.add(c)
	}
	return c, nil
}

// conn is one simulated connection. Faults either cut it (the socket is closed under the
// agent, which sees an error at once) or make it silent (what is written is lost, nothing
// arrives: the agent finds out by its keepalive or ack timeout).
type conn struct {
	net.Conn
	d      *dialer
	timers []clock.Timer

	mu     sync.Mutex
	last   time.Time // last traffic either way, for the NAT idle timeout
	silent bool

	closeOnce sync.Once
	closed    chan struct{}
	cutOnce   sync.Once
}

// cut closes the socket under the agent and counts the fault.
func (c *conn) cut(n *atomic.Uint64) {
	c.cutOnce.Do(func() {
		select {
		case <-c.closed:
			return // already closed by the agent
		default:
		}
		n.Add(1)
		_ = c.Conn.Close()
	})
}

// goSilent makes the connection drop everything from now on.
func (c *conn) goSilent() {
	c.mu.Lock()
	c.silent = true
	c.mu.Unlock()
}

// natExpired reports, and records, whether the NAT mapping died of idleness before now;
// otherwise it notes traffic at now.
func (c *conn) natExpired(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.silent {
		return true
	}
	if t := c.d.net.NATIdleTimeout; t > 0 && now.Sub(c.last) > t {
		c.silent = true
		c.d.faults.natKills.Add(1)
		return true
	}
	c.last = now
	return false
}

func (c *conn) Read(p []byte) (int, error) {
	for {
		if c.isSilent() {
			<-c.closed
			return 0, net.ErrClosed
		}
		n, err := c.Conn.Read(p)
		if n > 0 && c.natExpired(c.d.clk.Now()) {
			continue // what arrived is lost; wait for the agent to give up
		}
		if err != nil && c.isSilent() {
			continue // the server gave up on the silent connection; the device cannot know
		}
		return n, err
	}
}

func (c *conn) isSilent() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.silent
}

func (c *conn) Write(p []byte) (int, error) {
	if c.natExpired(c.d.clk.Now()) {
		return len(p), nil // lost on the way
	}
	delay := c.d.net.Latency
	if c.d.net.Loss > 0 && c.d.rnd.float() < c.d.net.Loss {
		delay += max(200*time.Millisecond, 3*c.d.net.Latency) // one retransmission timeout
	}
	if delay > 0 {
		t := c.d.clk.NewTimer(delay)
		select {
		case <-t.C():
		case <-c.closed:
			t.Stop()
			return 0, net.ErrClosed
		}
	}
	return c.Conn.Write(p)
}

func (c *conn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		close(c.closed)
		for _, t := range c.timers {
			t.Stop()
		}
		if c.d.outage != nil {
			c.d.outage.remove(c)
		}
		err = c.Conn.Close()
	})
	return err
}

// outageState runs a profile's periodic outages: at the start of each, every open connection
// of the profile goes silent, and dials fail until it ends.
type outageState struct {
	o      Outage
	start  time.Time
	faults *faults

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// newOutage prepares a profile's outages; start must be set before the first dial.
func newOutage(o Outage, f *faults) *outageState {
	if o.First == 0 {
		o.First = o.Every
	}
	return &outageState{o: o, faults: f, conns: map[*conn]struct{}{}}
}

// active reports whether now falls in an outage.
func (s *outageState) active(now time.Time) bool {
	since := now.Sub(s.start) - s.o.First
	return since >= 0 && since%s.o.Every < s.o.Duration
}

// run silences the connections at the start of every outage until ctx ends.
func (s *outageState) run(ctx context.Context, clk clock.Clock) {
	next := s.start.Add(s.o.First)
	for {
		if !clock.Sleep(ctx, clk, next.Sub(clk.Now())) {
			return
		}
		s.faults.outages.Add(1)
		s.mu.Lock()
		for c := range s.conns {
			c.goSilent()
		}
		s.mu.Unlock()
		next = next.Add(s.o.Every)
	}
}

func (s *outageState) add(c *conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *outageState) remove(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}
