package agent_test

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// cutProxy forwards TCP connections to a target and, while cutting is on,
// cuts them in the middle of client writes: before forwarding a write,
// after forwarding half of it, or after forwarding all of it but before the
// answer (the server stored the batch, the agent never hears so).
type cutProxy struct {
	ln     net.Listener
	target string
	cutP   atomic.Uint64 // probability of a cut per client write, ×1e6
	cuts   [3]atomic.Int64

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	rnd     *rand.Rand
	decided int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, rnd: rand.New(rand.NewPCG(3, 4))}
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) setCut(prob float64) { p.cutP.Store(uint64(prob * 1e6)) }

func (p *cutProxy) totalCuts() int64 { return p.cuts[0].Load() + p.cuts[1].Load() + p.cuts[2].Load() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *cutProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

// decide returns -1 (forward) or the cut mode 0, 1, 2, taken in turn.
func (p *cutProxy) decide() int {
	prob := p.cutP.Load()
	if prob == 0 {
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if uint64(p.rnd.IntN(1e6)) >= prob {
		return -1
	}
	p.decided++
	return (p.decided - 1) % 3
}

func (p *cutProxy) handle(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	closeBoth := func() {
		_ = client.Close()
		_ = server.Close()
		p.track(client, false)
		p.track(server, false)
	}
	go func() {
		_, _ = io.Copy(client, server)
		closeBoth()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			mode := -1
			if n > 64 { // leave pings and acks alone: cut data
				mode = p.decide()
			}
			switch mode {
			case 0:
				p.cuts[0].Add(1)
				closeBoth()
				return
			case 1:
				_, _ = server.Write(buf[:n/2])
				p.cuts[1].Add(1)
				closeBoth()
				return
			case 2:
				_, _ = server.Write(buf[:n])
				p.cuts[2].Add(1)
				closeBoth()
				return
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				closeBoth()
				return
			}
		}
		if err != nil {
			closeBoth()
			return
		}
	}
}
