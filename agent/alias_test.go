package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

// mqttTap sits between an agent and an MQTT server: it ends the agent's TLS
// with a "localhost" certificate of a CA the agent trusts, opens its own
// connection upstream (mutual TLS with the device's certificate, or plain
// TCP), forwards every packet both ways unchanged, and records the packets
// the agent sends. It can rewrite the server's CONNACK (to announce another
// Topic Alias Maximum) and cut every connection.
type mqttTap struct {
	t        *testing.T
	ln       net.Listener
	upstream func() (net.Conn, error)
	connack  func(*packets.Connack) // nil: the server's CONNACK as it is

	mu    sync.Mutex
	conns []*tapConn
	open  map[net.Conn]struct{}
}

// tapConn is what the agent sent on one connection.
type tapConn struct {
	sawConnack bool
	aliasMax   *uint16 // Topic Alias Maximum in the CONNACK the agent got; nil: none
	pubs       []tapPublish
}

type tapPublish struct {
	topic   string
	alias   uint16 // 0: no Topic Alias property
	payload []byte
	size    int // bytes of the whole MQTT packet
}

func newMQTTTap(t *testing.T, ca *pki.CA, upstream func() (net.Conn, error), connack func(*packets.Connack)) *mqttTap {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	_, certPEM, err := ca.ServerCert([]string{"localhost"}, nil, key.Public(), time.Now(), time.Hour)
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	p := &mqttTap{t: t, ln: ln, upstream: upstream, connack: connack, open: map[net.Conn]struct{}{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
	})
	return p
}

func (p *mqttTap) addr() string { return p.ln.Addr().String() }

// cut closes every open connection, both sides.
func (p *mqttTap) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		_ = c.Close()
	}
}

func (p *mqttTap) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.open[c] = struct{}{}
	} else {
		delete(p.open, c)
	}
}

func (p *mqttTap) handle(down net.Conn) {
	up, err := p.upstream()
	if err != nil {
		_ = down.Close()
		return
	}
	tc := &tapConn{}
	p.mu.Lock()
	p.conns = append(p.conns, tc)
	p.mu.Unlock()
	for _, c := range []net.Conn{down, up} {
		p.track(c, true)
		defer p.track(c, false)
		defer c.Close()
	}
	go func() { // server → agent
		defer down.Close()
		defer up.Close()
		r := bufio.NewReader(up)
		raw, err := readRawPacket(r)
		if err != nil {
			return
		}
		cp, err := packets.ReadPacket(bytes.NewReader(raw))
		if err != nil {
			p.t.Errorf("tap: server packet: %v", err)
			return
		}
		if ca, ok := cp.Content.(*packets.Connack); ok {
			if ca.Properties == nil {
				ca.Properties = &packets.Properties{}
			}
			if p.connack != nil {
				p.connack(ca)
				var b bytes.Buffer
				if _, err := cp.WriteTo(&b); err != nil {
					p.t.Errorf("tap: encode CONNACK: %v", err)
					return
				}
				raw = b.Bytes()
			}
			p.mu.Lock()
			tc.sawConnack, tc.aliasMax = true, ca.Properties.TopicAliasMaximum
			p.mu.Unlock()
		}
		if _, err := down.Write(raw); err != nil {
			return
		}
		_, _ = io.Copy(down, r)
	}()
	r := bufio.NewReader(down)
	for { // agent → server
		raw, err := readRawPacket(r)
		if err != nil {
			return
		}
		cp, err := packets.ReadPacket(bytes.NewReader(raw))
		if err != nil {
			p.t.Errorf("tap: agent packet: %v", err)
			return
		}
		if pub, ok := cp.Content.(*packets.Publish); ok {
			rec := tapPublish{topic: pub.Topic, payload: pub.Payload, size: len(raw)}
			if pub.Properties != nil && pub.Properties.TopicAlias != nil {
				rec.alias = *pub.Properties.TopicAlias
			}
			p.mu.Lock()
			tc.pubs = append(tc.pubs, rec)
			p.mu.Unlock()
		}
		if _, err := up.Write(raw); err != nil {
			return
		}
	}
}

// readRawPacket reads one MQTT control packet's bytes: the fixed header
// byte, the Remaining Length and that many bytes.
func readRawPacket(r *bufio.Reader) ([]byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	raw := []byte{first}
	length := 0
	for i := 0; ; i++ {
		if i == 4 {
			return nil, errors.New("remaining length longer than 4 bytes")
		}
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		raw = append(raw, b)
		length |= int(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			break
		}
	}
	head := len(raw)
	raw = append(raw, make([]byte, length)...)
	if _, err := io.ReadFull(r, raw[head:]); err != nil {
		return nil, err
	}
	return raw, nil
}

// connections returns a copy of what the agent sent, one entry per
// connection in the order they were opened.
func (p *mqttTap) connections() []tapConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]tapConn, len(p.conns))
	for i, c := range p.conns {
		out[i] = *c
		out[i].pubs = append([]tapPublish(nil), c.pubs...)
	}
	return out
}

// waitPublishes waits until a connection after the first skip ones carried
// n publishes, and returns its index.
func (p *mqttTap) waitPublishes(t *testing.T, skip, n int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for i, c := range p.connections() {
			if i >= skip && len(c.pubs) >= n {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no connection after the first %d carried %d publishes within %v", skip, n, within)
	return -1
}

// requireTopics checks how every PUBLISH the agent sent named its topic:
// with aliases, the topic and alias 1 on a connection's first PUBLISH and
// the alias alone (an empty topic) on every later one; without, the topic
// on every PUBLISH and never an alias.
func requireTopics(t *testing.T, conns []tapConn, topic string, aliases bool) {
	t.Helper()
	pubs := 0
	for i, c := range conns {
		for j, p := range c.pubs {
			pubs++
			switch {
			case !aliases:
				require.Equal(t, topic, p.topic, "connection %d publish %d", i, j)
				require.Zero(t, p.alias, "connection %d publish %d: alias without a Topic Alias Maximum", i, j)
			case j == 0:
				require.Equal(t, topic, p.topic, "connection %d: the first publish sets the alias", i)
				require.EqualValues(t, 1, p.alias, "connection %d publish %d", i, j)
			default:
				require.Empty(t, p.topic, "connection %d publish %d: the alias alone", i, j)
				require.EqualValues(t, 1, p.alias, "connection %d publish %d", i, j)
			}
		}
	}
	require.Positive(t, pubs)
}

// tlsUpstream dials the server's MQTT listener with the device's certificate.
func tlsUpstream(s *testServer, cert *tls.Certificate) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		return tls.Dial("tcp", s.mqttAddr, &tls.Config{Certificates: []tls.Certificate{*cert}, RootCAs: s.ca.Pool(), ServerName: "localhost"})
	}
}

// aliasTestConfig sends a full batch of 10 measurements every 50–100 ms
// (a source writing every 5 ms), reconnecting within about 0.1 s.
func aliasTestConfig(cfg agent.Config, addr string) agent.Config {
	cfg.Uplink.DevAddress = addr
	cfg.Batch.MaxRecords = 10
	cfg.Schedule.Interval = 50 * time.Millisecond
	cfg.Schedule.Jitter = 50 * time.Millisecond
	cfg.Uplink.Backoff.Base = 50 * time.Millisecond
	return cfg
}

// TestTopicAliases runs agents through a tap against a real server: the
// server's own CONNACK (Topic Alias Maximum 16), and CONNACKs rewritten to
// announce 1, 0 or nothing. Each agent delivers batches over one connection,
// has it cut, and delivers over the next; the tap shows how each PUBLISH
// named its topic, and PromQL that every measurement arrived exactly once.
func TestTopicAliases(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	for _, tc := range []struct {
		name     string
		id       string
		announce func(*packets.Connack) // nil: the server's CONNACK
		wantMax  *uint16                // what the agent got
		aliases  bool
	}{
		{name: "server", id: "alias-server", wantMax: paho.Uint16(16), aliases: true},
		{name: "maximum 1", id: "alias-max-1", announce: func(c *packets.Connack) { c.Properties.TopicAliasMaximum = paho.Uint16(1) }, wantMax: paho.Uint16(1), aliases: true},
		{name: "maximum 0", id: "alias-max-0", announce: func(c *packets.Connack) { c.Properties.TopicAliasMaximum = paho.Uint16(0) }, wantMax: paho.Uint16(0)},
		{name: "no maximum", id: "alias-no-max", announce: func(c *packets.Connack) { c.Properties.TopicAliasMaximum = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := tc.id
			opts := srv.options(t, id)
			tap := newMQTTTap(t, srv.ca, tlsUpstream(srv, opts.Certificate), tc.announce)
			src := newCounterSource("aliased", 5*time.Millisecond)
			opts.Sources = []agentSource{src}
			a, err := agent.New(aliasTestConfig(srv.agentConfig(t), tap.addr()), opts)
			require.NoError(t, err)
			runAgent(t, a)

			first := tap.waitPublishes(t, 0, 25, 30*time.Second)
			tap.cut()
			tap.waitPublishes(t, first+1, 25, 30*time.Second)
			src.pause()
			want := src.snapshot()
			srv.waitDelivered(t, "aliased", id, len(want), 30*time.Second)
			requireExactlyOnce(t, want, srv.values(t, "aliased", id))

			conns := tap.connections()
			require.GreaterOrEqual(t, len(conns), 2)
			for i, c := range conns {
				if c.sawConnack {
					require.Equal(t, tc.wantMax, c.aliasMax, "connection %d", i)
				}
			}
			requireTopics(t, conns, protocol.BatchTopic(id), tc.aliases)
		})
	}
}

// startMosquitto starts a Mosquitto broker of the test's own (Debian
// package mosquitto, which scripts/test installs) on a free loopback port,
// plain MQTT, and returns its address; the broker is killed when the test
// ends.
func startMosquitto(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		_, port, _ := net.SplitHostPort(addr)
		conf := "listener " + port + " 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\n"
		if os.Getuid() == 0 {
			conf += "user root\n"
		}
		file := filepath.Join(dir, "mosquitto.conf")
		require.NoError(t, os.WriteFile(file, []byte(conf), 0o644))
		cmd := exec.Command(bin, "-c", file)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start(), "start %s (Debian package mosquitto)", bin)
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			select {
			case <-exited:
				deadline = time.Time{}
				continue
			default:
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				_ = c.Close()
				return addr
			}
		}
		// The port was taken between Close and the broker's bind, or it failed to start.
		require.Less(t, attempt, 2, "mosquitto did not start: %s", stderr.String())
	}
}

// TestTopicAliasesMosquitto runs an agent through the tap against a
// Mosquitto broker (plain MQTT, startMosquitto), an independent broker that
// announces its own Topic Alias Maximum and disconnects a client that uses
// an alias it never set. A subscriber receives every batch under its full
// topic; every measurement arrives, over two connections.
func TestTopicAliasesMosquitto(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("alias test", time.Now())
	require.NoError(t, err)
	id := fmt.Sprintf("alias-mosquitto-%d", time.Now().UnixNano())
	topic := protocol.BatchTopic(id)
	broker := startMosquitto(t)

	got := map[int64]float64{}
	var mu sync.Mutex
	sub := mosquittoClient(t, broker, id+"-sub", func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Topic != topic {
			t.Errorf("subscriber got topic %q, want %q", pr.Packet.Topic, topic)
		}
		b, _, err := protocol.Decode(pr.Packet.Payload, time.Now(), protocol.DefaultLimits())
		if err != nil {
			t.Errorf("subscriber: decode batch: %v", err)
			return true, nil
		}
		mu.Lock()
		defer mu.Unlock()
		for _, m := range b.Measurements {
			if m.Name == "aliased" {
				got[m.Time] = m.Value // a retransmit after the cut repeats a batch
			}
		}
		return true, nil
	})
	_, err = sub.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}})
	require.NoError(t, err)

	tap := newMQTTTap(t, ca, func() (net.Conn, error) { return net.Dial("tcp", broker) }, nil)
	cfg := agent.DefaultConfig()
	cfg.Spool.Dir = t.TempDir()
	cfg.TLS.ServerName = "localhost"
	cfg.Uplink.Keepalive = 5 * time.Second
	cfg.Uplink.ConnectTimeout = 5 * time.Second
	cfg.Uplink.AckTimeout = 5 * time.Second
	cfg.Uplink.Backoff.Cap = time.Second
	cfg.Uplink.Stable = time.Second
	cfg.Batch.MinWindow = 0
	cfg.Batch.MaxWindow = time.Second
	cfg.Health.Interval = time.Second
	cert, err := ca.DeviceKeyPair(id, time.Now(), time.Hour)
	require.NoError(t, err)
	src := newCounterSource("aliased", 5*time.Millisecond)
	a, err := agent.New(aliasTestConfig(cfg, tap.addr()), agent.Options{
		Certificate: &cert, RootCAs: ca.Pool(), Logger: testLogger(t), Sources: []agentSource{src},
	})
	require.NoError(t, err)
	stop := runAgent(t, a)

	first := tap.waitPublishes(t, 0, 25, 30*time.Second)
	tap.cut()
	tap.waitPublishes(t, first+1, 25, 30*time.Second)
	src.pause()
	want := src.snapshot()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= len(want)
	}, 30*time.Second, 20*time.Millisecond)
	stop()
	mu.Lock()
	requireExactlyOnce(t, want, got)
	mu.Unlock()

	conns := tap.connections()
	for i, c := range conns {
		if c.sawConnack {
			require.NotNil(t, c.aliasMax, "connection %d: Mosquitto announces a Topic Alias Maximum", i)
			require.Positive(t, *c.aliasMax, "connection %d", i)
		}
	}
	requireTopics(t, conns, topic, true)
}

// mosquittoClient connects an MQTT 5 client to the Mosquitto at broker.
func mosquittoClient(t *testing.T, broker, id string, onPublish func(paho.PublishReceived) (bool, error)) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", broker)
	require.NoError(t, err, "Mosquitto at %s", broker)
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: packets.NewThreadSafeConn(conn), PacketTimeout: 10 * time.Second,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){onPublish}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}

// TestTopicAliasACL checks, with plain paho clients over mutual TLS against a
// real server, that a topic alias never carries a publish outside the
// device's root: a refused topic does not become an alias, an alias that was
// never set ends the connection with 0x82, and an alias cannot be pointed at
// another device's topic. A second device subscribed to its command topics
// receives nothing.
func TestTopicAliasACL(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const a, b = "alias-acl-a", "alias-acl-b"
	certA, certB := srv.device(t, a), srv.device(t, b)
	other := protocol.DeviceRoot(b) + "cmd/reboot"

	received := make(chan string, 16)
	victim, _, _ := aclClient(t, srv, b, certB, func(pr paho.PublishReceived) (bool, error) {
		received <- pr.Packet.Topic
		return true, nil
	})
	_, err := victim.Subscribe(context.Background(), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: protocol.DeviceRoot(b) + "cmd/#", QoS: 1}}})
	require.NoError(t, err)

	batch := func(v float64, at time.Time) []byte {
		p, err := protocol.Encode(protocol.Pack{{Name: "acl_alias", Time: float64(at.UnixMilli()) / 1000, Value: &v}}, protocol.Encoding{Format: protocol.FormatCBOR})
		require.NoError(t, err)
		return p
	}
	ctx := context.Background()
	now := time.Now()
	alias := func(topic string, payload []byte) *paho.Publish {
		return &paho.Publish{QoS: 1, Topic: topic, Payload: payload, Properties: &paho.PublishProperties{TopicAlias: paho.Uint16(1)}}
	}

	// Aliases 0 and above the maximum: DISCONNECT 0x94. paho refuses to
	// send them, so they go as raw packets on the client's connection.
	for _, bad := range []uint16{0, 17} {
		_, down, conn := aclClient(t, srv, a, certA, nil)
		p := &packets.Publish{QoS: 1, PacketID: 1, Topic: protocol.BatchTopic(a), Payload: batch(0, now),
			Properties: &packets.Properties{TopicAlias: paho.Uint16(bad)}}
		_, err := p.WriteTo(conn)
		require.NoError(t, err)
		select {
		case d := <-down:
			require.EqualValues(t, 0x94, d.ReasonCode, "alias %d", bad)
		case <-time.After(10 * time.Second):
			t.Fatalf("no DISCONNECT for alias %d", bad)
		}
	}

	// A refused topic with an alias: refused, and the alias is not set.
	c, down, _ := aclClient(t, srv, a, certA, nil)
	resp, err := c.Publish(ctx, alias(other, []byte("reboot")))
	require.Error(t, err)
	require.EqualValues(t, 0x87, resp.ReasonCode)
	// The connection ends before any PUBACK: send without waiting for one.
	_, err = c.PublishWithOptions(ctx, alias("", []byte("reboot")), paho.PublishOptions{Method: paho.PublishMethod_AsyncSend})
	require.NoError(t, err)
	select {
	case d := <-down:
		require.EqualValues(t, 0x82, d.ReasonCode, "an alias never set is a protocol error")
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT for an alias never set")
	}

	// An alias set to the device's own batch topic cannot be re-pointed at
	// another device's topic; the alias alone still means the batch topic.
	c, _, _ = aclClient(t, srv, a, certA, nil)
	resp, err = c.Publish(ctx, alias(protocol.BatchTopic(a), batch(1, now)))
	require.NoError(t, err)
	require.EqualValues(t, 0, resp.ReasonCode)
	resp, err = c.Publish(ctx, alias(other, []byte("reboot")))
	require.Error(t, err)
	require.EqualValues(t, 0x87, resp.ReasonCode)
	resp, err = c.Publish(ctx, alias("", batch(2, now.Add(time.Millisecond))))
	require.NoError(t, err)
	require.EqualValues(t, 0, resp.ReasonCode)

	srv.waitDelivered(t, "acl_alias", a, 2, 10*time.Second)
	require.Equal(t, map[int64]float64{now.UnixMilli(): 1, now.UnixMilli() + 1: 2}, srv.values(t, "acl_alias", a))
	select {
	case topic := <-received:
		t.Fatalf("device %s received %q from device %s", b, topic, a)
	case <-time.After(200 * time.Millisecond):
	}
}

// aclClient connects a plain paho MQTT 5 client for device id over mutual
// TLS and checks the server's Topic Alias Maximum; down receives the
// server's DISCONNECT; conn is the client's connection.
func aclClient(t *testing.T, s *testServer, id string, cert *tls.Certificate, onPublish func(paho.PublishReceived) (bool, error)) (c *paho.Client, down chan *paho.Disconnect, conn net.Conn) {
	t.Helper()
	tc, err := tls.Dial("tcp", s.mqttAddr, &tls.Config{Certificates: []tls.Certificate{*cert}, RootCAs: s.ca.Pool(), ServerName: "localhost"})
	require.NoError(t, err)
	conn = packets.NewThreadSafeConn(tc)
	down = make(chan *paho.Disconnect, 1)
	cfg := paho.ClientConfig{ClientID: id, Conn: conn, PacketTimeout: 10 * time.Second,
		OnServerDisconnect: func(d *paho.Disconnect) { down <- d }}
	if onPublish != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){onPublish}
	}
	c = paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	require.NotNil(t, ack.Properties.TopicAliasMaximum, "the server announces its Topic Alias Maximum")
	require.EqualValues(t, 16, *ack.Properties.TopicAliasMaximum)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c, down, conn
}
