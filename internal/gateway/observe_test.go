package gateway

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// TestConnectFactsSendInterval: a device's send_interval is taken when it is a positive Go
// duration of at most protocol.MaxSendInterval, and ignored otherwise.
func TestConnectFactsSendInterval(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"75s": 75 * time.Second, "6h": 6 * time.Hour, "720h": protocol.MaxSendInterval,
		"720h1s": 0, "-5s": 0, "0s": 0, "soon": 0, "": 0, "9999999999h": 0,
	} {
		pk := packets.Packet{}
		pk.Properties.User = []packets.UserProperty{{Key: protocol.PropSendInterval, Val: v}}
		require.Equal(t, want, connectFacts(&pk, time.Time{}).SendInterval, "send_interval %q", v)
	}
}

// TestEndCause: why a connection ended, from what closed it.
func TestEndCause(t *testing.T) {
	for _, c := range []struct {
		kicked Cause
		err    error
		want   Cause
	}{
		{"", errClientDisconnected, CauseClean},
		{"", packets.ErrKeepAliveTimeout, CauseKeepaliveTimeout},
		{"", fmt.Errorf("%w: busy", errRetryLater), CauseKicked},
		{"", packets.ErrMalformedPacket, CauseProtocolError},
		{"", packets.ErrPacketTooLarge, CauseProtocolError},
		{"", io.EOF, CauseReset},
		{"", errors.New("write: broken pipe"), CauseReset},
		{kickCause(packets.ErrSessionTakenOver), io.EOF, CauseTakeover},
		{kickCause(packets.ErrServerShuttingDown), io.EOF, CauseServerShutdown},
		{kickCause(packets.ErrNotAuthorized), io.EOF, CauseKicked},
	} {
		require.Equal(t, c.want, endCause(c.kicked, c.err), "%q %v", c.kicked, c.err)
	}
}
