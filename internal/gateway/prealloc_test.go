package gateway_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
)

// revokedAuthorizer refuses every device, as the registry does a revoked certificate, and
// counts the questions.
type revokedAuthorizer struct{ calls atomic.Int64 }

func (a *revokedAuthorizer) Authorize(context.Context, string, *x509.Certificate) gateway.Decision {
	a.calls.Add(1)
	return gateway.Refuse(errors.New("certificate revoked"))
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// maxHeapGrowth polls the live heap for a second and returns its largest growth over base:
// what the server may have allocated for the bytes declared, had it done so.
func maxHeapGrowth(base uint64) uint64 {
	var peak uint64
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		if h := heapInUse(); h > base && h-base > peak {
			peak = h - base
		}
	}
	return peak
}

// declare1MiB is a fixed header of packet type t declaring a body of 1 MiB less its header,
// within the default maximum packet size; no body follows.
func declare1MiB(t byte) []byte {
	n := 1<<20 - 5
	b := []byte{t << 4}
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func connectBytes(t *testing.T, id string) []byte {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60, Clean: true}}
	var buf bytes.Buffer
	require.NoError(t, pk.ConnectEncode(&buf))
	return buf.Bytes()
}

// TestDeclaredLengthNotAllocated: 500 connections that each declare a 1 MiB packet and send
// nothing more keep the heap far below 500 MiB — a revoked device's CONNECT over TLS, and a
// connected device's PUBLISH. The server allocates a packet's buffer as its bytes arrive.
func TestDeclaredLengthNotAllocated(t *testing.T) {
	const conns = 500
	r := newRig(t, ingest.DefaultOptions())
	authz := &revokedAuthorizer{}
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0", InsecureListen: "127.0.0.1:0"},
		r.serverTLS, r.ing, nil, nil, nil, r.reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	t.Cleanup(func() { _ = m.Close() })
	revoked, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"}, r.serverTLS, r.ing, authz, nil, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, revoked.Start())
	t.Cleanup(func() { _ = revoked.Close() })
	pair, err := r.ca.DeviceKeyPair("dev-1", r.now, time.Hour)
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		open func(i int) (net.Conn, error) // a connection with the 1 MiB header sent
	}{
		{"CONNECT from a revoked certificate over TLS", func(int) (net.Conn, error) {
			c, err := tls.Dial("tcp", revoked.Addr().String(), &tls.Config{RootCAs: r.ca.Pool(),
				Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
			if err != nil {
				return nil, err
			}
			_, err = c.Write(declare1MiB(packets.Connect))
			return c, err
		}},
		{"PUBLISH from a connected device", func(i int) (net.Conn, error) {
			c, err := net.Dial("tcp", m.InsecureAddr().String())
			if err != nil {
				return nil, err
			}
			if _, err := c.Write(connectBytes(t, fmt.Sprintf("dev-%d", i))); err != nil {
				return c, err
			}
			ack := make([]byte, 2)
			if _, err := io.ReadFull(c, ack); err != nil || ack[0] != packets.Connack<<4 {
				return c, fmt.Errorf("CONNACK %x: %v", ack, err)
			}
			_, err = c.Write(declare1MiB(packets.Publish))
			return c, err
		}},
	} {
		base := heapInUse()
		held := make([]net.Conn, conns)
		errs := make([]error, conns)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := range held {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				held[i], errs[i] = tc.open(i)
			})
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...), tc.name)
		growth := maxHeapGrowth(base)
		t.Logf("%s: %d connections declaring 1 MiB each: heap grew by %.1f MiB at most (%.1f KiB per connection, client side included)",
			tc.name, conns, float64(growth)/(1<<20), float64(growth)/1024/conns)
		require.Less(t, growth, uint64(64<<20), tc.name)
		for _, c := range held {
			_ = c.Close()
		}
	}
	require.Positive(t, authz.calls.Load())
}

// TestRevokedBeforeConnect: the registry is asked about a device's certificate right after
// the TLS handshake, before a CONNECT arrives; a CONNECT that comes is answered with the
// refusal (0x87), as before.
func TestRevokedBeforeConnect(t *testing.T) {
	t.Parallel()
	r := newRig(t, ingest.DefaultOptions())
	authz := &revokedAuthorizer{}
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"}, r.serverTLS, r.ing, authz, nil, nil, r.reg)
	require.NoError(t, err)
	require.NoError(t, m.Start())
	t.Cleanup(func() { _ = m.Close() })
	pair, err := r.ca.DeviceKeyPair("dev-1", r.now, time.Hour)
	require.NoError(t, err)
	cfg := &tls.Config{RootCAs: r.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}

	silent, err := tls.Dial("tcp", m.Addr().String(), cfg)
	require.NoError(t, err)
	defer silent.Close()
	require.Eventually(t, func() bool { return authz.calls.Load() == 1 }, 5*time.Second, time.Millisecond,
		"asked with no CONNECT sent")

	conn, err := tls.Dial("tcp", m.Addr().String(), cfg)
	require.NoError(t, err)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-1"}).
		Connect(ctx, &paho.Connect{ClientID: "dev-1", KeepAlive: 30, CleanStart: true})
	require.Error(t, err)
	require.NotNil(t, ack)
	require.Equal(t, packets.ErrNotAuthorized.Code, ack.ReasonCode)
	require.EqualValues(t, 2, authz.calls.Load(), "once per connection")
}
