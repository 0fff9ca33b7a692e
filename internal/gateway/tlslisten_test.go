package gateway_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/protocol"
)

// TestHandshakeTimeout: a client that opens a socket and never completes a TLS handshake is
// disconnected after the handshake timeout and counted, and while it hangs other devices
// connect and publish batches far larger than the per-client read buffer.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	now, ca, reg, p := r.now, r.ca, r.reg, r.pipeline
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runDone := make(chan struct{})
	go func() { _ = p.Run(ctx); close(runDone) }()
	defer func() { cancel(); <-runDone }()

	const timeout = 300 * time.Millisecond
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", HandshakeTimeout: timeout},
		r.serverTLS, p, nil, nil, nil, reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	defer m.Close()

	silent, err := net.Dial("tcp", m.Addr().String())
	require.NoError(t, err)
	defer silent.Close()
	opened := time.Now()

	pair, err := ca.DeviceKeyPair("dev-1", now, time.Hour)
	require.NoError(t, err)
	conn, err := tls.Dial("tcp", m.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "dev-1"})
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-1", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	pack := make(protocol.Pack, 200)
	for i := range pack {
		v := float64(i)
		pack[i] = protocol.Record{Name: "load", Value: &v, Time: float64(i)}
	}
	pack[0].BaseTime = float64(now.Add(-time.Minute).Unix())
	payload, err := protocol.Encode(pack, protocol.Encoding{Format: protocol.FormatCBOR})
	require.NoError(t, err)
	require.Greater(t, len(payload), 1000)
	resp, err := c.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic("dev-1"), QoS: 1, Payload: payload})
	require.NoError(t, err)
	require.Equal(t, byte(0), resp.ReasonCode)

	// The server closes the silent socket once the timeout passes, not before.
	require.NoError(t, silent.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = silent.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	// The server's deadline counts from its accept, a moment before Dial returned here.
	require.GreaterOrEqual(t, time.Since(opened), timeout-50*time.Millisecond)
	require.Eventually(t, func() bool { return counter(t, reg, "millwright_mqtt_tls_handshake_failures_total") == 1 },
		5*time.Second, 10*time.Millisecond)
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return -1
}

// TestHandshakeSlots: with one handshake slot, a device waits while a silent client holds the
// slot, and completes its handshake as soon as the silent one times out — within its own
// deadline, which counts from accept.
func TestHandshakeSlots(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	now, ca, reg, p := r.now, r.ca, r.reg, r.pipeline

	const timeout = time.Second
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", HandshakeTimeout: timeout, MaxConcurrentHandshakes: 1},
		r.serverTLS, p, nil, nil, nil, reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	defer m.Close()

	silent, err := net.Dial("tcp", m.Addr().String())
	require.NoError(t, err)
	defer silent.Close()
	opened := time.Now()
	time.Sleep(400 * time.Millisecond) // the silent client holds the only slot

	pair, err := ca.DeviceKeyPair("dev-1", now, time.Hour)
	require.NoError(t, err)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", m.Addr().String(),
		&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
	require.NoError(t, err, "the device gets the slot once the silent client's deadline passes")
	defer conn.Close()
	// Without the slot limit it would have connected at once, 400 ms in; the silent client's
	// deadline counts from the server's accept, a moment before Dial returned here.
	require.GreaterOrEqual(t, time.Since(opened), timeout-50*time.Millisecond, "not before the slot was free")
	require.Equal(t, 1.0, counter(t, reg, "millwright_mqtt_tls_handshake_failures_total"))
}

// TestResumptionCounted: a client that keeps its TLS session resumes it on its next
// connection, is identified by the certificate in the session, and is counted.
func TestResumptionCounted(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"}, r.serverTLS, r.pipeline, nil, nil, nil, r.reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	defer m.Close()
	pair, err := r.ca.DeviceKeyPair("dev-1", r.now, time.Hour)
	require.NoError(t, err)
	cfg := &tls.Config{RootCAs: r.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost",
		ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, resumed := range []bool{false, true} {
		conn, err := tls.Dial("tcp", m.Addr().String(), cfg)
		require.NoError(t, err)
		c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "dev-1"})
		_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-1", KeepAlive: 30, CleanStart: true})
		require.NoError(t, err, "connection %d", i)
		require.Equal(t, resumed, conn.ConnectionState().DidResume, "connection %d", i)
		require.NoError(t, c.Disconnect(&paho.Disconnect{}))
	}
	require.Equal(t, 1.0, counter(t, r.reg, "millwright_mqtt_tls_resumed_total"))
}
