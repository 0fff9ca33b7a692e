package netlimit

import (
	"net"
	"net/netip"
	"sync"
)

// Listener is a net.Listener that bounds the connections open at once, in total and per
// source address, with a Limiter: a connection over a bound is closed as soon as it is
// accepted (and counted through the Limiter's Options.OnRefuse), and Accept goes on to the
// next. A connection it returns holds its place until closed.
type Listener struct {
	net.Listener
	lim *Limiter
}

// NewListener wraps ln; lim's bounds apply to the connections open at once. lim may be shared
// with other listeners, to bound them together.
func NewListener(ln net.Listener, lim *Limiter) *Listener {
	return &Listener{Listener: ln, lim: lim}
}

// Accept returns the next connection within the bounds. It returns an error only when the
// wrapped listener's Accept does.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := Source(c.RemoteAddr())
		if l.lim.TryAcquire(src) != nil {
			_ = c.Close()
			continue
		}
		return &Conn{Conn: c, lim: l.lim, src: src}, nil
	}
}

// Limiter is the listener's limiter.
func (l *Listener) Limiter() *Limiter { return l.lim }

// Conn is a connection accepted by a Listener; closing it gives back its place.
type Conn struct {
	net.Conn
	lim  *Limiter
	src  netip.Addr
	once sync.Once
}

// Close closes the connection and, the first time, gives back its place.
func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.lim.Release(c.src) })
	return err
}

// NetConn is the connection the Listener accepted.
func (c *Conn) NetConn() net.Conn { return c.Conn }
