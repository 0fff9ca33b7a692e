package agent_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

// testPKI is a CA with a server certificate for "localhost" and the
// gateway names of the zone gw.test, and device certificates on demand.
type testPKI struct {
	ca     *pki.CA
	server tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Now())
	require.NoError(t, err)
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	_, certPEM, err := ca.ServerCert([]string{"localhost", "*.gw.test"}, []net.IP{net.IPv4(127, 0, 0, 1)}, key.Public(), time.Now(), time.Hour)
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return &testPKI{ca: ca, server: pair}
}

func (p *testPKI) device(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	_, certPEM, err := p.ca.DeviceCert(id, key.Public(), time.Now(), time.Hour)
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return &pair
}

func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

// fakeBroker is a scripted MQTT 5 server: it answers the n-th CONNECT with
// connacks[n] (then success) and the n-th PUBLISH with pubacks[n] (then
// success), and can send a DISCONNECT to the live connection.
type fakeBroker struct {
	ln net.Listener

	mu        sync.Mutex
	connacks  []byte
	pubacks   []byte
	connects  int
	publishes []time.Time
	payloads  [][]byte
	live      net.Conn
}

func newFakeBroker(t *testing.T, p *testPKI) *fakeBroker {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", p.serverTLS())
	require.NoError(t, err)
	b := &fakeBroker{ln: ln}
	go b.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		b.mu.Lock()
		if b.live != nil {
			_ = b.live.Close()
		}
		b.mu.Unlock()
	})
	return b
}

func (b *fakeBroker) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.handle(c)
	}
}

func (b *fakeBroker) handle(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	for {
		cp, err := packets.ReadPacket(c)
		if err != nil {
			return
		}
		switch p := cp.Content.(type) {
		case *packets.Connect:
			b.mu.Lock()
			code := byte(0)
			if b.connects < len(b.connacks) {
				code = b.connacks[b.connects]
			}
			b.connects++
			if code == 0 {
				b.live = c
			}
			b.mu.Unlock()
			wmu.Lock()
			_, _ = (&packets.Connack{ReasonCode: code}).WriteTo(c)
			wmu.Unlock()
			if code >= 0x80 {
				return
			}
		case *packets.Publish:
			b.mu.Lock()
			n := len(b.publishes)
			code := byte(0)
			if n < len(b.pubacks) {
				code = b.pubacks[n]
			}
			b.publishes = append(b.publishes, time.Now())
			b.payloads = append(b.payloads, p.Payload)
			b.mu.Unlock()
			wmu.Lock()
			_, _ = (&packets.Puback{PacketID: p.PacketID, ReasonCode: code}).WriteTo(c)
			wmu.Unlock()
		case *packets.Pingreq:
			wmu.Lock()
			_, _ = (&packets.Pingresp{}).WriteTo(c)
			wmu.Unlock()
		case *packets.Disconnect:
			return
		}
	}
}

// disconnect sends DISCONNECT with code to the live connection.
func (b *fakeBroker) disconnect(code byte, serverRef string) {
	b.mu.Lock()
	c := b.live
	b.live = nil
	b.mu.Unlock()
	if c == nil {
		return
	}
	d := &packets.Disconnect{ReasonCode: code, Properties: &packets.Properties{ServerReference: serverRef}}
	_, _ = d.WriteTo(c)
	_ = c.Close()
}

func (b *fakeBroker) counts() (connects, publishes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.connects, len(b.publishes)
}

// namedDialer resolves the gateway name of the zone gw.test to the fake
// broker and records every address it was asked for.
type namedDialer struct {
	target string
	mu     sync.Mutex
	asked  []string
}

func (d *namedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.asked = append(d.asked, addr)
	d.mu.Unlock()
	return (&net.Dialer{}).DialContext(ctx, network, d.target)
}

func (d *namedDialer) addrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...)
}

func signalConfig(t *testing.T) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	cfg.Uplink.Zone = "gw.test"
	cfg.Uplink.Backoff.Base = 200 * time.Millisecond
	cfg.Uplink.Backoff.Cap = time.Second
	cfg.Uplink.ConnectTimeout = 5 * time.Second
	cfg.Uplink.AckTimeout = 5 * time.Second
	cfg.Schedule.Interval = 100 * time.Millisecond
	cfg.Schedule.Jitter = 50 * time.Millisecond
	cfg.Batch.MinWindow = 0
	cfg.Health.Interval = 0
	return cfg
}

func writeValues(t *testing.T, a *agent.Agent, n int) {
	t.Helper()
	now := float64(time.Now().UnixMilli()) / 1000
	recs := make([]protocol.Record, n)
	for i := range recs {
		v := float64(i)
		recs[i] = protocol.Record{Name: "x", Time: now + float64(i)/1000, Value: &v}
	}
	require.NoError(t, a.Sink().Write(context.Background(), recs, 0))
}

// TestServerSignals checks the agent's answers to what a server can say:
// CONNACK 0x89 (busy) and DISCONNECT 0x9D (server moved) make it back off
// and reconnect by name; PUBACK 0x97 (quota exceeded) keeps the batch for a
// later retry; PUBACK 0x99 (payload format invalid) drops it, counted.
func TestServerSignals(t *testing.T) {
	p := newTestPKI(t)
	b := newFakeBroker(t, p)
	b.connacks = []byte{0x89, 0x89}
	b.pubacks = []byte{0x97, 0x99}
	d := &namedDialer{target: b.ln.Addr().String()}
	cfg := signalConfig(t)
	cfg.Batch.MaxRecords = 10
	a, err := agent.New(cfg, agent.Options{Certificate: p.device(t, "pump-7"), RootCAs: p.ca.Pool(), Dialer: d, Logger: testLogger(t)})
	require.NoError(t, err)
	writeValues(t, a, 30)
	runAgent(t, a)

	require.Eventually(t, func() bool { return a.Stats().Connected }, 10*time.Second, 10*time.Millisecond)
	st := a.Stats()
	require.Equal(t, uint64(2), st.ConnectFailures["server_busy"], "two CONNACK 0x89")
	require.Eventually(t, func() bool { return a.Stats().Spool.Records == 0 }, 10*time.Second, 10*time.Millisecond)
	st = a.Stats()
	require.Equal(t, uint64(1), st.RefusedForRetry, "PUBACK 0x97 kept the batch")
	require.Equal(t, uint64(10), st.Dropped["invalid"], "PUBACK 0x99 dropped the batch, counted by reason")
	require.Equal(t, uint64(2), st.BatchesSent)
	b.mu.Lock()
	pub := append([]time.Time(nil), b.publishes...)
	payloads := append([][]byte(nil), b.payloads...)
	b.mu.Unlock()
	require.Len(t, pub, 4) // refused for retry, the retry (dropped), then two more
	require.Equal(t, payloads[0], payloads[1], "the retried batch is the same batch")
	first, _, err := protocol.Decode(payloads[0], time.Now(), protocol.DefaultLimits())
	require.NoError(t, err)
	last, _, err := protocol.Decode(payloads[3], time.Now(), protocol.DefaultLimits())
	require.NoError(t, err)
	require.Equal(t, uint64(1), first.Seq)
	require.Equal(t, uint64(3), last.Seq)
	// The retry waited for the next cycle plus a backoff term.
	require.GreaterOrEqual(t, pub[1].Sub(pub[0]), cfg.Schedule.Interval)

	// Server moved: the agent reconnects, resolving its name again.
	before := len(d.addrs())
	b.disconnect(0x9D, "elsewhere.example")
	require.Eventually(t, func() bool {
		st := a.Stats()
		return st.Reconnects["server_moved"] == 1 && st.Connected
	}, 10*time.Second, 10*time.Millisecond)
	addrs := d.addrs()
	require.Greater(t, len(addrs), before)
	for _, ad := range addrs {
		require.Equal(t, "pump-7.gw.test:8883", ad, "the agent dials its DNS name, never an address")
	}
}

// TestHTTPSRetryAfter checks the HTTPS transport: 429 with Retry-After
// delays the next try by at least that long; 202 acknowledges.
func TestHTTPSRetryAfter(t *testing.T) {
	p := newTestPKI(t)
	var mu sync.Mutex
	var times []time.Time
	var bodies int
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == protocol.MailboxPath { // the device channel: nothing waiting
			_, _ = w.Write([]byte(`{"commands":[]}`))
			return
		}
		require.Equal(t, protocol.BatchPath, r.URL.Path)
		require.Equal(t, "pump-7", r.TLS.PeerCertificates[0].Subject.CommonName)
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _, err := protocol.Decode(mustRead(r), time.Now(), protocol.DefaultLimits())
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies++
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = p.serverTLS()
	srv.StartTLS()
	defer srv.Close()

	cfg := signalConfig(t)
	cfg.Uplink.Transport = agent.TransportHTTPS
	cfg.Uplink.DevAddress = srv.Listener.Addr().String()
	cfg.TLS.ServerName = "localhost"
	a, err := agent.New(cfg, agent.Options{Certificate: p.device(t, "pump-7"), RootCAs: p.ca.Pool(), Logger: testLogger(t)})
	require.NoError(t, err)
	writeValues(t, a, 5)
	runAgent(t, a)
	require.Eventually(t, func() bool { return a.Stats().Spool.Records == 0 }, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, times, 2)
	require.Equal(t, 1, bodies)
	require.GreaterOrEqual(t, times[1].Sub(times[0]), time.Second, "Retry-After obeyed")
	require.Equal(t, uint64(1), a.Stats().RefusedForRetry)
}

func mustRead(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	return b
}
