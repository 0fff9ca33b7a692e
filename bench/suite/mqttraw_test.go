package main

import (
	"bufio"
	"bytes"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"
)

func TestConnectPacket(t *testing.T) {
	// The broker's own decoder reads it as an MQTT 5 CONNECT.
	b := connectPacket("dev-00042", 600)
	var fh packets.FixedHeader
	require.NoError(t, fh.Decode(b[0]))
	require.Equal(t, packets.Connect, fh.Type)
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: 5}
	pk.FixedHeader.Remaining = int(b[1])
	require.NoError(t, pk.ConnectDecode(b[2:]))
	require.Equal(t, "dev-00042", pk.Connect.ClientIdentifier)
	require.Equal(t, uint16(600), pk.Connect.Keepalive)
	require.True(t, pk.Connect.Clean)
	require.Equal(t, byte(5), pk.ProtocolVersion)

	long := connectPacket(strings.Repeat("x", 200), 0)
	require.Equal(t, []byte{0x10, 0xd5, 0x01}, long[:3], "remaining length 213 (11 + 2 + 200) as a two-byte varint")
	require.Equal(t, []byte{0x80, 0x01}, varint(128))
	require.Equal(t, []byte{0x7f}, varint(127))
}

func TestReadConnack(t *testing.T) {
	ok := []byte{0x20, 0x03, 0x00, 0x00, 0x00}
	require.NoError(t, readConnack(bufio.NewReader(bytes.NewReader(ok))))
	refused := []byte{0x20, 0x03, 0x00, 0x87, 0x00}
	require.ErrorContains(t, readConnack(bufio.NewReader(bytes.NewReader(refused))), "reason 0x87")
	require.ErrorContains(t, readConnack(bufio.NewReader(bytes.NewReader([]byte{0x30, 0x00}))), "packet type 3")
	require.ErrorContains(t, readConnack(bufio.NewReader(bytes.NewReader([]byte{0x20, 0x02, 0x00}))), "EOF")
}
