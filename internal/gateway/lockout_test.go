package gateway_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
)

// attackerAddr is the source address the attacking sockets come from; devices connect from
// 127.0.0.1.
const attackerAddr = "127.0.0.2"

// stallAfterFirstWrite passes the first write (a TLS ClientHello) and holds every later one
// until the attack ends: a client that starts a handshake and never finishes it.
type stallAfterFirstWrite struct {
	net.Conn
	done   <-chan struct{}
	writes int
}

func (s *stallAfterFirstWrite) Write(b []byte) (int, error) {
	s.writes++
	if s.writes > 1 {
		<-s.done
		return 0, net.ErrClosed
	}
	return s.Conn.Write(b)
}

// attack keeps n sockets open from attackerAddr to addr, each doing what hold does with it, and
// opens a new one every 2 s in place of each the server has closed, until the test ends. It
// returns how many sockets are open now and how many it has opened in all.
func attack(t *testing.T, addr string, n int, hold func(c net.Conn, done <-chan struct{})) (open, opened *atomic.Int64) {
	open, opened = new(atomic.Int64), new(atomic.Int64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(attackerAddr)}, Timeout: 5 * time.Second}
	for range n {
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Second)
			defer tick.Stop()
			for {
				if c, err := d.Dial("tcp", addr); err == nil {
					open.Add(1)
					opened.Add(1)
					stop := context.AfterFunc(ctxOf(done), func() { _ = c.Close() })
					hold(c, done)
					stop()
					_ = c.Close()
					open.Add(-1)
				}
				select {
				case <-tick.C:
				case <-done:
					return
				}
			}
		})
	}
	return open, opened
}

// ctxOf is a context that ends when done is closed.
func ctxOf(done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	return ctx
}

// readUntilClosed holds an idle socket: it sends nothing and waits for the server to close it.
func readUntilClosed(c net.Conn, _ <-chan struct{}) {
	_, _ = c.Read(make([]byte, 1))
}

// connectDevice connects a device over TLS with its certificate and returns how long it took
// from dialing to the CONNACK.
func connectDevice(t *testing.T, r *rig, addr, id string) (time.Duration, error) {
	t.Helper()
	pair, err := r.ca.DeviceKeyPair(id, r.now, time.Hour)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: r.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
	if err != nil {
		return time.Since(start), err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil {
		_ = conn.Close()
		return time.Since(start), err
	}
	elapsed := time.Since(start)
	_ = c.Disconnect(&paho.Disconnect{})
	return elapsed, nil
}

// TestIdleSocketsDoNotLockOut: while another source address keeps 50 sockets open and renews
// them every 2 s — sockets that send nothing, or a ClientHello and then nothing — a device
// with a valid certificate connects (TLS handshake and CONNACK) in under 2 s, at once and
// again once the idle sockets have been dropped and renewed.
func TestIdleSocketsDoNotLockOut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		hold func(r *rig, addr string) func(c net.Conn, done <-chan struct{})
		// renewed: the server drops these sockets in time for the test to see them renewed
		renewed bool
	}{
		{"idle sockets", func(*rig, string) func(net.Conn, <-chan struct{}) { return readUntilClosed }, true},
		{"stalled ClientHellos", func(r *rig, _ string) func(net.Conn, <-chan struct{}) {
			return func(c net.Conn, done <-chan struct{}) {
				tc := tls.Client(&stallAfterFirstWrite{Conn: c, done: done},
					&tls.Config{RootCAs: r.ca.Pool(), ServerName: "localhost"})
				_ = tc.Handshake()
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, ingest.DefaultOptions())
			// 16 handshake slots: the default on two cores, fixed here so that 50 sockets
			// outnumber them on any machine.
			m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", MaxConcurrentHandshakes: 16},
				r.serverTLS, r.ing, nil, nil, nil, r.reg)
			require.NoError(t, err)
			require.NoError(t, m.Start())
			t.Cleanup(func() { _ = m.Close() })
			addr := m.Addr().String()

			open, opened := attack(t, addr, 50, tc.hold(r, addr))
			require.Eventually(t, func() bool { return open.Load() == 50 }, 10*time.Second, 5*time.Millisecond)
			if !tc.renewed {
				// The stalled ClientHellos hold half the slots (MaxHandshakesPerSource), no more.
				require.Eventually(t, func() bool { return gauge(t, r.reg, "millwright_mqtt_tls_handshakes_in_progress") == 8 }, 10*time.Second, 5*time.Millisecond)
			}

			took, err := connectDevice(t, r, addr, "dev-1")
			require.NoError(t, err, "after %v", took)
			t.Logf("%s: the device connected in %v with 50 attacking sockets open", tc.name, took)
			require.Less(t, took, 2*time.Second)

			if tc.renewed {
				// Once the server has dropped the first 50 and the attacker has opened 50 more.
				require.Eventually(t, func() bool { return opened.Load() >= 100 && open.Load() == 50 }, 30*time.Second, 10*time.Millisecond)
				took, err = connectDevice(t, r, addr, "dev-2")
				require.NoError(t, err, "after %v", took)
				t.Logf("%s: after renewal, the device connected in %v", tc.name, took)
				require.Less(t, took, 2*time.Second)
			}
		})
	}
}
