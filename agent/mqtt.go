package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// errNotConnected is a send attempted while the MQTT connection is down.
var errNotConnected = errors.New("not connected")

// receiveMaximum is the agent's MQTT 5 Receive Maximum: how many QoS 1
// messages of the device channel (commands, configuration) the server may
// have unacknowledged on the connection. The agent acknowledges each as
// soon as it has handed it on, so a few suffice; a small value also keeps
// the client's inbound queue small (paho sizes it from this), which matters
// with thousands of agents in one process.
const receiveMaximum = 8

// mqttUplink keeps one MQTT 5 connection over TLS up, reconnecting with
// backoff, and publishes batches with QoS 1.
type mqttUplink struct {
	device  string
	topic   string
	addr    string
	cfg     UplinkConfig
	props   paho.UserProperties // reported at connect: the device's identity
	tls     *tls.Config
	dialer  Dialer
	clk     clock.Clock
	log     *slog.Logger
	rnd     func(int64) int64
	m       *counters
	backoff *backoff.Backoff // owned by run

	// keepalive is uplink.keepalive, which the remote configuration may change: it
	// applies from the next connection on (reconfigure).
	keepalive atomic.Int64
	// recv takes each message the server sends on the device channel (topic, payload),
	// on paho's routing goroutine: it must not block.
	recv func(topic string, payload []byte)
	// state is the State message published after each connection; nil: none.
	state []byte
	// onOpen, if set, is called once a connection's channel is open.
	onOpen func()

	mu   sync.Mutex
	conn *mqttConn // nil while down
}

// batchTopicAlias is the MQTT 5 Topic Alias (§3.3.2.3.4) the agent gives
// its batch topic on a connection whose server allows aliases: 1, the one
// alias every such server accepts.
const batchTopicAlias = 1

// mqttConn is one live connection.
type mqttConn struct {
	client *paho.Client
	raw    net.Conn
	down   chan string // the first cause of its end

	// aliasMax is the server's Topic Alias Maximum from its CONNACK; 0 (or
	// absent) means no aliases on this connection.
	aliasMax uint16
	// aliased is set once the server acknowledged a PUBLISH that carried
	// the batch topic together with batchTopicAlias: from then on batches
	// carry the alias alone. A server that refused that PUBLISH may not
	// have kept the alias, so until one is acknowledged the topic goes
	// with every batch. Topic aliases live as long as one connection; a
	// new connection starts without.
	aliased atomic.Bool
}

func (c *mqttConn) report(cause string) {
	select {
	case c.down <- cause:
	default:
	}
}

var _ uplink = (*mqttUplink)(nil)

func (u *mqttUplink) ready() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conn != nil
}

func (u *mqttUplink) current() *mqttConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conn
}

// run connects, waits for the connection to end, and reconnects after a
// backoff wait, until ctx ends. The very first attempt waits a uniform
// random time in [0, backoff base) too, so that devices powered on together
// do not connect in step (no wait with backoff jitter none).
func (u *mqttUplink) run(ctx context.Context) {
	wait := u.backoff.Initial()
	failures := 0 // connect failures in a row
	for {
		if !clock.Sleep(ctx, u.clk, wait) {
			return
		}
		u.m.connectAttempt()
		c, cause, err := u.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			u.m.connectFailure(cause)
			wait = u.backoff.Next()
			failures++
			// At info the 1st, 2nd, 4th, 8th… failure in a row: an unreachable server is
			// reported without a line per retry.
			level := slog.LevelDebug
			if failures&(failures-1) == 0 {
				level = slog.LevelInfo
			}
			u.log.Log(ctx, level, "MQTT connect failed", "addr", u.addr, "cause", cause, "error", err, "failures_in_a_row", failures, "retry_in", wait)
			continue
		}
		failures = 0
		up := u.clk.Now()
		u.mu.Lock()
		u.conn = c
		u.mu.Unlock()
		u.m.setConnected(true)
		u.log.Info("MQTT connected", "addr", u.addr, "topic_alias_maximum", c.aliasMax)
		go u.openChannel(ctx, c)

		var cause2 string
		select {
		case cause2 = <-c.down:
		case <-ctx.Done():
		}
		u.mu.Lock()
		u.conn = nil
		u.mu.Unlock()
		u.m.setConnected(false)
		if ctx.Err() != nil {
			_ = c.client.Disconnect(&paho.Disconnect{ReasonCode: 0})
			return
		}
		u.m.reconnect(cause2)
		if cause2 == causeReconfigure {
			// The agent's own choice: a new keepalive. Reconnect at once.
			_ = c.client.Disconnect(&paho.Disconnect{ReasonCode: 0})
			_ = c.raw.Close()
			wait = 0
			u.log.Info("MQTT reconnecting with the new configuration", "keepalive", time.Duration(u.keepalive.Load()))
			continue
		}
		_ = c.raw.Close()
		if u.clk.Now().Sub(up) >= u.cfg.Stable {
			u.backoff.Reset()
		}
		wait = u.backoff.Next()
		u.log.Info("MQTT connection lost", "cause", cause2, "up_for", u.clk.Now().Sub(up).Round(time.Millisecond), "retry_in", wait)
	}
}

// reconfigure sets the keepalive of the next connection and, when it differs from the
// current one's, ends the current connection so that the next one follows at once.
func (u *mqttUplink) reconfigure(keepalive time.Duration) {
	if time.Duration(u.keepalive.Swap(int64(keepalive))) == keepalive {
		return
	}
	if c := u.current(); c != nil {
		c.report(causeReconfigure)
	}
}

// openChannel subscribes connection c to the device channel's commands and configuration
// and publishes the device's state. A refused subscription is logged; batches go on.
func (u *mqttUplink) openChannel(ctx context.Context, c *mqttConn) {
	sctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	ack, err := c.client.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: protocol.CommandFilter(u.device), QoS: 1},
		{Topic: protocol.ConfigTopic(u.device), QoS: 1},
	}})
	switch {
	case err != nil && ack == nil:
		u.log.Debug("subscribe to the device channel", "error", err)
		return
	case err != nil:
		u.log.Warn("the server refused the device channel's subscriptions", "reason_codes", fmt.Sprintf("%x", ack.Reasons), "error", err)
	}
	if u.state != nil {
		if err := u.publishOn(ctx, c, protocol.StateTopic(u.device), u.state); err != nil {
			u.log.Debug("publish the device state", "error", err)
		}
	}
	if u.onOpen != nil {
		u.onOpen()
	}
}

// publishChannel publishes a device channel message with QoS 1 on the current connection
// and waits for its PUBACK.
func (u *mqttUplink) publishChannel(ctx context.Context, m channelMsg) error {
	c := u.current()
	if c == nil {
		return errNotConnected
	}
	return u.publishOn(ctx, c, m.topic(u.device), m.body)
}

func (u *mqttUplink) publishOn(ctx context.Context, c *mqttConn, topic string, body []byte) error {
	pctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-c.client.Done():
			cancel()
		case <-stop:
		}
	}()
	resp, err := c.client.Publish(pctx, &paho.Publish{QoS: 1, Topic: topic, Payload: body})
	if err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("publish %s: PUBACK 0x%02X", topic, resp.ReasonCode)
	}
	return nil
}

// connect dials (resolving the name afresh), does the TLS handshake and the
// MQTT CONNECT. On failure it returns the cause.
func (u *mqttUplink) connect(ctx context.Context) (*mqttConn, string, error) {
	cctx, cancel := context.WithTimeout(ctx, u.cfg.ConnectTimeout)
	defer cancel()
	raw, err := u.dialer.DialContext(cctx, "tcp", u.addr)
	if err != nil {
		return nil, timeoutOr(cctx, causeDial), fmt.Errorf("dial %s: %w", u.addr, err)
	}
	tc := tls.Client(raw, u.tls)
	if err := tc.HandshakeContext(cctx); err != nil {
		_ = raw.Close()
		return nil, timeoutOr(cctx, causeTLS), fmt.Errorf("TLS handshake with %s: %w", u.addr, err)
	}
	c := &mqttConn{raw: raw, down: make(chan string, 1)}
	c.client = paho.NewClient(paho.ClientConfig{
		ClientID:      u.device,
		Conn:          packets.NewThreadSafeConn(&packetConn{Conn: tc}),
		PacketTimeout: u.cfg.AckTimeout,
		OnServerDisconnect: func(d *paho.Disconnect) {
			cause := disconnectCause(d.ReasonCode)
			if d.Properties != nil && (d.Properties.ServerReference != "" || d.Properties.ReasonString != "") {
				u.log.Info("server disconnected", "reason_code", fmt.Sprintf("0x%02X", d.ReasonCode),
					"reason", d.Properties.ReasonString, "server_reference", d.Properties.ServerReference)
			}
			c.report(cause)
		},
		PingHandler: newPinger(u.clk),
		OnClientError: func(err error) {
			cause := causeNetwork
			if errors.Is(err, errKeepalive) {
				cause = causeKeepalive
			}
			c.report(cause)
		},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				if u.recv != nil {
					u.recv(pr.Packet.Topic, pr.Packet.Payload)
				}
				return true, nil
			},
		},
	})
	rm := uint16(receiveMaximum)
	ack, err := c.client.Connect(cctx, &paho.Connect{
		ClientID:   u.device,
		KeepAlive:  uint16(time.Duration(u.keepalive.Load()) / time.Second),
		CleanStart: true,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm, User: u.props},
	})
	if err != nil {
		_ = raw.Close()
		if ack != nil {
			reason := ""
			if ack.Properties != nil {
				reason = ack.Properties.ReasonString
			}
			return nil, connackCause(ack.ReasonCode), fmt.Errorf("CONNACK 0x%02X %s", ack.ReasonCode, reason)
		}
		return nil, timeoutOr(cctx, causeNetwork), fmt.Errorf("MQTT connect: %w", err)
	}
	if ack.Properties != nil && ack.Properties.TopicAliasMaximum != nil {
		c.aliasMax = *ack.Properties.TopicAliasMaximum
	}
	return c, "", nil
}

// publish is the PUBLISH for one batch on c: the batch topic, with the
// batch topic alias where the server allows aliases, and once the alias is
// established the alias alone (an empty topic name), which saves the topic
// (len(mw/v1/<device>/batch) bytes) on every batch but the first.
func (u *mqttUplink) publish(c *mqttConn, payload []byte) *paho.Publish {
	p := &paho.Publish{QoS: 1, Topic: u.topic, Payload: payload}
	if c.aliasMax >= batchTopicAlias {
		p.Properties = &paho.PublishProperties{TopicAlias: paho.Uint16(batchTopicAlias)}
		if c.aliased.Load() {
			p.Topic = ""
		}
	}
	return p
}

// send publishes one batch with QoS 1 and waits for the PUBACK.
func (u *mqttUplink) send(ctx context.Context, payload []byte) sendResult {
	c := u.current()
	if c == nil {
		return sendResult{err: errNotConnected}
	}
	pctx, cancel := context.WithTimeout(ctx, u.cfg.AckTimeout)
	defer cancel()
	// paho forgets a publish whose connection dropped without telling the
	// waiter; end the wait when the connection ends.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-c.client.Done():
			cancel()
		case <-stop:
		}
	}()
	start := u.clk.Now()
	resp, err := c.client.Publish(pctx, u.publish(c, payload))
	rtt := u.clk.Now().Sub(start)
	if resp != nil {
		if err == nil && c.aliasMax >= batchTopicAlias {
			c.aliased.Store(true)
		}
		return sendResult{reason: protocol.ReasonFromMQTTCode(resp.ReasonCode), rtt: rtt}
	}
	if err == nil {
		err = errors.New("no PUBACK")
	}
	if ctx.Err() == nil && errors.Is(pctx.Err(), context.DeadlineExceeded) {
		// The link is dead or the server stuck: start over.
		c.report(causeAckTimeout)
		_ = c.raw.Close()
		return sendResult{err: fmt.Errorf("publish: no PUBACK within %v", u.cfg.AckTimeout), rtt: rtt}
	}
	return sendResult{err: fmt.Errorf("publish: %w", err), rtt: rtt}
}

// connackCause is the cause of a refused CONNECT, by the CONNACK's reason code
// (MQTT 5.0 §3.2.2.2).
func connackCause(code byte) string {
	switch code {
	case protocol.MQTTServerBusy, protocol.MQTTQuotaExceeded:
		return causeServerBusy
	case protocol.MQTTUseAnotherServer, protocol.MQTTServerMoved:
		return causeServerMoved
	case protocol.MQTTNotAuthorized, protocol.MQTTBadUserNameOrPassword, protocol.MQTTBanned, protocol.MQTTClientIdentifierNotValid:
		return causeRefused
	}
	return causeServerOther
}

// disconnectCause is the cause of a DISCONNECT from the server, by its reason
// code (MQTT 5.0 §3.14.2.1).
func disconnectCause(code byte) string {
	switch code {
	case protocol.MQTTServerBusy, protocol.MQTTQuotaExceeded:
		return causeServerBusy
	case protocol.MQTTUseAnotherServer, protocol.MQTTServerMoved:
		return causeServerMoved
	case protocol.MQTTServerShuttingDown:
		return causeServerClosing
	}
	return causeServerOther
}

func timeoutOr(ctx context.Context, cause string) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return causeTimeout
	}
	return cause
}

// packetConn hands each MQTT control packet to the TLS connection in one
// Write, so that it travels in one TLS record and, with Nagle's algorithm
// off (Go's default), one TCP segment. paho writes a packet in up to four
// pieces (fixed header, variable header, properties, payload) through
// net.Buffers, which reach a *tls.Conn as one Write, hence one record with
// 22 bytes of TLS 1.3 overhead, per piece. packetConn gathers the pieces
// until a whole packet (fixed header byte, Remaining Length, that many
// bytes) is there. paho serialises packet writes (packets.NewThreadSafeConn
// around this), so pieces of two packets never interleave.
type packetConn struct {
	net.Conn
	mu  sync.Mutex
	buf []byte
}

// maxKeptBuffer is the largest write buffer kept between packets; a larger
// one (a big batch) is released, so that an idle connection holds little.
const maxKeptBuffer = 4 << 10

func (c *packetConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf = append(c.buf, p...)
	n := wholePackets(c.buf)
	if n == 0 {
		return len(p), nil
	}
	_, err := c.Conn.Write(c.buf[:n])
	rest := copy(c.buf, c.buf[n:])
	c.buf = c.buf[:rest]
	if rest == 0 && cap(c.buf) > maxKeptBuffer {
		c.buf = nil
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// wholePackets returns the length of the longest prefix of b made of whole
// MQTT control packets. A malformed Remaining Length (more than 4 bytes,
// §1.5.5) ends the framing: everything buffered is passed on for the
// server to reject.
func wholePackets(b []byte) int {
	n := 0
	for {
		rest := b[n:]
		length, size := 0, 0
		for i := 1; ; i++ {
			if i > 4 {
				return len(b)
			}
			if i >= len(rest) {
				return n
			}
			length |= int(rest[i]&0x7f) << (7 * (i - 1))
			if rest[i]&0x80 == 0 {
				size = 1 + i + length
				break
			}
		}
		if size > len(rest) {
			return n
		}
		n += size
	}
}
