package gateway

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millwright/millwright/protocol"
)

// The CONNECT check: what a decoded CONNECT leads to, decided without I/O from the packet, what
// the TLS listener learned of the connection before it, the listener and the options. The
// connection then asks the Authorizer where the check says so, attaches the session and writes
// the CONNACK the decision leads to (conn.handleConnect).

// listenerKind is the listener a connection came in on.
type listenerKind uint8

const (
	// tlsListener: the device is its verified client certificate, authorized after the
	// handshake and before its CONNECT is read.
	tlsListener listenerKind = iota
	// plainListener: the development listener, where the client ID alone names the device.
	plainListener
)

func (k listenerKind) String() string {
	if k == plainListener {
		return "plain"
	}
	return "tls"
}

// certIdentity is what the TLS listener learned of a connection before its CONNECT: the device
// its verified certificate names, and whether that device may connect.
type certIdentity struct {
	device string
	cert   *x509.Certificate
	err    error    // no verified client certificate
	auth   Decision // for the certificate's device: invalid ID, or the Authorizer's answer
}

// connectInput is what the CONNECT check decides on.
type connectInput struct {
	pk        *packets.Packet // the CONNECT, as far as it decoded
	decodeErr error           // why it did not decode, or nil
	listener  listenerKind
	cert      certIdentity // on the TLS listener
}

// connectDecision is what a CONNECT leads to: a refusal with its reason code, or the session
// the device gets and what its CONNACK says of it.
type connectDecision struct {
	version     byte   // the protocol level answered in: 4 (MQTT 3.1.1, and 3.1's refusal) or 5
	problemInfo bool   // the device accepts reason strings
	maxOut      uint32 // the device's Maximum Packet Size; 0 means none

	// A refusal: code is the CONNACK's reason, err says why. denied marks the refusals of
	// the device's identity or authorization, which are counted and logged.
	refused bool
	denied  bool
	code    packets.Code
	err     error

	// An acceptance.
	clientID       string        // copied out of the packet's buffer
	device         string        // the device the connection speaks for
	authorize      bool          // on the plain listener: the Authorizer is still to be asked
	keepalive      uint16        // seconds, within MQTTOptions.MaxKeepAlive
	clamped        bool          // the keep-alive was held to the maximum
	clean          bool          // Clean Start
	expiry         time.Duration // how long the session outlives the connection
	expiryAnnounce bool          // the device asked for more than MaxSessionExpiry: the CONNACK says so
	quota          int           // the device's Receive Maximum: its messages in flight at once
}

// refuse makes d a refusal with code.
func (d connectDecision) refuse(code packets.Code, err error) connectDecision {
	d.refused, d.code, d.err = true, code, err
	return d
}

// deny makes d a refusal of the device's identity or authorization.
func (d connectDecision) deny(code packets.Code, err error) connectDecision {
	d = d.refuse(code, err)
	d.denied = true
	return d
}

// authorized applies the Authorizer's answer on the plain listener.
func (d connectDecision) authorized(auth Decision) connectDecision {
	d.authorize = false
	if d.refused || auth.Admitted() {
		return d
	}
	return d.deny(authCode(auth), auth.reason())
}

// authCode is the CONNACK reason for a device not admitted: 0x87 "not authorized" when it was
// refused, 0x88 "server unavailable" when no answer could be had (the device comes back later).
func authCode(d Decision) packets.Code {
	if d.Verdict == Unavailable {
		return packets.ErrServerUnavailable
	}
	return packets.ErrNotAuthorized
}

// reason is why d did not admit the device.
func (d Decision) reason() error {
	if d.Err != nil {
		return d.Err
	}
	switch d.Verdict {
	case Admitted:
		return nil
	case Unavailable:
		return errors.New("no authorization could be had")
	}
	return errors.New("not authorized")
}

// checkConnect decides what a CONNECT leads to (MQTT 5.0 §3.1.4, 3.1.1 §3.1.4), in this order:
// the protocol level, the packet's form, enhanced authentication, the device's identity (the
// client ID; on the TLS listener the certificate's device, which must equal it, and its
// authorization), then the session: keep-alive, expiry and Receive Maximum within the options'
// bounds. On the plain listener the decision says whether the Authorizer is still to be asked.
func checkConnect(in connectInput, opts *MQTTOptions) connectDecision {
	pk := in.pk
	d := connectDecision{version: pk.ProtocolVersion, problemInfo: true}
	if d.version != 4 && d.version != 5 {
		// MQTT 3.1 and unknown levels: 3.1.1's answer (§3.1.2.2), which 3.1 clients read too.
		d.version = 4
		return d.refuse(packets.ErrUnsupportedProtocolVersion, fmt.Errorf("protocol level %d: %w", pk.ProtocolVersion, packets.ErrUnsupportedProtocolVersion))
	}
	if in.decodeErr != nil {
		return d.refuse(asCode(in.decodeErr), in.decodeErr)
	}
	props := &pk.Properties
	if d.version == 5 {
		d.problemInfo = !props.RequestProblemInfoFlag || props.RequestProblemInfo != 0
		d.maxOut = props.MaximumPacketSize
	}
	if props.AuthenticationMethod != "" {
		return d.refuse(packets.ErrBadAuthenticationMethod, fmt.Errorf("authentication method %q: %w", props.AuthenticationMethod, packets.ErrBadAuthenticationMethod))
	}
	d.clientID = strings.Clone(pk.Connect.ClientIdentifier)
	device, err := connectIdentity(d.clientID, in)
	if err != nil { // the client ID, or the certificate, names no device it may be
		return d.deny(packets.ErrNotAuthorized, err)
	}
	if in.listener == tlsListener && !in.cert.auth.Admitted() {
		return d.deny(authCode(in.cert.auth), in.cert.auth.reason()) // decided after the handshake
	}
	d.device = device
	d.authorize = in.listener == plainListener

	// A keep-alive of none, or above the maximum, is held to the maximum (MQTT 5 devices are
	// told in the CONNACK; docs/protocol.md says why MQTT 3.1.1 ones are not refused).
	d.keepalive = pk.Connect.Keepalive
	if d.keepalive == 0 || d.keepalive > opts.MaxKeepAlive {
		d.keepalive, d.clamped = opts.MaxKeepAlive, true
	}
	d.clean = pk.Connect.Clean
	max := time.Duration(opts.MaxSessionExpiry) * time.Second
	switch {
	case d.version == 5 && props.SessionExpiryIntervalFlag:
		d.expiry = min(time.Duration(props.SessionExpiryInterval)*time.Second, max)
		d.expiryAnnounce = props.SessionExpiryInterval > opts.MaxSessionExpiry
	case d.version == 4 && !pk.Connect.Clean:
		d.expiry = max // 3.1.1 persistent sessions have no interval of their own
	}
	d.quota = math.MaxUint16
	if d.version == 5 && props.ReceiveMaximum > 0 {
		d.quota = int(props.ReceiveMaximum)
	}
	return d
}

// connectIdentity is the device a CONNECT speaks for: on the TLS listener the verified
// certificate's common name, which must equal the client ID; on the development listener the
// client ID alone.
func connectIdentity(clientID string, in connectInput) (string, error) {
	if err := protocol.ValidateDeviceID(clientID); err != nil {
		return "", fmt.Errorf("client ID: %w", err)
	}
	if in.listener == plainListener {
		return clientID, nil
	}
	if in.cert.err != nil {
		return "", in.cert.err
	}
	if in.cert.device != clientID {
		return "", fmt.Errorf("client ID %q differs from the certificate's device ID %q", clientID, in.cert.device)
	}
	return clientID, nil
}

// connack is the CONNACK accepting the session d decided. MQTT 5 devices are told the server's
// limits: topic aliases, Receive Maximum, the maximum packet size, what is unavailable, and
// the session expiry and keep-alive when they were held to the maximum.
func connack(d connectDecision, present bool, opts *MQTTOptions) packets.Packet {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, SessionPresent: present}
	if d.version != 5 {
		return ack
	}
	ack.Properties = packets.Properties{
		TopicAliasMaximum: topicAliasMaximum,
		ReceiveMaximum:    opts.ReceiveMaximum,
		MaximumPacketSize: opts.MaxPacketSize,
		// No retained messages, subscription identifiers or shared subscriptions: a
		// device's topic root has one client, the device.
		RetainAvailable: 0, RetainAvailableFlag: true,
		SubIDAvailable: 0, SubIDAvailableFlag: true,
		SharedSubAvailable: 0, SharedSubAvailableFlag: true,
	}
	if d.expiryAnnounce {
		ack.Properties.SessionExpiryInterval, ack.Properties.SessionExpiryIntervalFlag = opts.MaxSessionExpiry, true
	}
	if d.clamped {
		ack.Properties.ServerKeepAlive, ack.Properties.ServerKeepAliveFlag = d.keepalive, true // §3.2.2.3.14
	}
	return ack
}

// refusal is the CONNACK refusing a connection with code: its MQTT 5 reason code and reason
// string, or the nearest MQTT 3.1.1 return code.
func refusal(version byte, code packets.Code) packets.Packet {
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code.Code}
	if version == 5 {
		ack.Properties.ReasonString = code.Reason
	} else {
		ack.ReasonCode = connackV3Code(code)
	}
	return ack
}
