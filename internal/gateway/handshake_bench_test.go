package gateway_test

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/ingest"
)

// BenchmarkDeviceHandshake measures a device's mutual-TLS handshake with the gateway's TLS
// settings, client and server in this process on loopback: a full handshake (certificates
// both ways, signatures, verification), and one that resumes the session of the one before
// (what the agent does when it reconnects to the same server process). It reports the bytes
// the device sends and receives, TCP/IP headers not counted.
//
//	go test ./internal/gateway -run '^$' -bench DeviceHandshake
func BenchmarkDeviceHandshake(b *testing.B) {
	r := newRig(b, ingest.DefaultOptions())
	cfg := r.serverTLS.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.MinVersion = tls.VersionTLS12
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(b, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if c.(*tls.Conn).Handshake() == nil {
					_, _ = c.Write([]byte{1}) // the client reads the session ticket with it
				}
			}()
		}
	}()
	pair, err := r.ca.DeviceKeyPair("dev-1", r.now, time.Hour)
	require.NoError(b, err)
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			client := &tls.Config{RootCAs: r.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}
			if resume {
				client.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			resumed, bytes := 0, int64(0)
			for b.Loop() {
				raw, err := net.Dial("tcp", ln.Addr().String())
				require.NoError(b, err)
				cc := &countingConn{Conn: raw}
				c := tls.Client(cc, client)
				_, err = c.Read(make([]byte, 1))
				require.NoError(b, err)
				if c.ConnectionState().DidResume {
					resumed++
				}
				_ = c.Close()
				bytes += cc.n
			}
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
			b.ReportMetric(float64(bytes)/float64(b.N), "wire-B/op")
		})
	}
}

// countingConn counts the bytes read and written through it.
type countingConn struct {
	net.Conn
	n int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n += int64(n)
	return n, err
}
