package gateway

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millwright/millwright/protocol"
)

// topicAliasMaximum is the Topic Alias Maximum (MQTT 5.0 §3.2.2.3.8) the gateway announces: how
// many topic aliases a device may set on one connection. A device needs one per topic it
// publishes to often (the batch topic, reported state).
const topicAliasMaximum = 16

// readBufferSize is the connection's read buffer above the TLS record layer, which buffers a
// whole record itself: enough for a fixed header and remaining length, read byte by byte; a
// larger body is read straight into its own buffer.
const readBufferSize = 64

var (
	// errUnknownTopicAlias is a PUBLISH with a topic alias and no topic name, for an alias the
	// device never set on this connection: a protocol error (§3.3.2.3.4).
	errUnknownTopicAlias = packets.Code{Code: packets.ErrProtocolViolation.Code, Reason: "topic alias not set on this connection"}
	// errClientDisconnected ends a connection the device closed with DISCONNECT.
	errClientDisconnected = errors.New("client disconnected")
	// errRetryLater closes an MQTT 3.1.1 connection whose batch was refused for now: 3.1.1 has
	// no reason codes, and the device sends the batch again once it has reconnected.
	errRetryLater = errors.New("batch refused for retry")
)

// conn is one device connection, served by one goroutine that reads a packet, handles it —
// storing a batch before its acknowledgement — and writes the answer. Other goroutines write
// to it (a takeover's DISCONNECT, a message to the device) under wmu.
//
// One goroutine whose stack is shallow while it waits: an idle device costs its TLS state, this
// struct and a few KiB of stack (docs/design.md, "Device sessions").
type conn struct {
	m      *MQTT
	nc     net.Conn
	r      *bufio.Reader
	secure bool // on the TLS listener: the device is its certificate

	// Set by CONNECT, before the CONNACK; read by the serving goroutine, and by others under
	// wmu once established.
	device      string
	version     byte
	keepalive   time.Duration
	maxOut      uint32 // the device's Maximum Packet Size; 0 means none
	problemInfo bool   // the device accepts reason strings
	aliases     *[topicAliasMaximum]string
	sess        *session
	attached    bool // counted as connected; guarded by the MQTT's mutex after CONNECT

	// On the TLS listener, the certificate's device and its authorization, decided after the
	// handshake and before the CONNECT is read; a refusal is answered at CONNECT.
	cert certIdentity

	qos2Open map[uint16]struct{} // QoS 2 publishes received on this connection and not yet released

	traffic  Traffic
	observed *Connection // what the Observer was told at the CONNACK; nil before, or without one

	wmu         sync.Mutex
	established bool // the CONNACK was sent
	closed      bool
	kickedBy    Cause // why another goroutine closed the connection, if one did
}

func newConn(m *MQTT, nc net.Conn, secure bool) *conn {
	return &conn{m: m, nc: nc, r: bufio.NewReaderSize(nc, readBufferSize), secure: secure}
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.m.wg.Done()
	if c.secure {
		c.authorizeCertificate()
	}
	err := c.connect()
	if err == nil {
		err = c.loop()
	}
	c.end(err)
	c.m.detach(c)
	if c.observed != nil {
		c.wmu.Lock()
		cause := endCause(c.kickedBy, err)
		c.wmu.Unlock()
		c.m.observer.Disconnected(c.observed, cause, c.m.opts.Clock.Now())
	}
}

// loop reads and handles packets until the connection ends. It and readPacket are all that is
// on the stack while the connection waits, below the TLS layer's reads.
func (c *conn) loop() error {
	for {
		// §3.1.2.10: one and a half times the keep-alive without a packet ends it. The
		// keep-alive is never none (MQTTOptions.MaxKeepAlive).
		_ = c.nc.SetReadDeadline(time.Now().Add(c.keepalive + c.keepalive/2))
		fh, body, err := readPacket(c.r, c.m.opts.MaxPacketSize)
		if err != nil {
			return readError(err)
		}
		c.traffic.received(packetSize(fh))
		if err := c.handle(fh, body); err != nil {
			return err
		}
	}
}

// readError says why a read failed: a keep-alive timeout, the device going away, or a
// malformed header (which carries its reason code).
func readError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return packets.ErrKeepAliveTimeout
	}
	return err
}

// end closes the connection; an MQTT 5 device that broke the protocol, or was silent past its
// keep-alive, is told why in a DISCONNECT first.
func (c *conn) end(err error) {
	var code packets.Code
	if err != nil && errors.As(err, &code) && code.Code >= packets.ErrUnspecifiedError.Code {
		if isProtocolError(code) {
			c.m.met.protocolErrors.Inc()
		}
		c.m.log.Debug("MQTT connection closed", "device", c.device, "remote", c.nc.RemoteAddr().String(), "reason", code.Reason, "error", err)
		c.kick(code)
		return
	}
	if err != nil && !errors.Is(err, errClientDisconnected) && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.m.log.Debug("MQTT connection closed", "device", c.device, "remote", c.nc.RemoteAddr().String(), "error", err)
	}
	c.kick(packets.Code{})
}

// isProtocolError tells the reason codes of a device breaking the protocol from the others
// (refusals, keep-alive timeouts, takeovers).
func isProtocolError(c packets.Code) bool {
	switch c.Code {
	case packets.ErrMalformedPacket.Code, packets.ErrProtocolViolation.Code, packets.ErrTopicAliasInvalid.Code,
		packets.ErrPacketTooLarge.Code, packets.ErrRetainNotSupported.Code, packets.ErrSubscriptionIdentifiersNotSupported.Code:
		return true
	}
	return false
}

// kick closes the connection, with a DISCONNECT carrying code first when code is an error and
// the device speaks MQTT 5 and was accepted. It may be called from any goroutine, and again.
func (c *conn) kick(code packets.Code) {
	c.wmu.Lock()
	if !c.closed && c.established && c.version == 5 && code.Code >= packets.ErrUnspecifiedError.Code {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: code.Code}
		pk.Properties.ReasonString = code.Reason
		if b, err := c.encodeFor(&pk); err == nil {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.m.opts.DisconnectTimeout))
			if _, err := c.nc.Write(b); err == nil {
				c.traffic.sent(len(b))
			}
		}
	}
	c.closed = true
	c.wmu.Unlock()
	_ = c.nc.Close()
}

// kickFor closes the connection from another goroutine, as kick does, and records why for
// the Observer: a takeover, the server's shutdown, or the device losing its right to connect.
func (c *conn) kickFor(code packets.Code) {
	c.wmu.Lock()
	if !c.closed && c.kickedBy == "" {
		c.kickedBy = kickCause(code)
	}
	c.wmu.Unlock()
	c.kick(code)
}

// encodeFor encodes pk for this device: in its protocol version, within its maximum packet
// size, and without a reason string when it asked for none.
func (c *conn) encodeFor(pk *packets.Packet) ([]byte, error) {
	pk.ProtocolVersion = c.version
	pk.Mods.MaxSize = c.maxOut
	if !c.problemInfo {
		pk.Properties.ReasonString = ""
	}
	return encode(pk)
}

// send writes a packet to the device; a write that fails closes the connection.
func (c *conn) send(pk *packets.Packet) error {
	b, err := c.encodeFor(pk)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(b)
}

func (c *conn) writeLocked(b []byte) error {
	if c.closed {
		return net.ErrClosed
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.m.opts.WriteTimeout))
	if _, err := c.nc.Write(b); err != nil {
		c.closed = true
		_ = c.nc.Close()
		return fmt.Errorf("write to device: %w", err)
	}
	c.traffic.sent(len(b))
	return nil
}

// sendPublish writes a message to the device. One larger than the device's Maximum Packet
// Size is not sent (§3.1.2.11.4) and is counted as dropped. Other goroutines reach c through
// its session only once attach has made it the live connection, under wmu, which the CONNACK
// holds until written: a message never goes before the CONNACK.
func (c *conn) sendPublish(topic string, payload []byte, qos byte, id uint16, dup bool) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: dup},
		TopicName: topic, Payload: payload, PacketID: id}
	b, err := c.encodeFor(&pk)
	if err != nil {
		return
	}
	if c.maxOut > 0 && uint64(len(b)) > uint64(c.maxOut) {
		c.m.met.dropped.Inc()
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.writeLocked(b)
}

// authorizeCertificate asks the Authorizer, right after the TLS handshake and before any of the
// CONNECT is read, whether the certificate's device may connect: a revoked or suspended device
// costs no more than its CONNECT (within MQTTOptions.MaxConnectSize), which is answered with
// the refusal. The Authorizer answers from a cache, so a reconnect storm asks the registry once.
func (c *conn) authorizeCertificate() {
	var id certIdentity
	id.device, id.cert, id.err = certificateIdentity(c)
	if id.err != nil {
		id.auth = Refuse(id.err)
	} else if err := protocol.ValidateDeviceID(id.device); err != nil {
		id.auth = Refuse(err)
	} else if c.m.authz != nil {
		id.auth = c.authorize(id.device, id.cert)
	}
	c.cert = id
}

// authorize asks the Authorizer whether device may connect, within
// MQTTOptions.AuthorizeTimeout.
func (c *conn) authorize(device string, cert *x509.Certificate) Decision {
	ctx, cancel := context.WithTimeout(c.m.ctx, c.m.opts.AuthorizeTimeout)
	defer cancel()
	return c.m.authz.Authorize(ctx, device, cert)
}

// listener is the listener c came in on.
func (c *conn) listener() listenerKind {
	if c.secure {
		return tlsListener
	}
	return plainListener
}

// connect reads and answers the CONNECT packet, which must come first, in time
// (MQTTOptions.ConnectTimeout) and within MQTTOptions.MaxConnectSize.
func (c *conn) connect() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(c.m.opts.ConnectTimeout))
	fh, body, err := readPacket(c.r, c.m.opts.MaxConnectSize)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.m.met.limits.WithLabelValues(limitConnectTimeout).Inc()
		case errors.Is(err, packets.ErrPacketTooLarge):
			c.m.met.limits.WithLabelValues(limitConnectSize).Inc()
		}
		return fmt.Errorf("read CONNECT: %w", err)
	}
	c.traffic.received(packetSize(fh))
	if fh.Type != packets.Connect {
		return fmt.Errorf("first packet of type %d: %w", fh.Type, packets.ErrProtocolViolationRequireFirstConnect)
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	return c.handleConnect(fh, body)
}

// handleConnect answers a CONNECT: the CONNECT check decides (checkConnect), the development
// listener asks the Authorizer, and the connection either gets its session and the CONNACK that
// says so, or the refusal.
func (c *conn) handleConnect(fh packets.FixedHeader, body []byte) error {
	pk := packets.Packet{FixedHeader: fh}
	err := decode(&pk, body)
	d := checkConnect(connectInput{pk: &pk, decodeErr: err, listener: c.listener(), cert: c.cert}, &c.m.opts)
	if d.authorize && c.m.authz != nil {
		d = d.authorized(c.authorize(d.device, nil))
	}
	c.version, c.problemInfo, c.maxOut = d.version, d.problemInfo, d.maxOut
	if d.refused {
		if d.denied {
			c.m.met.connects.WithLabelValues("refused").Inc()
			c.m.log.Info("MQTT connection refused", "client", d.clientID, "remote", c.nc.RemoteAddr().String(), "error", d.err)
		}
		return c.refuse(d.code, d.err)
	}
	return c.accept(&pk, d)
}

// accept gives the device its session and writes the CONNACK, before anything else is
// written to the connection: a message to the device waits for wmu.
func (c *conn) accept(pk *packets.Packet, d connectDecision) error {
	c.device = d.device
	c.keepalive = time.Duration(d.keepalive) * time.Second
	if d.clamped {
		c.m.met.keepalive.Inc()
	}
	c.wmu.Lock()
	present, err := c.m.attach(c, d.clean, d.expiry, d.quota)
	if err != nil {
		c.wmu.Unlock()
		return c.refuse(asCode(err), err)
	}
	ack := connack(d, present, &c.m.opts)
	b, err := c.encodeFor(&ack)
	if err == nil {
		err = c.writeLocked(b)
	}
	c.established = err == nil
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	c.m.met.connects.WithLabelValues("accepted").Inc()
	now := c.m.opts.Clock.Now()
	if c.m.facts != nil {
		c.m.facts.Connected(c.device, connectFacts(pk, now))
	}
	if c.m.observer != nil {
		c.observed = c.connection(now)
		c.m.observer.Connected(c.observed)
	}
	c.m.log.Debug("device connected", "device", c.device, "remote", c.nc.RemoteAddr().String(), "mqtt", c.version, "session_present", present)
	if present {
		c.resend()
		if c.m.channel != nil {
			for _, f := range c.sess.filters() {
				c.m.channel.Subscribed(c.device, f)
			}
		}
	}
	return nil
}

// refuse answers a CONNECT with an error CONNACK, and returns err to end the connection.
func (c *conn) refuse(code packets.Code, err error) error {
	ack := refusal(c.version, code)
	_ = c.send(&ack)
	return fmt.Errorf("connect refused: %w", err)
}

// handle answers one packet after CONNECT. An error ends the connection.
func (c *conn) handle(fh packets.FixedHeader, body []byte) error {
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: c.version}
	if err := decode(&pk, body); err != nil {
		return err
	}
	switch fh.Type {
	case packets.Publish:
		return c.handlePublish(&pk)
	case packets.Puback:
		c.sess.acked(pk.PacketID)
		return nil
	case packets.Pubrel:
		code := packets.CodeSuccess.Code
		if !c.release2(pk.PacketID) {
			code = packets.ErrPacketIdentifierNotFound.Code
		}
		return c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubcomp}, PacketID: pk.PacketID, ReasonCode: code})
	case packets.Subscribe:
		return c.handleSubscribe(&pk)
	case packets.Unsubscribe:
		codes := make([]byte, len(pk.Filters))
		for i, f := range pk.Filters {
			if !c.sess.unsubscribe(f.Filter) {
				codes[i] = packets.CodeNoSubscriptionExisted.Code
			}
		}
		return c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID, ReasonCodes: codes})
	case packets.Pingreq:
		return c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
	case packets.Disconnect:
		if c.version == 5 && pk.Properties.SessionExpiryIntervalFlag {
			d := min(time.Duration(pk.Properties.SessionExpiryInterval), time.Duration(c.m.opts.MaxSessionExpiry)) * time.Second
			if err := c.sess.setExpiry(d); err != nil {
				return err
			}
		}
		return errClientDisconnected
	case packets.Connect:
		return packets.ErrProtocolViolationSecondConnect
	default:
		// PUBREC and PUBCOMP answer QoS 2 messages the gateway never sends; AUTH continues an
		// enhanced authentication it never starts.
		return fmt.Errorf("%w: unexpected packet type %d", packets.ErrProtocolViolation, fh.Type)
	}
}

// handlePublish stores a batch, or passes a message on the device's root to its own
// subscriptions, and acknowledges it. A topic outside the device's root is refused: MQTT 5
// devices get reason 0x87 in the acknowledgement, MQTT 3.1.1 devices (which have no reason
// codes) are disconnected, and QoS 0 messages are dropped; each is counted.
func (c *conn) handlePublish(pk *packets.Packet) error {
	if pk.FixedHeader.Retain && c.version == 5 {
		return packets.ErrRetainNotSupported // announced in the CONNACK
	}
	if err := c.receiveQuota(pk); err != nil {
		return err
	}
	topic, err := c.resolveAlias(pk)
	if err != nil {
		return err
	}
	qos := pk.FixedHeader.Qos
	if device, _, ok := protocol.ParseTopic(topic); !ok || device != c.device {
		c.m.met.acl.Inc()
		c.m.log.Info("MQTT topic refused", "device", c.device, "topic", topic, "write", true)
		switch {
		case qos == 0:
			return nil
		case c.version == 5:
			return c.ackPublish(pk, packets.ErrNotAuthorized.Code, packets.ErrNotAuthorized.Reason)
		default:
			return fmt.Errorf("publish to %q: %w", topic, packets.ErrNotAuthorized)
		}
	}
	c.recordAlias(pk)
	if qos == 2 {
		if c.qos2Open == nil {
			c.qos2Open = map[uint16]struct{}{}
		}
		c.qos2Open[pk.PacketID] = struct{}{}
		if !c.sess.qos2Received(pk.PacketID) {
			return c.ackPublish(pk, packets.CodeSuccess.Code, "") // stored already; the device missed the PUBREC
		}
	}
	if rest := topic[len(protocol.DeviceRoot(c.device)):]; c.m.channel != nil && channelTopic(rest) {
		if err := c.m.channel.Message(c.m.ctx, c.device, rest, pk.Payload); err != nil {
			c.m.log.Debug("device channel message refused", "device", c.device, "topic", topic, "error", err)
			if c.version == 5 {
				code := packets.ErrPayloadFormatInvalid.Code
				switch {
				case errors.Is(err, ErrChannelUnavailable):
					code = packets.ErrUnspecifiedError.Code
				case errors.Is(err, ErrChannelRateLimited):
					code = packets.ErrQuotaExceeded.Code
				}
				return c.ackPublish(pk, code, truncateReason(err.Error()))
			}
		}
		return c.ackPublish(pk, packets.CodeSuccess.Code, "")
	}
	if topic != protocol.BatchTopic(c.device) {
		matched, _, _ := c.m.publish(c.device, topic, pk.Payload, min(qos, 1), true, nil)
		code := packets.CodeSuccess.Code
		if !matched {
			code = packets.CodeNoMatchingSubscribers.Code
		}
		return c.ackPublish(pk, code, "")
	}

	res := c.m.ing.Ingest(c.m.ctx, c.device, pk.Payload)
	if res.Reason == protocol.ReasonNone {
		return c.ackPublish(pk, packets.CodeSuccess.Code, "")
	}
	if res.Reason != protocol.ReasonTooOld && res.Reason != protocol.ReasonTooNew {
		c.m.log.Debug("batch refused", "device", c.device, "reason", res.Reason.String(), "detail", res.Detail)
	}
	switch {
	case qos == 0:
		return nil // nothing to acknowledge; counted by the pipeline
	case c.version == 5:
		return c.ackPublish(pk, res.Reason.MQTTCode(), res.Reason.String()+": "+res.Detail)
	case res.Reason.Retry():
		if qos == 2 {
			c.release2(pk.PacketID)
		}
		return fmt.Errorf("%w: %s", errRetryLater, res.Reason)
	default:
		return c.ackPublish(pk, packets.CodeSuccess.Code, "") // dropped for good, and counted
	}
}

// receiveQuota enforces the Receive Maximum (MQTT 5.0 §3.3.4): a QoS 2 PUBLISH that would open
// more exchanges on this connection than MQTTOptions.ReceiveMaximum, none of them released by
// PUBREL yet, ends the connection with 0x93. A QoS 1 PUBLISH is acknowledged before the next
// packet is read, so it never counts for long; a QoS 2 PUBLISH sent again (same packet ID)
// opens nothing new. MQTT 3.1.1 devices are held to the same bound.
func (c *conn) receiveQuota(pk *packets.Packet) error {
	if pk.FixedHeader.Qos != 2 {
		return nil
	}
	if _, open := c.qos2Open[pk.PacketID]; open || len(c.qos2Open) < int(c.m.opts.ReceiveMaximum) {
		return nil
	}
	c.m.met.limits.WithLabelValues(limitReceiveMaximum).Inc()
	c.m.log.Info("MQTT receive maximum exceeded", "device", c.device, "unreleased", len(c.qos2Open))
	return packets.ErrReceiveMaximum
}

// release2 ends a QoS 2 exchange the device opened (its PUBREL came, or it was refused), and
// reports whether the session knew it.
func (c *conn) release2(id uint16) bool {
	delete(c.qos2Open, id)
	return c.sess.qos2Released(id)
}

// resolveAlias returns the PUBLISH's topic: its topic name, or the topic its alias stands for
// on this connection.
func (c *conn) resolveAlias(pk *packets.Packet) (string, error) {
	if c.version != 5 || !pk.Properties.TopicAliasFlag || pk.TopicName != "" {
		return pk.TopicName, nil
	}
	a := pk.Properties.TopicAlias // 1 to topicAliasMaximum: checked by the codec
	if c.aliases != nil && c.aliases[a-1] != "" {
		return c.aliases[a-1], nil
	}
	return "", errUnknownTopicAlias
}

// recordAlias remembers the topic a PUBLISH that passed the ACL sets its alias to: an alias
// never stands for a topic outside the device's root.
func (c *conn) recordAlias(pk *packets.Packet) {
	if c.version != 5 || !pk.Properties.TopicAliasFlag || pk.TopicName == "" {
		return
	}
	if c.aliases == nil {
		c.aliases = new([topicAliasMaximum]string)
	}
	a := pk.Properties.TopicAlias
	if c.aliases[a-1] != pk.TopicName {
		c.aliases[a-1] = strings.Clone(pk.TopicName) // not the packet's buffer, which it would keep
	}
}

// ackPublish answers a QoS 1 PUBLISH with a PUBACK and a QoS 2 one with a PUBREC carrying code;
// a QoS 2 exchange refused with an error code ends there (§4.3.3).
func (c *conn) ackPublish(pk *packets.Packet, code byte, reason string) error {
	var t byte
	switch pk.FixedHeader.Qos {
	case 0:
		return nil
	case 1:
		t = packets.Puback
	default:
		t = packets.Pubrec
		if code >= packets.ErrUnspecifiedError.Code {
			c.release2(pk.PacketID)
		}
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: t}, PacketID: pk.PacketID, ReasonCode: code}
	ack.Properties.ReasonString = reason
	return c.send(&ack)
}

// handleSubscribe grants subscriptions within the device's own root, at QoS 0 or 1.
func (c *conn) handleSubscribe(pk *packets.Packet) error {
	if len(pk.Properties.SubscriptionIdentifier) > 0 {
		return packets.ErrSubscriptionIdentifiersNotSupported // announced in the CONNACK
	}
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		device, _, ok := protocol.ParseTopic(f.Filter)
		switch {
		case !validFilter(f.Filter):
			codes[i] = packets.ErrTopicFilterInvalid.Code
		case !ok || device != c.device:
			c.m.met.acl.Inc()
			c.m.log.Info("MQTT topic refused", "device", c.device, "topic", f.Filter, "write", false)
			codes[i] = packets.ErrNotAuthorized.Code
		default:
			f.Filter = strings.Clone(f.Filter)
			codes[i] = c.sess.subscribe(f)
		}
		if c.version == 4 && codes[i] >= packets.ErrUnspecifiedError.Code {
			codes[i] = packets.ErrUnspecifiedError.Code // 3.1.1 has one failure code (§3.9.3)
		}
	}
	if err := c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes}); err != nil {
		return err
	}
	if c.m.channel != nil {
		for i, f := range pk.Filters {
			if codes[i] < packets.ErrUnspecifiedError.Code {
				c.m.channel.Subscribed(c.device, f.Filter)
			}
		}
	}
	return nil
}

// truncateReason bounds a reason string sent to a device.
func truncateReason(s string) string {
	const limit = 256
	if len(s) > limit {
		return s[:limit]
	}
	return s
}

// validFilter reports whether a topic filter is well formed (§4.7.1): "#" only as the whole
// last level, "+" only as a whole level.
func validFilter(f string) bool {
	if f == "" {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}
