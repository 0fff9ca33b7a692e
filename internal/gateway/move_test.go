package gateway

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// TestMoveDevice: an MQTT 5 device is told DISCONNECT 0x9C with the Server Reference; an MQTT
// 3.1.1 device's connection is closed; a device not connected is not moved.
func TestMoveDevice(t *testing.T) {
	t.Parallel()
	r := newSessionRig(t, nil)
	c := r.dial(t, 5)
	ack := c.connect(connectPacket(5, "dev-1", true))
	require.Zero(t, ack.ReasonCode)
	require.True(t, r.m.MoveDevice("dev-1", "dev-1.gw.example.org"))
	pk := c.read()
	require.Equal(t, packets.Disconnect, pk.FixedHeader.Type)
	require.Equal(t, protocol.MQTTUseAnotherServer, pk.ReasonCode)
	require.Equal(t, "dev-1.gw.example.org", pk.Properties.ServerReference)
	require.Zero(t, c.closed())
	require.False(t, r.m.MoveDevice("dev-1", "dev-1.gw.example.org"))

	old := r.dial(t, 4)
	require.Zero(t, old.connect(connectPacket(4, "dev-2", true)).ReasonCode)
	require.True(t, r.m.MoveDevice("dev-2", "dev-2.gw.example.org"))
	require.Zero(t, old.closed(), "MQTT 3.1.1 has no DISCONNECT from the server")
}
