package gateway

import (
	"crypto/tls"
	"errors"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Cause is why a device's MQTT connection ended.
type Cause string

// The causes of a disconnect; each is one value of the monitor's disconnects series.
const (
	// CauseClean: the device sent DISCONNECT.
	CauseClean Cause = "clean"
	// CauseKeepaliveTimeout: nothing arrived for 1.5 × the keep-alive.
	CauseKeepaliveTimeout Cause = "keepalive_timeout"
	// CauseReset: the connection broke (reset, end of stream, failed write) without a DISCONNECT.
	CauseReset Cause = "reset"
	// CauseProtocolError: the device broke the protocol (malformed packet, violation, a limit).
	CauseProtocolError Cause = "protocol_error"
	// CauseTakeover: a new connection of the same device took the session over.
	CauseTakeover Cause = "takeover"
	// CauseKicked: the server ended the connection: the device was suspended or revoked, or an
	// MQTT 3.1.1 device's batch was refused for a retry.
	CauseKicked Cause = "kicked"
	// CauseServerShutdown: the server shut down.
	CauseServerShutdown Cause = "server_shutdown"
)

// Causes lists every Cause.
var Causes = []Cause{CauseClean, CauseKeepaliveTimeout, CauseReset, CauseProtocolError, CauseTakeover, CauseKicked, CauseServerShutdown}

// Traffic counts what crossed one connection, as MQTT packets: every packet whole (fixed
// header, remaining length, body), from the CONNECT on. The connection's goroutines add to it;
// an Observer may read it at any time.
type Traffic struct {
	ReceivedBytes, ReceivedPackets, SentBytes, SentPackets atomic.Uint64
}

func (t *Traffic) received(bytes int) {
	t.ReceivedBytes.Add(uint64(bytes))
	t.ReceivedPackets.Add(1)
}

func (t *Traffic) sent(bytes int) {
	t.SentBytes.Add(uint64(bytes))
	t.SentPackets.Add(1)
}

// Connection is one accepted MQTT connection of a device, as an Observer sees it.
type Connection struct {
	Device string
	// Remote is the client's address; TLSVersion its TLS version (tls.VersionName), "" on the
	// development listener; MQTTVersion 3 (3.1), 4 (3.1.1) or 5.
	Remote      string
	TLSVersion  string
	MQTTVersion byte
	// Start is when the CONNACK was sent.
	Start time.Time
	// Traffic counts the connection's packets, the CONNECT and CONNACK included, as long as
	// it lives.
	Traffic *Traffic
}

// Observer learns of every device connection's start and end. Both calls are made on the
// connection's goroutine and must not block.
type Observer interface {
	Connected(c *Connection)
	// Disconnected is called once the connection is closed, with why and when.
	Disconnected(c *Connection, cause Cause, end time.Time)
}

// SetObserver makes o learn of every connection; call it before Start.
func (m *MQTT) SetObserver(o Observer) { m.observer = o }

// kickCause is the cause a kick with code from another goroutine gives the connection's end.
func kickCause(code packets.Code) Cause {
	switch code.Code {
	case packets.ErrSessionTakenOver.Code:
		return CauseTakeover
	case packets.ErrServerShuttingDown.Code:
		return CauseServerShutdown
	}
	return CauseKicked
}

// endCause says why a connection ended: the cause its kick recorded when another goroutine
// closed it, or else what its read loop returned.
func endCause(kicked Cause, err error) Cause {
	if kicked != "" {
		return kicked
	}
	var code packets.Code
	switch {
	case errors.Is(err, errClientDisconnected):
		return CauseClean
	case errors.Is(err, packets.ErrKeepAliveTimeout):
		return CauseKeepaliveTimeout
	case errors.Is(err, errRetryLater):
		return CauseKicked
	case errors.As(err, &code) && code.Code >= packets.ErrUnspecifiedError.Code:
		return CauseProtocolError
	}
	return CauseReset // end of stream, reset, a failed write
}

// connection describes c, accepted at start, for an Observer.
func (c *conn) connection(start time.Time) *Connection {
	oc := &Connection{Device: c.device, Remote: c.nc.RemoteAddr().String(), MQTTVersion: c.version, Start: start, Traffic: &c.traffic}
	if tc, ok := c.nc.(*tls.Conn); ok {
		oc.TLSVersion = tls.VersionName(tc.ConnectionState().Version)
	}
	return oc
}
