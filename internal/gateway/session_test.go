package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// The session tests speak raw MQTT 3.1.1 and 5 on the development listener (the client ID
// names the device), to reach the corners a full client never sends. The TLS listener, the
// certificate checks and the ingest path are tested with paho, mosquitto_pub and the agent
// elsewhere.

// countingIngester decodes each batch with the real decoder and counts the ones it took.
type countingIngester struct{ n atomic.Int64 }

func (ci *countingIngester) Ingest(ctx context.Context, device string, payload []byte) IngestResult {
	res := decodingIngester{}.Ingest(ctx, device, payload)
	if res.Reason == protocol.ReasonNone {
		ci.n.Add(1)
	}
	return res
}

type sessionRig struct {
	m   *MQTT
	clk *clock.Fake
	ing *countingIngester
	reg *prometheus.Registry
}

func newSessionRig(t *testing.T, mutate func(*MQTTOptions)) *sessionRig {
	t.Helper()
	r := &sessionRig{clk: clock.NewFake(time.Unix(1_800_000_000, 0)), ing: &countingIngester{}, reg: prometheus.NewRegistry()}
	opts := MQTTOptions{Listen: "127.0.0.1:0", InsecureListen: "127.0.0.1:0", Clock: r.clk, HandshakeTimeout: 5 * time.Second}
	if mutate != nil {
		mutate(&opts)
	}
	var err error
	r.m, err = NewMQTT(opts, &tls.Config{}, r.ing, nil, nil, nil, r.reg)
	require.NoError(t, err)
	require.NoError(t, r.m.Start())
	t.Cleanup(func() { _ = r.m.Close() })
	return r
}

// rawClient is one device connection speaking packets built by hand.
type rawClient struct {
	t       *testing.T
	nc      net.Conn
	r       *bufio.Reader
	version byte
}

func (r *sessionRig) dial(t *testing.T, version byte) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", r.m.InsecureAddr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	return &rawClient{t: t, nc: nc, r: bufio.NewReader(nc), version: version}
}

func connectPacket(version byte, id string, clean bool) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60, Clean: clean}}
}

func (rc *rawClient) send(pks ...packets.Packet) {
	rc.t.Helper()
	for i := range pks {
		if pks[i].ProtocolVersion == 0 {
			pks[i].ProtocolVersion = rc.version
		}
	}
	_, err := rc.nc.Write(wire(rc.t, pks...))
	require.NoError(rc.t, err)
}

// read returns the next packet from the gateway, decoded.
func (rc *rawClient) read() packets.Packet {
	rc.t.Helper()
	pk, err := rc.tryRead()
	require.NoError(rc.t, err)
	return pk
}

func (rc *rawClient) tryRead() (packets.Packet, error) {
	_ = rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	fh, body, err := readPacket(rc.r, 0)
	if err != nil {
		return packets.Packet{}, err
	}
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: rc.version}
	err = decode(&pk, body)
	return pk, err
}

// connect sends CONNECT and returns the CONNACK.
func (rc *rawClient) connect(pk packets.Packet) packets.Packet {
	rc.t.Helper()
	rc.send(pk)
	ack := rc.read()
	require.Equal(rc.t, packets.Connack, ack.FixedHeader.Type)
	return ack
}

// closed waits for the gateway to close the connection, after a DISCONNECT whose reason it
// returns (0 when none came).
func (rc *rawClient) closed() byte {
	rc.t.Helper()
	var reason byte
	for {
		pk, err := rc.tryRead()
		if err != nil {
			require.True(rc.t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed), "got %v", err)
			return reason
		}
		if pk.FixedHeader.Type == packets.Disconnect {
			reason = pk.ReasonCode
		}
	}
}

func batchPayload(t *testing.T, v float64) []byte {
	b, err := protocol.Encode(protocol.Pack{{Name: "x", Value: &v}}, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
	require.NoError(t, err)
	return b
}

func publishPacket(topic string, qos byte, id uint16, payload []byte) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, Payload: payload}
}

func TestConnectRefusals(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)

	// MQTT 3.1 (protocol level 3) gets 3.1.1's "unacceptable protocol version".
	c := r.dial(t, 4)
	old := connectPacket(3, "dev-1", true)
	old.Connect.ProtocolName = []byte("MQIsdp")
	require.EqualValues(t, protocol.MQTT3UnacceptableVersion, c.connect(old).ReasonCode)
	require.Zero(t, c.closed())

	for _, tc := range []struct {
		name    string
		version byte
		id      string
		method  string
		code    byte
	}{
		{"3.1.1, a client ID that is no device ID", 4, "Not_A_Device", "", protocol.MQTT3NotAuthorized},
		{"5, a client ID that is no device ID", 5, "", "", packets.ErrNotAuthorized.Code},
		{"5, enhanced authentication", 5, "dev-1", "SCRAM-SHA-1", packets.ErrBadAuthenticationMethod.Code},
	} {
		c := r.dial(t, tc.version)
		pk := connectPacket(tc.version, tc.id, true)
		pk.Properties.AuthenticationMethod = tc.method
		require.Equal(t, tc.code, c.connect(pk).ReasonCode, tc.name)
		require.Zero(t, c.closed(), tc.name)
	}

	// The first packet must be CONNECT.
	c = r.dial(t, 4)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	require.Zero(t, c.closed())
	require.Equal(t, 2.0, testutil.ToFloat64(r.m.met.connects.WithLabelValues("refused")), "the two that reached authentication")
}

func TestTakeover(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	first := r.dial(t, 5)
	require.Zero(t, first.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	second := r.dial(t, 5)
	require.Zero(t, second.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	require.Equal(t, packets.ErrSessionTakenOver.Code, first.closed())

	second.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	require.Equal(t, packets.Pingresp, second.read().FixedHeader.Type)
	require.Eventually(t, func() bool { return r.m.connected.Load() == 1 }, 5*time.Second, 5*time.Millisecond)
}

// TestSessionResumeAndExpiry: a device's subscription and a QoS 1 message sent while it was
// away wait for it within the session's expiry, and are gone after.
func TestSessionResumeAndExpiry(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	persistent := func() packets.Packet {
		pk := connectPacket(5, "dev-1", false)
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
		return pk
	}
	c := r.dial(t, 5)
	require.False(t, c.connect(persistent()).SessionPresent)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#", Qos: 1}}})
	require.Equal(t, []byte{1}, c.read().ReasonCodes)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	require.Zero(t, c.closed())
	require.Eventually(t, func() bool { return r.m.connected.Load() == 0 }, 5*time.Second, 5*time.Millisecond)

	ok, err := r.m.Publish("dev-1", "mw/v1/dev-1/cmd/reboot", []byte("now"), 1)
	require.NoError(t, err)
	require.True(t, ok, "the session's subscription matches while the device is away")
	r.clk.Advance(59 * time.Second)

	c = r.dial(t, 5)
	require.True(t, c.connect(persistent()).SessionPresent)
	msg := c.read()
	require.Equal(t, packets.Publish, msg.FixedHeader.Type)
	require.Equal(t, "mw/v1/dev-1/cmd/reboot", msg.TopicName)
	require.Equal(t, []byte("now"), msg.Payload)
	require.EqualValues(t, 1, msg.FixedHeader.Qos)
	require.False(t, msg.FixedHeader.Dup, "never sent before")
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: msg.PacketID})
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	require.Zero(t, c.closed())
	require.Eventually(t, func() bool { return r.m.connected.Load() == 0 }, 5*time.Second, 5*time.Millisecond)

	r.clk.Advance(61 * time.Second)
	ok, err = r.m.Publish("dev-1", "mw/v1/dev-1/cmd/reboot", []byte("again"), 1)
	require.NoError(t, err)
	require.False(t, ok, "the session expired")
	c = r.dial(t, 5)
	require.False(t, c.connect(persistent()).SessionPresent)
}

func TestKeepAliveTimeout(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	c := r.dial(t, 5)
	pk := connectPacket(5, "dev-1", true)
	pk.Connect.Keepalive = 1
	require.Zero(t, c.connect(pk).ReasonCode)
	start := time.Now()
	require.Equal(t, packets.ErrKeepAliveTimeout.Code, c.closed())
	require.GreaterOrEqual(t, time.Since(start), time.Second, "one and a half keep-alives, not one")
}

// TestQoS2StoredOnce: a QoS 2 batch sent again before its PUBREL is acknowledged again and
// not stored twice; its packet ID is free again after the PUBREL.
func TestQoS2StoredOnce(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	c := r.dial(t, 4)
	require.Zero(t, c.connect(connectPacket(4, "dev-1", true)).ReasonCode)
	pub := publishPacket(protocol.BatchTopic("dev-1"), 2, 7, batchPayload(t, 1))
	pubrel := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7}
	for range 2 {
		c.send(pub)
		ack := c.read()
		require.Equal(t, packets.Pubrec, ack.FixedHeader.Type)
		require.EqualValues(t, 7, ack.PacketID)
		pub.FixedHeader.Dup = true
	}
	require.EqualValues(t, 1, r.ing.n.Load())
	c.send(pubrel)
	require.Equal(t, packets.Pubcomp, c.read().FixedHeader.Type)
	pub.FixedHeader.Dup = false
	c.send(pub)
	require.Equal(t, packets.Pubrec, c.read().FixedHeader.Type)
	require.EqualValues(t, 2, r.ing.n.Load())
}

// TestOwnSubscriptions: a device subscribes within its own root only, and messages it
// publishes there (not batches) reach its own subscriptions.
func TestOwnSubscriptions(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	c := r.dial(t, 5)
	require.Zero(t, c.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#", Qos: 2}, {Filter: "mw/v1/dev-2/#"}, {Filter: "mw/v1/dev-1/a#"}, {Filter: "#"}}})
	require.Equal(t, []byte{1, packets.ErrNotAuthorized.Code, packets.ErrTopicFilterInvalid.Code, packets.ErrNotAuthorized.Code}, c.read().ReasonCodes)

	c.send(publishPacket("mw/v1/dev-1/cmd/light", 1, 5, []byte("on")))
	msg := c.read()
	require.Equal(t, packets.Publish, msg.FixedHeader.Type)
	require.Equal(t, "mw/v1/dev-1/cmd/light", msg.TopicName)
	require.EqualValues(t, 1, msg.FixedHeader.Qos)
	ack := c.read()
	require.Equal(t, packets.Puback, ack.FixedHeader.Type)
	require.EqualValues(t, 5, ack.PacketID)
	require.Zero(t, ack.ReasonCode)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: msg.PacketID})

	c.send(publishPacket("mw/v1/dev-1/state", 1, 6, []byte("ok")))
	require.Equal(t, packets.CodeNoMatchingSubscribers.Code, c.read().ReasonCode)
	c.send(publishPacket("mw/v1/dev-2/cmd/light", 1, 7, []byte("on")))
	require.Equal(t, packets.ErrNotAuthorized.Code, c.read().ReasonCode)
	require.Equal(t, 3.0, testutil.ToFloat64(r.m.met.acl))

	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 8,
		Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#"}, {Filter: "mw/v1/dev-1/none"}}})
	require.Equal(t, []byte{0, packets.CodeNoSubscriptionExisted.Code}, c.read().ReasonCodes)
	ok, err := r.m.Publish("dev-1", "mw/v1/dev-1/cmd/light", []byte("off"), 1)
	require.NoError(t, err)
	require.False(t, ok)
}

// TestInflightBound: QoS 1 messages to a device that does not acknowledge them stop at
// MaxInflight; one acknowledgement makes room for one more.
func TestInflightBound(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, func(o *MQTTOptions) { o.MaxInflight = 2 })
	c := r.dial(t, 5)
	require.Zero(t, c.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#", Qos: 1}}})
	require.Equal(t, []byte{1}, c.read().ReasonCodes)
	var ids []uint16
	for i := range 3 {
		_, err := r.m.Publish("dev-1", "mw/v1/dev-1/cmd/n", []byte{byte(i)}, 1)
		if i < 2 {
			require.NoError(t, err)
			ids = append(ids, c.read().PacketID)
			continue
		}
		require.ErrorIs(t, err, ErrInflightFull)
	}
	require.NotEqual(t, ids[0], ids[1])
	require.Equal(t, 1.0, testutil.ToFloat64(r.m.met.dropped))
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: ids[0]})
	require.Eventually(t, func() bool {
		_, err := r.m.Publish("dev-1", "mw/v1/dev-1/cmd/n", []byte{3}, 1)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, []byte{3}, c.read().Payload)
}

// TestProtocolErrors: an MQTT 5 device that breaks the protocol is told why and disconnected.
func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, func(o *MQTTOptions) { o.MaxPacketSize = 1024 })
	retained := publishPacket(protocol.BatchTopic("dev-1"), 1, 1, batchPayload(t, 1))
	retained.FixedHeader.Retain = true
	withSubID := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#"}}}
	withSubID.Properties.SubscriptionIdentifier = []int{1}
	aliasOnly := publishPacket("", 1, 1, batchPayload(t, 1))
	aliasOnly.Properties.TopicAlias, aliasOnly.Properties.TopicAliasFlag = 3, true
	for _, tc := range []struct {
		name string
		pk   packets.Packet
		code byte
	}{
		{"retained publish", retained, packets.ErrRetainNotSupported.Code},
		{"subscription identifier", withSubID, packets.ErrSubscriptionIdentifiersNotSupported.Code},
		{"alias never set", aliasOnly, packets.ErrProtocolViolation.Code},
		{"second CONNECT", connectPacket(5, "dev-1", true), packets.ErrProtocolViolation.Code},
	} {
		c := r.dial(t, 5)
		require.Zero(t, c.connect(connectPacket(5, "dev-1", true)).ReasonCode, tc.name)
		c.send(tc.pk)
		require.Equal(t, tc.code, c.closed(), tc.name)
	}
	// A packet over the maximum size is refused from its header: send the header alone, so
	// that no unread body turns the close into a reset.
	c := r.dial(t, 5)
	require.Zero(t, c.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	_, err := c.nc.Write([]byte{0x32, 0x80, 0x10}) // PUBLISH QoS 1, 2,048 bytes to follow
	require.NoError(t, err)
	require.Equal(t, packets.ErrPacketTooLarge.Code, c.closed())
	require.Equal(t, 5.0, testutil.ToFloat64(r.m.met.protocolErrors))
}

// TestServerEndsSessions: revoking a device and stopping the server disconnect MQTT 5 devices
// with their reasons.
func TestServerEndsSessions(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	c := r.dial(t, 5)
	require.Zero(t, c.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	require.True(t, r.m.DisconnectDevice("dev-1"))
	require.Equal(t, packets.ErrNotAuthorized.Code, c.closed())
	require.False(t, r.m.DisconnectDevice("dev-1"))

	c = r.dial(t, 5)
	require.Zero(t, c.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	require.NoError(t, r.m.Close())
	require.Equal(t, packets.ErrServerShuttingDown.Code, c.closed())
	require.Zero(t, r.m.connected.Load())
}

// TestSubscribeWithoutOptionsByte: mochi-mqtt's MQTT 5 SUBSCRIBE decoder reads past the end of
// a packet whose last filter has no options byte; the gateway answers it as a malformed
// packet instead of failing.
func TestSubscribeWithoutOptionsByte(t *testing.T) {
	t.Parallel()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 5}
	body := []byte{0, 1, 0, 0, 3, 'a', '/', 'b'} // packet ID, no properties, a filter, no options
	err := decode(&pk, body)
	require.Error(t, err)
	require.Equal(t, packets.ErrMalformedPacket.Code, asCode(err).Code)
}

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		match         bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true},
		{"#", "a/b", true},
		{"+/+", "a/b", true},
		{"a/+/c", "a/b/c", true},
		{"a/b/c", "a/b", false},
		{"a/b", "a/b/c", false},
		{"a/+/#", "a/b", true},
	} {
		require.Equal(t, tc.match, matchTopic(tc.filter, tc.topic), "%s ~ %s", tc.filter, tc.topic)
	}
}

// failingRegistry is an Authorizer whose registry cannot answer.
type failingRegistry struct{}

func (failingRegistry) Authorize(context.Context, string, *x509.Certificate) Decision {
	return Undecided(errors.New("registry: connection refused"))
}

// TestConnectRegistryDown: when the registry cannot answer, a device is told to come back
// later (0x88 "server unavailable", 3.1.1 return code 3) rather than that it is refused.
func TestConnectRegistryDown(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	r.m.authz = failingRegistry{} // before any connection
	for version, code := range map[byte]byte{4: protocol.MQTT3ServerUnavailable, 5: packets.ErrServerUnavailable.Code} {
		c := r.dial(t, version)
		require.Equal(t, code, c.connect(connectPacket(version, "dev-1", true)).ReasonCode, "MQTT level %d", version)
		require.Zero(t, c.closed())
	}
}

// TestReceiveMaximum: a device may have at most ReceiveMaximum QoS 2 publishes unreleased on a
// connection; one sent again is no new one, a PUBREL frees its place, and the next over the
// bound ends the connection — MQTT 5 with DISCONNECT 0x93, MQTT 3.1.1 without one.
func TestReceiveMaximum(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, func(o *MQTTOptions) { o.ReceiveMaximum = 2 })
	for _, tc := range []struct {
		version byte
		reason  byte // of the DISCONNECT
	}{
		{5, packets.ErrReceiveMaximum.Code},
		{4, 0},
	} {
		c := r.dial(t, tc.version)
		ack := c.connect(connectPacket(tc.version, "dev-1", true))
		require.Zero(t, ack.ReasonCode)
		if tc.version == 5 {
			require.EqualValues(t, 2, ack.Properties.ReceiveMaximum, "announced")
		}
		pub := func(id uint16, dup bool) {
			pk := publishPacket(protocol.BatchTopic("dev-1"), 2, id, batchPayload(t, float64(id)))
			pk.FixedHeader.Dup = dup
			c.send(pk)
		}
		for _, id := range []uint16{1, 2} {
			pub(id, false)
			require.Equal(t, packets.Pubrec, c.read().FixedHeader.Type, "MQTT %d, #%d", tc.version, id)
		}
		pub(2, true) // sent again: still two open
		require.Equal(t, packets.Pubrec, c.read().FixedHeader.Type)
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 1})
		require.Equal(t, packets.Pubcomp, c.read().FixedHeader.Type)
		pub(3, false) // 2 and 3 open
		require.Equal(t, packets.Pubrec, c.read().FixedHeader.Type)
		pub(4, false) // a third
		require.Equal(t, tc.reason, c.closed(), "MQTT %d", tc.version)
	}
	require.Equal(t, 2.0, testutil.ToFloat64(r.m.met.limits.WithLabelValues(limitReceiveMaximum)))
	require.Zero(t, testutil.ToFloat64(r.m.met.protocolErrors))
}

// TestKeepAliveBound: a keep-alive of none, or above MaxKeepAlive, is held to MaxKeepAlive: an
// MQTT 5 device is told in the CONNACK's Server Keep Alive, and a silent device of either
// version is disconnected after 1.5× the maximum.
func TestKeepAliveBound(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, func(o *MQTTOptions) { o.MaxKeepAlive = 1 })
	for _, tc := range []struct {
		name      string
		version   byte
		keepalive uint16
		told      bool // Server Keep Alive 1 in the CONNACK
	}{
		{"5, none", 5, 0, true},
		{"5, above the maximum", 5, 65535, true},
		{"5, within", 5, 1, false},
		{"3.1.1, none", 4, 0, false},
		{"3.1.1, above the maximum", 4, 600, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := r.dial(t, tc.version)
			pk := connectPacket(tc.version, "dev-"+strconv.Itoa(int(tc.keepalive))+"-"+strconv.Itoa(int(tc.version)), true)
			pk.Connect.Keepalive = tc.keepalive
			ack := c.connect(pk)
			require.Zero(t, ack.ReasonCode)
			require.Equal(t, tc.told, ack.Properties.ServerKeepAliveFlag)
			if tc.told {
				require.EqualValues(t, 1, ack.Properties.ServerKeepAlive)
			}
			start := time.Now()
			want := byte(0)
			if tc.version == 5 {
				want = packets.ErrKeepAliveTimeout.Code
			}
			require.Equal(t, want, c.closed())
			require.GreaterOrEqual(t, time.Since(start), 1400*time.Millisecond)
		})
	}
	t.Cleanup(func() { require.Equal(t, 4.0, testutil.ToFloat64(r.m.met.keepalive)) })
}

// TestSessionOperationsApart: a connected device's session operations take its own session's
// lock only. While the gateway's mutex is held (as a connect storm's attaches and detaches
// hold it) and another device's session is locked, the device still gets its SUBACK, its QoS 2
// exchange and its PINGRESP.
func TestSessionOperationsApart(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	c1 := r.dial(t, 5)
	require.Zero(t, c1.connect(connectPacket(5, "dev-1", true)).ReasonCode)
	c2 := r.dial(t, 5)
	require.Zero(t, c2.connect(connectPacket(5, "dev-2", true)).ReasonCode)

	r.m.mu.Lock()
	other := r.m.sessions["dev-2"]
	other.mu.Lock()
	locked := true
	unlock := func() {
		if locked {
			other.mu.Unlock()
			r.m.mu.Unlock()
			locked = false
		}
	}
	defer unlock()

	c1.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "mw/v1/dev-1/cmd/#", Qos: 1}}})
	require.Equal(t, []byte{1}, c1.read().ReasonCodes)
	c1.send(publishPacket(protocol.BatchTopic("dev-1"), 2, 9, batchPayload(t, 1)))
	require.Equal(t, packets.Pubrec, c1.read().FixedHeader.Type)
	c1.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 9})
	require.Equal(t, packets.Pubcomp, c1.read().FixedHeader.Type)
	c1.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	require.Equal(t, packets.Pingresp, c1.read().FixedHeader.Type)
	unlock()

	ok, err := r.m.Publish("dev-1", "mw/v1/dev-1/cmd/x", []byte("y"), 1)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "mw/v1/dev-1/cmd/x", c1.read().TopicName)
}
