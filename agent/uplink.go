package agent

import (
	"context"
	"net"
	"time"

	"github.com/millwright/millwright/protocol"
)

// Dialer opens network connections; *net.Dialer is one. Options.Dialer lets
// tests and simulators count or shape connections.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

var _ Dialer = (*net.Dialer)(nil)

// uplink delivers encoded batches to the server.
type uplink interface {
	// run manages the connection until ctx ends.
	run(ctx context.Context)
	// ready reports whether a send can be attempted now.
	ready() bool
	// send delivers one payload and reports the server's answer.
	send(ctx context.Context, payload []byte) sendResult
	// publishChannel delivers one device → server message of the device channel and
	// waits for the server to take it.
	publishChannel(ctx context.Context, m channelMsg) error
}

// sendResult is the outcome of one send.
type sendResult struct {
	// err is set when the batch did not get an answer (connection lost,
	// timeout): it is kept and sent again.
	err error
	// reason is the server's answer when err is nil.
	reason protocol.Reason
	// retryAfter is the server's Retry-After, if it gave one.
	retryAfter time.Duration
	// rtt is the time from sending to the answer.
	rtt time.Duration
}

// Causes of connection loss and of failed connection attempts, used as the
// suffix of the agent_reconnects_<cause>_total and
// agent_connect_failures_<cause>_total health measurements.
const (
	causeNetwork       = "network"        // read/write error, EOF
	causeKeepalive     = "keepalive"      // no PINGRESP within a keepalive
	causeAckTimeout    = "ack_timeout"    // a PUBACK did not come within uplink.ack_timeout
	causeServerBusy    = "server_busy"    // CONNACK or DISCONNECT 0x89 / 0x97
	causeServerMoved   = "server_moved"   // 0x9C use another server, 0x9D server moved
	causeServerClosing = "server_closing" // DISCONNECT 0x8B server shutting down
	causeServerOther   = "server_other"   // any other DISCONNECT or CONNACK refusal
	causeRefused       = "refused"        // CONNACK not authorized / bad credentials / banned
	causeDial          = "dial"           // DNS or TCP connect failed
	causeTLS           = "tls"            // TLS handshake failed
	causeTimeout       = "timeout"        // connect_timeout expired
	causeReconfigure   = "reconfigure"    // the remote configuration changed uplink.keepalive
)
