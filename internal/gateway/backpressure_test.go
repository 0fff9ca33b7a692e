package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
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

// TestBackPressure fills the ingest queue while the committer is held back: the batch that
// does not fit is refused at once with PUBACK 0x97 "quota exceeded" instead of waiting in an
// unbounded queue, and the queued one is stored and acknowledged once the committer runs.
func TestBackPressure(t *testing.T) {
	opts := ingest.DefaultOptions()
	opts.MaxPendingBatches = 1
	r := newRig(t, opts)
	now, ca, reg, p := r.now, r.ca, r.reg, r.pipeline

	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"},
		r.serverTLS, r.ing, nil, nil, nil, reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	defer m.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	connect := func(id string) *paho.Client {
		pair, err := ca.DeviceKeyPair(id, now, time.Hour)
		require.NoError(t, err)
		conn, err := tls.Dial("tcp", m.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
		require.NoError(t, err)
		c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id})
		_, err = c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
		require.NoError(t, err)
		return c
	}
	batch := func(v float64) []byte {
		b, err := protocol.Encode(protocol.Pack{{Name: "load", Value: &v}}, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
		require.NoError(t, err)
		return b
	}

	first := connect("dev-1")
	firstDone := make(chan error, 1)
	go func() {
		_, err := first.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic("dev-1"), QoS: 1, Payload: batch(1)})
		firstDone <- err
	}()
	// The first batch now occupies the only queue slot: no committer is running.
	require.Eventually(t, func() bool { return len(firstDone) == 0 && queued(t, reg) == 1 }, 5*time.Second, 5*time.Millisecond)

	second := connect("dev-2")
	resp, err := second.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic("dev-2"), QoS: 1, Payload: batch(2)})
	require.Error(t, err)
	require.Equal(t, byte(0x97), resp.ReasonCode)
	require.Equal(t, protocol.ReasonBusy, protocol.ReasonFromMQTTCode(resp.ReasonCode))
	require.Contains(t, resp.Properties.ReasonString, "busy")

	runCtx, stop := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { _ = p.Run(runCtx); close(runDone) }()
	defer func() { stop(); <-runDone }()
	select {
	case err := <-firstDone:
		require.NoError(t, err, "the queued batch is stored and acknowledged")
	case <-ctx.Done():
		t.Fatal("queued batch was never acknowledged")
	}
	// The refused device retries and is stored now.
	_, err = second.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic("dev-2"), QoS: 1, Payload: batch(2)})
	require.NoError(t, err)
	_ = first.Disconnect(&paho.Disconnect{})
	_ = second.Disconnect(&paho.Disconnect{})
}

// queued reads the pipeline's pending-batches gauge.
func queued(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == "millwright_ingest_pending_batches" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	panic(fmt.Sprintf("no millwright_ingest_pending_batches among %d metric families", len(mfs)))
}
