package gateway

import (
	"context"
	"crypto/x509"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millwright/millwright/protocol"
)

// What the gateway asks of the rest of the server, in its own types: whether a device may
// connect (Authorizer), to store a batch (Ingester), and to take what a device reported about
// itself at connect (ConnectReporter). The gateway holds transport and sessions only; the
// registry-backed answers are in package devicepolicy, which the server wires in.

// Verdict is an Authorizer's answer.
type Verdict uint8

// The verdicts.
const (
	// Admitted: the device may connect, or send its batch.
	Admitted Verdict = iota
	// Refused: the device may not (unknown, suspended, revoked, a certificate that is not
	// its own or was revoked). MQTT: CONNACK 0x87 "not authorized"; HTTPS: 403.
	Refused
	// Unavailable: no answer could be had (the registry failed); the device comes back later.
	// MQTT: CONNACK 0x88 "server unavailable"; HTTPS: 503 with Retry-After.
	Unavailable
)

// Decision is whether a device may connect, and why not.
type Decision struct {
	Verdict Verdict
	// Err says why the device was not admitted, for the log and the HTTPS answer's detail;
	// nil when it was.
	Err error
}

// Admit is the Decision that admits a device.
func Admit() Decision { return Decision{} }

// Refuse is the Decision that refuses a device because of err.
func Refuse(err error) Decision { return Decision{Verdict: Refused, Err: err} }

// Undecided is the Decision when no answer could be had because of err.
func Undecided(err error) Decision { return Decision{Verdict: Unavailable, Err: err} }

// Admitted reports whether the device may connect.
func (d Decision) Admitted() bool { return d.Verdict == Admitted }

// Authorizer decides whether a device may connect with a certificate (nil on the development
// listener, where no certificate is presented). It is asked at every MQTT connect and every
// HTTPS batch POST, so it answers from a cache.
type Authorizer interface {
	Authorize(ctx context.Context, device string, cert *x509.Certificate) Decision
}

// IngestResult is what became of a batch.
type IngestResult struct {
	// Reason is protocol.ReasonNone when every value was stored. ReasonTooOld and
	// ReasonTooNew mean the other values were stored; every other reason means nothing of the
	// batch was, and Reason.Retry tells whether the device should send it again.
	Reason protocol.Reason
	// Detail explains the reason for a person; the device sees it as the reason string.
	Detail string
	// Stored counts values written; Refused counts values refused. The HTTPS answer carries
	// both.
	Stored, Refused int
	// Newest is the time of the batch's newest measurement the store could take; zero when
	// it had none.
	Newest time.Time
}

// Ingester stores a batch from a device and says how it went. It returns only once the batch
// is durable, or refused: the gateway acknowledges on its answer.
type Ingester interface {
	Ingest(ctx context.Context, device string, payload []byte) IngestResult
}

// Facts is what a device reports about itself in its CONNECT user properties
// (protocol.PropHardwareModel, PropNetworkOperator, PropFirmwareVersion); empty fields were
// not reported. Seen is when the CONNECT was accepted.
type Facts struct {
	HardwareModel, NetworkOperator, FirmwareVersion string
	// SendInterval is the longest time the device waits between two sends
	// (protocol.PropSendInterval); 0 when not reported or not a valid duration.
	SendInterval time.Duration
	Seen         time.Time
}

// ConnectReporter takes what devices report about themselves when they connect.
type ConnectReporter interface {
	// Connected is called on the connection's goroutine once the CONNACK is written; it must
	// not block (a connect storm must not wait on the registry).
	Connected(device string, f Facts)
	// Close is called by MQTT.Close once every connection has ended, so that what the last
	// ones reported can be written.
	Close() error
}

// Channel takes what travels on the device channel (docs/protocol.md, "The device channel"):
// it learns when a device is ready to receive its messages, and takes the device's replies,
// reports and state.
type Channel interface {
	// Subscribed is called once a subscription of the device within its root is granted, and
	// at a connect that resumes a session, for each subscription the session holds: the
	// channel then sends what waits for the device on that filter. It is called on the
	// connection's goroutine and must not block.
	Subscribed(device, filter string)
	// Message takes a device's message on its channel; rest is the topic after the device's
	// root ("reply/<id>", "config/reported", "state"). It returns once the message is stored.
	// An error refuses the message: an MQTT 5 device gets PUBACK 0x99 "payload format invalid"
	// with the error as reason string.
	Message(ctx context.Context, device, rest string, payload []byte) error
}

// channelTopic reports whether rest (a topic after a device's root) is one a device sends on
// the device channel.
func channelTopic(rest string) bool {
	if rest == protocol.TopicConfigReported || rest == protocol.TopicState {
		return true
	}
	_, ok := protocol.ReplyID(rest)
	return ok
}

// connectFacts reads the facts from a CONNECT's user properties, copied out of the packet's
// buffer (which a reporter's queue would otherwise keep alive).
func connectFacts(pk *packets.Packet, seen time.Time) Facts {
	f := Facts{Seen: seen}
	for _, p := range pk.Properties.User {
		switch p.Key {
		case protocol.PropHardwareModel:
			f.HardwareModel = strings.Clone(p.Val)
		case protocol.PropNetworkOperator:
			f.NetworkOperator = strings.Clone(p.Val)
		case protocol.PropFirmwareVersion:
			f.FirmwareVersion = strings.Clone(p.Val)
		case protocol.PropSendInterval:
			if d, err := time.ParseDuration(p.Val); err == nil && d > 0 && d <= protocol.MaxSendInterval {
				f.SendInterval = d
			}
		}
	}
	return f
}
