package interop

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// tap relays TCP connections from a client to the server unchanged and watches them: how many
// there were, how many reads each direction saw, and which side ended each one. TLS stays end
// to end between the client and the server, so every client is watched the same way whatever
// it logs itself.
type tap struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []*tapConn
}

// tapConn is one relayed connection. up counts the reads from the client (each TLS record
// batch the client wrote: after the handshake and the CONNECT, an idle client's are its
// PINGREQs), down those from the server.
type tapConn struct {
	up, down atomic.Int64
	done     chan struct{} // closed once either side ended the connection
	endedBy  string        // "client" or "server"; set before done is closed

	once           sync.Once
	client, server net.Conn
}

func newTap(t *testing.T, target string) *tap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	tp := &tap{ln: ln, target: target}
	var wg sync.WaitGroup
	wg.Go(func() { tp.accept(&wg) })
	t.Cleanup(func() {
		_ = ln.Close()
		tp.mu.Lock()
		for _, c := range tp.conns {
			c.end("test")
		}
		tp.mu.Unlock()
		wg.Wait()
	})
	return tp
}

func (tp *tap) addr() string { return tp.ln.Addr().String() }

func (tp *tap) port() string {
	_, p, _ := net.SplitHostPort(tp.addr())
	return p
}

func (tp *tap) accept(wg *sync.WaitGroup) {
	for {
		cc, err := tp.ln.Accept()
		if err != nil {
			return
		}
		sc, err := net.Dial("tcp", tp.target)
		if err != nil {
			_ = cc.Close()
			continue
		}
		c := &tapConn{done: make(chan struct{}), client: cc, server: sc}
		tp.mu.Lock()
		tp.conns = append(tp.conns, c)
		tp.mu.Unlock()
		wg.Go(func() { c.pipe(cc, sc, &c.up, "client") })
		wg.Go(func() { c.pipe(sc, cc, &c.down, "server") })
	}
}

// pipe copies from one side to the other, counting reads, until from ends.
func (c *tapConn) pipe(from, to net.Conn, reads *atomic.Int64, side string) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			reads.Add(1)
			if _, werr := to.Write(buf[:n]); werr != nil {
				c.end(otherSide(side))
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || !errors.Is(err, net.ErrClosed) {
				c.end(side)
			}
			return
		}
	}
}

func otherSide(side string) string {
	if side == "client" {
		return "server"
	}
	return "client"
}

// end closes both sides and records who ended the connection first.
func (c *tapConn) end(by string) {
	c.once.Do(func() {
		c.endedBy = by
		_ = c.client.Close()
		_ = c.server.Close()
		close(c.done)
	})
}

func (c *tapConn) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// count is the number of connections relayed so far.
func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.conns)
}

// conn is the i-th connection relayed, or nil.
func (tp *tap) conn(i int) *tapConn {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if i >= len(tp.conns) {
		return nil
	}
	return tp.conns[i]
}
