package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/internal/monitor"
	"github.com/millwright/millwright/protocol"
)

// BenchmarkPublish is the server's cost of one QoS 1 batch of one measurement, end to end
// through the device session, the ingest pipeline and a durable group commit, with 32 devices
// publishing at once over TLS; with monitor=on, as the server runs it, the fleet monitor
// counts every packet, connection and batch (its writes to the TSDB, every 15 s, are measured
// by internal/monitor's BenchmarkFlush). For a CPU profile of the publish path:
//
//	go test -run '^$' -bench BenchmarkPublish -cpuprofile cpu.out ./internal/gateway/
func BenchmarkPublish(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("monitor=%s", map[bool]string{false: "off", true: "on"}[on]), func(b *testing.B) { benchmarkPublish(b, on) })
	}
}

func benchmarkPublish(b *testing.B, monitored bool) {
	r := newRig(b, ingest.DefaultOptions())
	var ing gateway.Ingester = r.ing
	var mon *monitor.Monitor
	if monitored {
		mon = monitor.New(nil, nil, monitor.DefaultOptions(), nil, nil, prometheus.NewRegistry())
		ing = mon.Ingester(ing)
	}
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"}, r.serverTLS, ing, nil, nil, nil, r.reg)
	require.NoError(b, err)
	if mon != nil {
		m.SetObserver(mon)
	}
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
		c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id})
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
