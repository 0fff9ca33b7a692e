package gateway_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/protocol"
)

// TestHandshakeTimeout: a client that opens a socket and never sends a ClientHello is
// disconnected after the hello timeout and counted, and while it hangs other devices connect
// and publish batches far larger than the per-client read buffer.
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
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", HelloTimeout: timeout},
		r.serverTLS, r.ing, nil, nil, nil, reg)
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
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-1"})
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
	require.Equal(t, 1.0, labelled(t, reg, "millwright_mqtt_limit_refusals_total", "limit", "client_hello_timeout"))
}

// labelled is the value of the counter or gauge name whose label is value.
func labelled(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
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

// stallHandshake opens a socket from src, sends a ClientHello on it and nothing more, and
// returns the socket.
func stallHandshake(t *testing.T, r *rig, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		_ = tls.Client(&stallAfterFirstWrite{Conn: c, done: done}, &tls.Config{RootCAs: r.ca.Pool(), ServerName: "localhost"}).Handshake()
	}()
	t.Cleanup(func() { close(done); _ = c.Close(); <-finished })
	return c
}

// TestHandshakeSlots: with one handshake slot, a client that sent a ClientHello and stalls holds
// it, and a device waits in the queue until the slot is free. A socket that sends nothing
// takes no slot.
func TestHandshakeSlots(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	reg := r.reg

	const timeout = 5 * time.Second
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", HandshakeTimeout: timeout, MaxConcurrentHandshakes: 1},
		r.serverTLS, r.ing, nil, nil, nil, reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	defer m.Close()

	silent, err := net.Dial("tcp", m.Addr().String())
	require.NoError(t, err)
	defer silent.Close()
	took, err := connectDevice(t, r, m.Addr().String(), "dev-1")
	require.NoError(t, err)
	require.Less(t, took, timeout, "a socket that sends nothing holds no slot")

	stalled := stallHandshake(t, r, m.Addr().String(), attackerAddr)
	require.Eventually(t, func() bool { return gauge(t, reg, "millwright_mqtt_tls_handshakes_in_progress") == 1 }, 5*time.Second, time.Millisecond)
	connected := make(chan error, 1)
	go func() {
		_, err := connectDevice(t, r, m.Addr().String(), "dev-1")
		connected <- err
	}()
	require.Eventually(t, func() bool { return gauge(t, reg, "millwright_mqtt_tls_handshakes_queued") == 1 }, 5*time.Second, time.Millisecond)
	select {
	case err := <-connected:
		t.Fatalf("connected past the stalled handshake's slot: %v", err)
	default:
	}
	require.NoError(t, stalled.Close()) // its handshake fails, and gives back the slot
	require.NoError(t, <-connected)
	require.Zero(t, gauge(t, reg, "millwright_mqtt_tls_handshakes_queued"))
	require.Equal(t, 1.0, counter(t, reg, "millwright_mqtt_tls_handshake_failures_total"))
}

// TestHandshakesPerSource: one source address gets only MaxHandshakesPerSource handshakes in
// progress; its next waits for them while a device from another address takes the free slot
// at once. The stalled one that had to wait is counted apart when it times out.
func TestHandshakesPerSource(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	const timeout = time.Second
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", HandshakeTimeout: timeout,
		MaxConcurrentHandshakes: 2, MaxHandshakesPerSource: 1}, r.serverTLS, r.ing, nil, nil, nil, r.reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	defer m.Close()

	stallHandshake(t, r, m.Addr().String(), attackerAddr)
	require.Eventually(t, func() bool { return gauge(t, r.reg, "millwright_mqtt_tls_handshakes_in_progress") == 1 }, 5*time.Second, time.Millisecond)
	stallHandshake(t, r, m.Addr().String(), attackerAddr)
	took, err := connectDevice(t, r, m.Addr().String(), "dev-1")
	require.NoError(t, err)
	require.Less(t, took, timeout, "the second slot is free for another source")
	require.Equal(t, 1.0, gauge(t, r.reg, "millwright_mqtt_tls_handshakes_in_progress"), "the attacker's second waits for its first")
	require.Eventually(t, func() bool {
		return labelled(t, r.reg, "millwright_mqtt_limit_refusals_total", "limit", "handshakes_per_source") == 1 &&
			labelled(t, r.reg, "millwright_mqtt_limit_refusals_total", "limit", "handshake_timeout") == 1
	}, 5*time.Second, 10*time.Millisecond)
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

// TestResumptionCounted: a client that keeps its TLS session resumes it on its next
// connection, is identified by the certificate in the session, and is counted.
func TestResumptionCounted(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"}, r.serverTLS, r.ing, nil, nil, nil, r.reg)
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
		c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-1"})
		_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-1", KeepAlive: 30, CleanStart: true})
		require.NoError(t, err, "connection %d", i)
		require.Equal(t, resumed, conn.ConnectionState().DidResume, "connection %d", i)
		require.NoError(t, c.Disconnect(&paho.Disconnect{}))
	}
	require.Equal(t, 1.0, counter(t, r.reg, "millwright_mqtt_tls_resumed_total"))
}
