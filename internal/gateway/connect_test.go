package gateway

import (
	"crypto/x509"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// TestCheckConnect: what a CONNECT leads to, from the packet, what the TLS listener learned of
// the certificate, the listener and the options — the refusals in the order they are checked,
// and the session an accepted device gets.
func TestCheckConnect(t *testing.T) {
	opts := DefaultMQTTOptions()
	opts.MaxKeepAlive, opts.MaxSessionExpiry = 600, 3600
	cert := &x509.Certificate{}
	tlsAs := func(device string, auth Decision) certIdentity {
		return certIdentity{device: device, cert: cert, auth: auth}
	}
	connect := func(version byte, id string, mutate ...func(*packets.Packet)) *packets.Packet {
		pk := connectPacket(version, id, true)
		for _, m := range mutate {
			m(&pk)
		}
		return &pk
	}
	props := func(f func(*packets.Properties)) func(*packets.Packet) {
		return func(pk *packets.Packet) { f(&pk.Properties) }
	}
	refusedErr := errors.New("certificate revoked")
	downErr := errors.New("registry: connection refused")

	for _, tc := range []struct {
		name      string
		pk        *packets.Packet
		decodeErr error
		listener  listenerKind
		cert      certIdentity

		code        byte // the refusal's reason; 0 for an acceptance
		denied      bool // a refusal of identity or authorization
		version     byte
		problemInfo bool
		want        connectDecision // the acceptance's session (compared when code is 0)
	}{
		{name: "MQTT 3.1 answered as 3.1.1", pk: connect(3, "dev-1"), listener: plainListener,
			code: packets.ErrUnsupportedProtocolVersion.Code, version: 4, problemInfo: true},
		{name: "an unknown level", pk: connect(6, "dev-1"), listener: plainListener,
			code: packets.ErrUnsupportedProtocolVersion.Code, version: 4, problemInfo: true},
		{name: "decoding failed", pk: connect(5, "dev-1"), decodeErr: packets.ErrProtocolViolationFlagNoUsername, listener: plainListener,
			code: packets.ErrProtocolViolationFlagNoUsername.Code, version: 5, problemInfo: true},
		{name: "decoding failed without a code", pk: connect(4, "dev-1"), decodeErr: errors.New("short"), listener: plainListener,
			code: packets.ErrMalformedPacket.Code, version: 4, problemInfo: true},
		{name: "enhanced authentication", listener: plainListener,
			pk:   connect(5, "dev-1", props(func(p *packets.Properties) { p.AuthenticationMethod = "SCRAM-SHA-1" })),
			code: packets.ErrBadAuthenticationMethod.Code, version: 5, problemInfo: true},
		{name: "no reason strings wanted", listener: plainListener,
			pk: connect(5, "dev-1", props(func(p *packets.Properties) {
				p.AuthenticationMethod, p.RequestProblemInfo, p.RequestProblemInfoFlag = "x", 0, true
			})),
			code: packets.ErrBadAuthenticationMethod.Code, version: 5, problemInfo: false},
		{name: "a client ID that is no device ID", pk: connect(4, "Not_A_Device"), listener: plainListener,
			code: packets.ErrNotAuthorized.Code, denied: true, version: 4, problemInfo: true},
		{name: "TLS: no certificate", pk: connect(5, "dev-1"), listener: tlsListener,
			cert: certIdentity{err: errors.New("no client certificate"), auth: Refuse(errors.New("no client certificate"))},
			code: packets.ErrNotAuthorized.Code, denied: true, version: 5, problemInfo: true},
		{name: "TLS: another device's certificate", pk: connect(5, "dev-1"), listener: tlsListener, cert: tlsAs("dev-2", Admit()),
			code: packets.ErrNotAuthorized.Code, denied: true, version: 5, problemInfo: true},
		{name: "TLS: refused after the handshake", pk: connect(5, "dev-1"), listener: tlsListener, cert: tlsAs("dev-1", Refuse(refusedErr)),
			code: packets.ErrNotAuthorized.Code, denied: true, version: 5, problemInfo: true},
		{name: "TLS: the registry could not answer", pk: connect(4, "dev-1"), listener: tlsListener, cert: tlsAs("dev-1", Undecided(downErr)),
			code: packets.ErrServerUnavailable.Code, denied: true, version: 4, problemInfo: true},

		{name: "TLS: admitted", pk: connect(5, "dev-1"), listener: tlsListener, cert: tlsAs("dev-1", Admit()),
			version: 5, problemInfo: true,
			want: connectDecision{device: "dev-1", keepalive: 60, clean: true, quota: math.MaxUint16}},
		{name: "plain: the Authorizer is still to be asked", pk: connect(4, "dev-1"), listener: plainListener,
			version: 4, problemInfo: true,
			want: connectDecision{device: "dev-1", authorize: true, keepalive: 60, clean: true, quota: math.MaxUint16}},
		{name: "keep-alive of none held to the maximum", listener: tlsListener, cert: tlsAs("dev-1", Admit()),
			pk:      connect(5, "dev-1", func(pk *packets.Packet) { pk.Connect.Keepalive = 0 }),
			version: 5, problemInfo: true,
			want: connectDecision{device: "dev-1", keepalive: 600, clamped: true, clean: true, quota: math.MaxUint16}},
		{name: "keep-alive above the maximum held to it", listener: tlsListener, cert: tlsAs("dev-1", Admit()),
			pk:      connect(4, "dev-1", func(pk *packets.Packet) { pk.Connect.Keepalive = 601 }),
			version: 4, problemInfo: true,
			want: connectDecision{device: "dev-1", keepalive: 600, clamped: true, clean: true, quota: math.MaxUint16}},
		{name: "MQTT 5 session expiry and Receive Maximum", listener: tlsListener, cert: tlsAs("dev-1", Admit()),
			pk: connect(5, "dev-1", func(pk *packets.Packet) {
				pk.Connect.Clean = false
				pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 60, true
				pk.Properties.ReceiveMaximum = 8
				pk.Properties.MaximumPacketSize = 4096
			}),
			version: 5, problemInfo: true,
			want: connectDecision{device: "dev-1", keepalive: 60, expiry: time.Minute, quota: 8, maxOut: 4096}},
		{name: "MQTT 5 session expiry above the maximum", listener: tlsListener, cert: tlsAs("dev-1", Admit()),
			pk: connect(5, "dev-1", props(func(p *packets.Properties) {
				p.SessionExpiryInterval, p.SessionExpiryIntervalFlag = math.MaxUint32, true
			})),
			version: 5, problemInfo: true,
			want: connectDecision{device: "dev-1", keepalive: 60, clean: true, expiry: time.Hour, expiryAnnounce: true, quota: math.MaxUint16}},
		{name: "MQTT 3.1.1 persistent session: the maximum expiry", listener: tlsListener, cert: tlsAs("dev-1", Admit()),
			pk:      connect(4, "dev-1", func(pk *packets.Packet) { pk.Connect.Clean = false }),
			version: 4, problemInfo: true,
			want: connectDecision{device: "dev-1", keepalive: 60, expiry: time.Hour, quota: math.MaxUint16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := checkConnect(connectInput{pk: tc.pk, decodeErr: tc.decodeErr, listener: tc.listener, cert: tc.cert}, &opts)
			require.Equal(t, tc.version, d.version)
			require.Equal(t, tc.problemInfo, d.problemInfo)
			if tc.code != 0 {
				require.True(t, d.refused)
				require.Equal(t, tc.code, d.code.Code)
				require.Equal(t, tc.denied, d.denied)
				require.Error(t, d.err)
				return
			}
			require.False(t, d.refused, "refused: %v", d.err)
			want := tc.want
			want.version, want.problemInfo, want.clientID = tc.version, tc.problemInfo, "dev-1"
			require.Equal(t, want, d)
		})
	}
}

// TestConnectAuthorized: on the development listener the Authorizer's answer turns an accepted
// CONNECT into a refusal with the reason of its verdict; it never turns a refusal into an
// acceptance.
func TestConnectAuthorized(t *testing.T) {
	opts := DefaultMQTTOptions()
	accepted := checkConnect(connectInput{pk: ptr(connectPacket(5, "dev-1", true)), listener: plainListener}, &opts)
	require.True(t, accepted.authorize)
	refused := checkConnect(connectInput{pk: ptr(connectPacket(5, "Bad_ID", true)), listener: plainListener}, &opts)
	require.True(t, refused.refused)
	for _, tc := range []struct {
		name string
		in   connectDecision
		auth Decision
		code byte // 0: accepted
	}{
		{"admitted", accepted, Admit(), 0},
		{"refused", accepted, Refuse(errors.New("suspended")), packets.ErrNotAuthorized.Code},
		{"refused without a reason", accepted, Decision{Verdict: Refused}, packets.ErrNotAuthorized.Code},
		{"no answer", accepted, Undecided(errors.New("registry down")), packets.ErrServerUnavailable.Code},
		{"already refused", refused, Admit(), packets.ErrNotAuthorized.Code},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.in.authorized(tc.auth)
			require.False(t, d.authorize)
			if tc.code == 0 {
				require.False(t, d.refused)
				return
			}
			require.True(t, d.refused)
			require.True(t, d.denied)
			require.Equal(t, tc.code, d.code.Code)
			require.Error(t, d.err)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestConnack: the CONNACK an accepted CONNECT leads to — MQTT 5 devices are told the server's
// limits and what it does not support, and the keep-alive and expiry they were held to; MQTT
// 3.1.1 devices get no properties — and the refusals in both versions.
func TestConnack(t *testing.T) {
	opts := DefaultMQTTOptions()
	opts.ReceiveMaximum, opts.MaxPacketSize, opts.MaxSessionExpiry = 32, 1<<16, 600
	limits := packets.Properties{
		TopicAliasMaximum: topicAliasMaximum, ReceiveMaximum: 32, MaximumPacketSize: 1 << 16,
		RetainAvailableFlag: true, SubIDAvailableFlag: true, SharedSubAvailableFlag: true,
	}
	with := func(f func(*packets.Properties)) packets.Properties {
		p := limits
		f(&p)
		return p
	}
	for _, tc := range []struct {
		name    string
		d       connectDecision
		present bool
		want    packets.Properties
	}{
		{"MQTT 5", connectDecision{version: 5, keepalive: 60}, false, limits},
		{"MQTT 5, session present", connectDecision{version: 5, keepalive: 60}, true, limits},
		{"MQTT 5, keep-alive held", connectDecision{version: 5, keepalive: 1200, clamped: true}, false,
			with(func(p *packets.Properties) { p.ServerKeepAlive, p.ServerKeepAliveFlag = 1200, true })},
		{"MQTT 5, expiry held", connectDecision{version: 5, keepalive: 60, expiryAnnounce: true}, false,
			with(func(p *packets.Properties) { p.SessionExpiryInterval, p.SessionExpiryIntervalFlag = 600, true })},
		{"MQTT 3.1.1", connectDecision{version: 4, keepalive: 1200, clamped: true, expiryAnnounce: true}, true, packets.Properties{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ack := connack(tc.d, tc.present, &opts)
			require.Equal(t, packets.Connack, ack.FixedHeader.Type)
			require.Zero(t, ack.ReasonCode)
			require.Equal(t, tc.present, ack.SessionPresent)
			require.Equal(t, tc.want, ack.Properties)
		})
	}

	for _, tc := range []struct {
		version byte
		code    packets.Code
		want    byte
		reason  string
	}{
		{5, packets.ErrNotAuthorized, protocol.MQTTNotAuthorized, packets.ErrNotAuthorized.Reason},
		{5, packets.ErrServerUnavailable, protocol.MQTTServerUnavailable, packets.ErrServerUnavailable.Reason},
		{4, packets.ErrNotAuthorized, protocol.MQTT3NotAuthorized, ""},
		{4, packets.ErrServerUnavailable, protocol.MQTT3ServerUnavailable, ""},
		{4, packets.ErrServerShuttingDown, protocol.MQTT3ServerUnavailable, ""},
		{4, packets.ErrUnsupportedProtocolVersion, protocol.MQTT3UnacceptableVersion, ""},
		{4, packets.ErrBadAuthenticationMethod, protocol.MQTT3NotAuthorized, ""},
	} {
		ack := refusal(tc.version, tc.code)
		require.Equal(t, packets.Connack, ack.FixedHeader.Type)
		require.Equal(t, tc.want, ack.ReasonCode, "MQTT %d, %s", tc.version, tc.code.Reason)
		require.Equal(t, tc.reason, ack.Properties.ReasonString)
	}
}

// TestReasonCodesAreTheContract: the reason codes the gateway sends through the codec are
// those the protocol package names for devices.
func TestReasonCodesAreTheContract(t *testing.T) {
	for _, tc := range []struct {
		sent     packets.Code
		contract byte
	}{
		{packets.CodeSuccess, protocol.MQTTSuccess},
		{packets.CodeNoMatchingSubscribers, protocol.MQTTNoMatchingSubscribers},
		{packets.ErrMalformedPacket, protocol.MQTTMalformedPacket},
		{packets.ErrProtocolViolation, protocol.MQTTProtocolError},
		{packets.ErrNotAuthorized, protocol.MQTTNotAuthorized},
		{packets.ErrServerUnavailable, protocol.MQTTServerUnavailable},
		{packets.ErrServerShuttingDown, protocol.MQTTServerShuttingDown},
		{packets.ErrBadAuthenticationMethod, protocol.MQTTBadAuthenticationMethod},
		{packets.ErrKeepAliveTimeout, protocol.MQTTKeepAliveTimeout},
		{packets.ErrSessionTakenOver, protocol.MQTTSessionTakenOver},
		{packets.ErrReceiveMaximum, protocol.MQTTReceiveMaximumExceeded},
		{packets.ErrTopicAliasInvalid, protocol.MQTTTopicAliasInvalid},
		{packets.ErrPacketTooLarge, protocol.MQTTPacketTooLarge},
		{packets.ErrServerBusy, protocol.MQTTServerBusy},
		{packets.ErrQuotaExceeded, protocol.MQTTQuotaExceeded},
		{packets.ErrPayloadFormatInvalid, protocol.MQTTPayloadFormatInvalid},
		{packets.ErrImplementationSpecificError, protocol.MQTTImplementationSpecificError},
		{packets.ErrUnspecifiedError, protocol.MQTTUnspecifiedError},
	} {
		require.Equal(t, tc.contract, tc.sent.Code, tc.sent.Reason)
	}
}
