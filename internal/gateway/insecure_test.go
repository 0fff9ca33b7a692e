package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
)

// plainConnect sends a CONNECT for id on the development listener and returns the CONNACK's
// reason code (MQTT 5) or return code (MQTT 3.1.1).
func plainConnect(t *testing.T, addr, id string, version byte) byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer c.Close()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: version,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60, Clean: true}}
	var buf bytes.Buffer
	require.NoError(t, pk.ConnectEncode(&buf))
	_, err = c.Write(buf.Bytes())
	require.NoError(t, err)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	r := bufio.NewReader(c)
	var fh packets.FixedHeader
	b, err := r.ReadByte()
	require.NoError(t, err)
	require.NoError(t, fh.Decode(b))
	require.Equal(t, packets.Connack, fh.Type)
	n, _, err := packets.DecodeLength(r)
	require.NoError(t, err)
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	require.NoError(t, err)
	return body[1] // after the acknowledge flags
}

// TestPlainListenerCannotTakeOverTLSSession: on the development listener, a client ID naming a
// device whose session is on the TLS listener — connected, or kept for its expiry — is refused
// with "not authorized" and counted; the device's TLS connection and session go on
// undisturbed. A device with no such session still connects there.
func TestPlainListenerCannotTakeOverTLSSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", InsecureListen: "127.0.0.1:0"},
		r.serverTLS, r.ing, nil, nil, nil, r.reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	t.Cleanup(func() { _ = m.Close() })
	plain := m.InsecureAddr().String()

	pair, err := r.ca.DeviceKeyPair("dev-1", r.now, time.Hour)
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", m.Addr().String(), &tls.Config{RootCAs: r.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dropped := make(chan *paho.Disconnect, 1)
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-1",
		OnServerDisconnect: func(d *paho.Disconnect) { dropped <- d }})
	expiry := uint32(600)
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-1", KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	require.NoError(t, err)
	_, err = c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "mw/v1/dev-1/cmd/#", QoS: 1}}})
	require.NoError(t, err)

	require.Equal(t, packets.ErrNotAuthorized.Code, plainConnect(t, plain, "dev-1", 5), "while connected over TLS")
	require.EqualValues(t, 5, plainConnect(t, plain, "dev-1", 4), "MQTT 3.1.1: not authorized")
	resp, err := c.Publish(ctx, &paho.Publish{Topic: "mw/v1/dev-1/cmd/x", QoS: 1, Payload: []byte("still here")})
	require.NoError(t, err, "the TLS connection is undisturbed")
	require.Zero(t, resp.ReasonCode, "its subscription is still there")
	select {
	case d := <-dropped:
		t.Fatalf("the TLS connection was disconnected: 0x%02x", d.ReasonCode)
	default:
	}

	require.NoError(t, c.Disconnect(&paho.Disconnect{}))
	require.Eventually(t, func() bool { return gauge(t, r.reg, "millwright_mqtt_connected_clients") == 0 }, 5*time.Second, time.Millisecond)
	require.Equal(t, 1.0, gauge(t, r.reg, "millwright_mqtt_sessions"), "kept for its expiry")
	require.Equal(t, packets.ErrNotAuthorized.Code, plainConnect(t, plain, "dev-1", 5), "while its session is kept")
	ok, err := m.Publish("dev-1", "mw/v1/dev-1/cmd/y", []byte("kept"), 1)
	require.NoError(t, err)
	require.True(t, ok, "the kept session still has its subscription")

	require.Zero(t, plainConnect(t, plain, "dev-2", 5), "a device with no TLS session connects")
	require.Equal(t, 3.0, counter(t, r.reg, "millwright_mqtt_insecure_refused_total"))
}
