package agent

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

func TestWholePackets(t *testing.T) {
	big := append([]byte{0x32, 0x80, 0x01}, make([]byte, 128)...) // Remaining Length 128 in 2 bytes
	for _, tc := range []struct {
		name string
		in   []byte
		want int
	}{
		{"empty", nil, 0},
		{"fixed header byte only", []byte{0xC0}, 0},
		{"PINGREQ", []byte{0xC0, 0x00}, 2},
		{"two PINGREQs", []byte{0xC0, 0x00, 0xC0, 0x00}, 4},
		{"PINGREQ and part of the next", []byte{0xC0, 0x00, 0x32, 0x05, 1, 2}, 2},
		{"length continues", []byte{0x32, 0x80}, 0},
		{"two-byte length, body short", big[:100], 0},
		{"two-byte length, whole", big, len(big)},
		{"length longer than 4 bytes", []byte{0x32, 0x80, 0x80, 0x80, 0x80, 0x01}, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, wholePackets(tc.in))
		})
	}
}

// writeCounter records the writes that reach the connection under
// packetConn.
type writeCounter struct {
	net.Conn
	writes [][]byte
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, append([]byte(nil), p...))
	return w.Conn.Write(p)
}

// TestPacketConnOneWritePerPacket writes PUBLISH packets the way paho does
// (header, variable header, properties and payload as separate writes) and
// checks that each reaches the connection below as one write, unchanged.
func TestPacketConnOneWritePerPacket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	var got bytes.Buffer
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(&got, b)
		close(done)
	}()
	wc := &writeCounter{Conn: a}
	conn := packets.NewThreadSafeConn(&packetConn{Conn: wc})
	var want bytes.Buffer
	for i, size := range []int{0, 10, 200, 20_000} {
		p := &paho.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: "mw/v1/pump-0042/batch", Payload: bytes.Repeat([]byte{byte(i)}, size),
			Properties: &paho.PublishProperties{TopicAlias: paho.Uint16(1)}}
		_, err := p.Packet().WriteTo(conn)
		require.NoError(t, err)
		_, err = p.Packet().WriteTo(&want)
		require.NoError(t, err)
		require.Len(t, wc.writes, i+1, "one write per packet")
	}
	_, err := packets.NewControlPacket(packets.PINGREQ).WriteTo(conn)
	require.NoError(t, err)
	require.Len(t, wc.writes, 5)
	_, _ = packets.NewControlPacket(packets.PINGREQ).WriteTo(&want)
	require.NoError(t, a.Close())
	<-done
	require.Equal(t, want.Bytes(), got.Bytes())
}
