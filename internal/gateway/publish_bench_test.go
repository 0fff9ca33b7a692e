package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/protocol"
)

// BenchmarkPublish is the server's cost of one QoS 1 batch of one measurement, end to end
// through the device session, the ingest pipeline and a durable group commit, with 32 devices
// publishing at once over TLS. For a CPU profile of the publish path:
//
//	go test -run '^$' -bench BenchmarkPublish -cpuprofile cpu.out ./internal/gateway/
func BenchmarkPublish(b *testing.B) {
	r := newRig(b, ingest.DefaultOptions())
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"}, r.serverTLS, r.ing, nil, nil, nil, r.reg)
	require.NoError(b, err)
	require.NoError(b, m.Start())
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.pipeline.Run(ctx) }()

	const devices = 32
	clients := make([]*paho.Client, devices)
	for i := range clients {
		id := fmt.Sprintf("bench-%d", i)
		pair, err := r.ca.DeviceKeyPair(id, r.now, time.Hour)
		require.NoError(b, err)
		conn, err := tls.Dial("tcp", m.Addr().String(), &tls.Config{RootCAs: r.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
		require.NoError(b, err)
		c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: id})
		_, err = c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 60, CleanStart: true})
		require.NoError(b, err)
		clients[i] = c
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/devices + 1
	for i, c := range clients {
		wg.Go(func() {
			topic := protocol.BatchTopic(fmt.Sprintf("bench-%d", i))
			for n := range per {
				v := float64(n)
				payload, err := protocol.Encode(protocol.Pack{{Name: "load", Value: &v}}, protocol.Encoding{Format: protocol.FormatCBOR})
				if err != nil {
					panic(err)
				}
				if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
					panic(err)
				}
			}
		})
	}
	wg.Wait()
}
