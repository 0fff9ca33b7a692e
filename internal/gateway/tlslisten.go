package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright/millwright/internal/netlimit"
)

// handshakeListener accepts TCP connections and completes each TLS handshake in a goroutine of
// its own, under deadlines, before a device session sees the connection.
//
// Why not tls.NewListener: there the handshake runs lazily on the session's first read, in the
// goroutine that then reads from the connection for as long as it lives. A mutual-TLS handshake
// (certificate parsing, signature checks) grows that goroutine's stack to 16–32 KiB, and an
// idle connection keeps it. Here the deep stack belongs to a goroutine that ends with the
// handshake, and the session's goroutine starts small.
//
// At most a fixed number of handshakes run at once; the others wait in order. In a reconnect
// storm, thousands of handshakes sharing two cores would otherwise all progress slowly and
// finish together, seconds later, as one burst (and starve the accept loop, so that the
// kernel's listen queue overflows and clients retry on TCP's own synchronized timers); served
// a few at a time they complete at the rate the CPU allows.
//
// A handshake takes a slot only once its ClientHello has arrived (in GetConfigForClient), so
// that sockets which send nothing — a few dozen renewed every few seconds would do — cannot
// hold the slots and lock every device out. Each stage has its own deadline: the ClientHello
// (from accept), then the slot and the handshake (from the ClientHello). One source address
// may have only so many handshakes in progress or waiting for a slot (a netlimit.Limiter), so
// that clients which send a ClientHello and stall take at most that many slots.
//
// Accept errors that pass are retried after a pause instead of ending the listener
// (retryingAcceptor).
type handshakeListener struct {
	raw       net.Listener
	cfg       *tls.Config
	opts      handshakeOptions
	log       *slog.Logger
	perSource *netlimit.Limiter

	conns     chan net.Conn
	slots     chan struct{}   // one per handshake in progress
	queued    atomic.Int64    // handshakes waiting for a slot
	ctx       context.Context // ends with the listener, and with it every handshake
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu  sync.Mutex
	err error // why the accept loop stopped
}

// handshakeOptions are the handshake listener's deadlines, bounds and metrics.
type handshakeOptions struct {
	hello, handshake  time.Duration // the stage deadlines (MQTTOptions.HelloTimeout, HandshakeTimeout)
	concurrent        int           // MQTTOptions.MaxConcurrentHandshakes
	perSource         int           // MQTTOptions.MaxHandshakesPerSource
	failed, resumed   prometheus.Counter
	helloLate, hsLate prometheus.Counter // a stage missed its deadline
	sourceLimited     prometheus.Counter // failed after waiting behind its own source's handshakes
}

// pendingConn is a connection during its handshake: what GetConfigForClient learns of it, read
// by the goroutine running the handshake once it returns.
type pendingConn struct {
	net.Conn
	src           netip.Addr
	hello         bool // the ClientHello arrived
	sourced, slot bool // holds its source's place and a handshake slot
	sourceLimited bool // waited behind its source's other handshakes
}

func newHandshakeListener(raw net.Listener, cfg *tls.Config, opts handshakeOptions, logger *slog.Logger) *handshakeListener {
	l := &handshakeListener{raw: raw, opts: opts, log: logger,
		conns: make(chan net.Conn), slots: make(chan struct{}, opts.concurrent), done: make(chan struct{})}
	l.perSource = netlimit.New(netlimit.Options{PerSource: opts.perSource})
	l.cfg = cfg.Clone()
	base := cfg.GetConfigForClient
	l.cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if err := l.clientHello(hello); err != nil {
			return nil, err
		}
		if base != nil {
			return base(hello)
		}
		return nil, nil
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *handshakeListener) acceptLoop() {
	defer l.wg.Done()
	a := retryingAcceptor{ln: l.raw, log: l.log}
	for {
		c, err := a.accept(l.done)
		if err != nil {
			select {
			case <-l.done:
				err = net.ErrClosed
			default:
			}
			l.stop(err)
			return
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

// retryingAcceptor accepts connections, waiting out the accept errors that pass (EMFILE when
// the process is out of descriptors, ECONNABORTED) instead of ending there, as net/http's
// server does: 5 ms doubling to 1 s. At the descriptor limit every accept fails until a
// connection ends, so one warning per 10 s says how many failed, instead of one per failure.
type retryingAcceptor struct {
	ln       net.Listener
	log      *slog.Logger
	pause    time.Duration
	warned   time.Time
	failures int
}

// accept returns the next connection, or the error that ends the listener; done ends a
// pause early, with net.ErrClosed.
func (a *retryingAcceptor) accept(done <-chan struct{}) (net.Conn, error) {
	for {
		c, err := a.ln.Accept()
		if err == nil {
			a.pause = 0
			return c, nil
		}
		if !isTemporaryAcceptError(err) {
			return nil, err
		}
		a.pause = min(max(2*a.pause, 5*time.Millisecond), time.Second)
		a.failures++
		if time.Since(a.warned) >= 10*time.Second {
			a.log.Warn("MQTT accept failed; retrying", "address", a.ln.Addr().String(), "error", err, "pause", a.pause, "failures", a.failures)
			a.warned, a.failures = time.Now(), 0
		}
		select {
		case <-time.After(a.pause):
		case <-done:
			return nil, net.ErrClosed
		}
	}
}

func (l *handshakeListener) handshake(c net.Conn) {
	defer l.wg.Done()
	pc := &pendingConn{Conn: c, src: netlimit.Source(c.RemoteAddr())}
	_ = c.SetDeadline(time.Now().Add(l.opts.hello))
	tc := tls.Server(pc, l.cfg)
	err := tc.HandshakeContext(l.ctx)
	if pc.slot {
		<-l.slots
	}
	if pc.sourced {
		l.perSource.Release(pc.src)
	}
	if err != nil {
		l.opts.failed.Inc()
		switch {
		case pc.sourceLimited:
			l.opts.sourceLimited.Inc()
		case !pc.hello && errors.Is(err, os.ErrDeadlineExceeded):
			l.opts.helloLate.Inc()
		case pc.hello && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)):
			l.opts.hsLate.Inc()
		}
		l.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{}) // the session sets the CONNECT's
	if tc.ConnectionState().DidResume {
		l.opts.resumed.Inc()
	}
	select {
	case l.conns <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// clientHello runs when a connection's ClientHello has arrived: it starts the handshake
// stage's deadline and waits, within it, for its source's place and then for a handshake slot.
func (l *handshakeListener) clientHello(hello *tls.ClientHelloInfo) error {
	pc, ok := hello.Conn.(*pendingConn)
	if !ok {
		return errors.New("not a connection of the handshake listener")
	}
	pc.hello = true
	deadline := time.Now().Add(l.opts.handshake)
	_ = pc.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(hello.Context(), deadline)
	defer cancel()
	if l.perSource.TryAcquire(pc.src) == nil {
		pc.sourced = true
		select {
		case l.slots <- struct{}{}:
			pc.slot = true
			return nil
		default:
		}
	}
	l.queued.Add(1)
	defer l.queued.Add(-1)
	if !pc.sourced {
		// Counted as held back by its own source if it fails from here on: it would have
		// been under way otherwise.
		pc.sourceLimited = true
		if err := l.perSource.Acquire(ctx, pc.src); err != nil {
			return fmt.Errorf("waiting behind the handshakes from %s: %w", pc.src, err)
		}
		pc.sourced = true
	}
	select {
	case l.slots <- struct{}{}:
		pc.slot = true
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for a handshake slot: %w", ctx.Err())
	}
}

func (l *handshakeListener) stop(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
	l.closeOnce.Do(func() {
		close(l.done)
		l.cancel()
	})
}

// Accept returns the next connection whose handshake completed.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.err == nil {
			return nil, net.ErrClosed
		}
		return nil, l.err
	}
}

// Close stops accepting, drops handshakes in progress and waits for their goroutines.
func (l *handshakeListener) Close() error {
	l.stop(net.ErrClosed)
	err := l.raw.Close()
	l.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (l *handshakeListener) Addr() net.Addr { return l.raw.Addr() }

// isTemporaryAcceptError tells an accept error that passes (the listener still works) from
// one that ends the listener.
func isTemporaryAcceptError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	// EMFILE, ENFILE, ECONNABORTED, ENOBUFS and friends: the socket is fine, the moment is not.
	var se interface{ Temporary() bool }
	if errors.As(err, &se) && se.Temporary() {
		return true
	}
	return errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
