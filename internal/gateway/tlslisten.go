package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// handshakeListener accepts TCP connections and completes each TLS handshake in a goroutine of
// its own, under a deadline, before a device session sees the connection.
//
// Why not tls.NewListener: there the handshake runs lazily on the session's first read, in the
// goroutine that then reads from the connection for as long as it lives. A mutual-TLS handshake
// (certificate parsing, signature checks) grows that goroutine's stack to 16–32 KiB, and an
// idle connection keeps it. Here the deep stack belongs to a goroutine that ends with the
// handshake, and the session's goroutine starts small. The deadline also drops clients that open
// a socket and never finish a handshake, instead of holding a goroutine and a descriptor for
// each until the keep-alive logic gets to them.
//
// At most a fixed number of handshakes run at once; the others wait in order, within the same
// deadline. In a reconnect storm, thousands of handshakes sharing two cores would otherwise
// all progress slowly and finish together, seconds later, as one burst (and starve the accept
// loop, so that the kernel's listen queue overflows and clients retry on TCP's own
// synchronized timers); served a few at a time they complete at the rate the CPU allows.
//
// Accept errors that pass are retried after a pause instead of ending the listener
// (retryingAcceptor).
type handshakeListener struct {
	raw     net.Listener
	cfg     *tls.Config
	timeout time.Duration
	log     *slog.Logger
	failed  prometheus.Counter
	resumed prometheus.Counter

	conns     chan net.Conn
	slots     chan struct{}   // one per handshake in progress
	ctx       context.Context // ends with the listener, and with it every handshake
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu  sync.Mutex
	err error // why the accept loop stopped
}

func newHandshakeListener(raw net.Listener, cfg *tls.Config, timeout time.Duration, concurrent int, logger *slog.Logger, failed, resumed prometheus.Counter) *handshakeListener {
	l := &handshakeListener{raw: raw, cfg: cfg, timeout: timeout, log: logger, failed: failed, resumed: resumed,
		conns: make(chan net.Conn), slots: make(chan struct{}, concurrent), done: make(chan struct{})}
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
	tc := tls.Server(c, l.cfg)
	// The deadline runs from accept: waiting for a handshake slot counts.
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err := l.slot(ctx)
	if err == nil {
		err = tc.HandshakeContext(ctx)
		<-l.slots
	}
	cancel()
	if err != nil {
		l.failed.Inc()
		l.log.Debug("TLS handshake failed", "remote", c.RemoteAddr().String(), "error", err)
		_ = c.Close()
		return
	}
	if tc.ConnectionState().DidResume {
		l.resumed.Inc()
	}
	select {
	case l.conns <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// slot waits for one of the concurrent-handshake slots (waiters are served in order).
func (l *handshakeListener) slot(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
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
