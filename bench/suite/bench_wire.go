package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// countingConn counts the bytes that cross the socket, below TLS.
type countingConn struct {
	net.Conn
	in, out atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.out.Add(int64(n))
	return n, err
}

type wireEncoding struct {
	name  string
	batch int
	make  func(g *generator, n int) [][]byte
}

var wireEncodings = []wireEncoding{
	{"one SenML JSON message per measurement", 1, func(g *generator, n int) [][]byte { return g.singles(n) }},
	{"SenML JSON, batches of 100", 100, func(g *generator, n int) [][]byte { return [][]byte{g.next(n, encJSON)} }},
	{"SenML CBOR, batches of 100", 100, func(g *generator, n int) [][]byte { return [][]byte{g.next(n, encCBOR)} }},
	{"SenML CBOR + zstd, batches of 100", 100, func(g *generator, n int) [][]byte { return [][]byte{g.next(n, encCBORZstd)} }},
}

type wireResult struct {
	payload, up, down int64
}

// sendWire publishes measurements from one device in one encoding and counts the bytes.
func sendWire(addr string, cfg *tls.Config, id string, enc wireEncoding, measurements int, start time.Time) (wireResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		return wireResult{}, err
	}
	cc := &countingConn{Conn: raw}
	tc := tls.Client(cc, cfg)
	cl := paho.NewClient(paho.ClientConfig{Conn: tc, ClientID: id})
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 120, CleanStart: true}); err != nil {
		_ = raw.Close()
		return wireResult{}, err
	}
	defer func() { _ = cl.Disconnect(&paho.Disconnect{}) }()
	// A first publish absorbs the TLS session tickets the server sends after the handshake.
	g := newGenerator(0, start, 10*time.Second)
	if _, err := publish(ctx, cl, id, enc.make(g, enc.batch)[0]); err != nil {
		return wireResult{}, err
	}
	in0, out0 := cc.in.Load(), cc.out.Load()
	var r wireResult
	for sent := 0; sent < measurements; sent += enc.batch {
		for _, p := range enc.make(g, enc.batch) {
			r.payload += int64(len(p))
			refused, err := publish(ctx, cl, id, p)
			if err != nil {
				return r, err
			}
			if refused {
				return r, fmt.Errorf("%s: a batch was refused", enc.name)
			}
		}
	}
	r.up, r.down = cc.out.Load()-out0, cc.in.Load()-in0
	return r, nil
}

func benchWire(e *env) (string, error) {
	const prefix = "wire-"
	measurements := 10000
	if e.opts.quick {
		measurements = 1000
	}
	certs, err := issue(e.ca, prefix, len(wireEncodings))
	if err != nil {
		return "", err
	}
	tf := tlsFor(e.ca, certs)
	data, err := e.newServerData("wire", prefix, certs)
	if err != nil {
		return "", err
	}
	mw, err := newMillwright(e.bin, data)
	if err != nil {
		return "", err
	}
	if err := mw.start(); err != nil {
		return "", err
	}
	start := time.Now().Add(-48 * time.Hour)
	mwRes := make([]wireResult, len(wireEncodings))
	for i, enc := range wireEncodings {
		if mwRes[i], err = sendWire(mw.mqttAddr, tf(i), deviceID(prefix, i), enc, measurements, start); err != nil {
			return "", fmt.Errorf("millwright, %s: %w", enc.name, err)
		}
	}
	stopProc(mw.cmd, 20*time.Second)
	mq, err := startMosquitto(e.work, e.ca)
	if err != nil {
		return "", err
	}
	mqRes := make([]wireResult, len(wireEncodings))
	for i, enc := range wireEncodings {
		if mqRes[i], err = sendWire(mq.addr, tf(i), deviceID(prefix, i), enc, measurements, start); err != nil {
			return "", fmt.Errorf("mosquitto, %s: %w", enc.name, err)
		}
	}
	stopProc(mq.cmd, 10*time.Second)

	var b strings.Builder
	fmt.Fprintf(&b, `### Wire: bytes per measurement

One device sends %s measurements of the suite's machine readings (ten metrics, one sample
every 10 s each) at QoS 1 over MQTT 5 and mutual TLS 1.3, in four encodings. Payload is the
MQTT payload; "on the socket" counts every byte written to the TCP socket below TLS after the
connection is up (MQTT headers and topic, TLS record overhead), and "acks" the bytes the server
sent back. Peer: Mosquitto, the same bytes over its own TLS listener.

`, num(float64(measurements), 0))
	t := newTable("encoding", ">payload B/measurement", ">on the socket B/measurement (Millwright)", ">acks B/measurement (Millwright)", ">on the socket B/measurement (Mosquitto)", ">acks B/measurement (Mosquitto)", ">ratio to one JSON message per measurement (socket)")
	per := func(v int64) float64 { return float64(v) / float64(measurements) }
	for i, enc := range wireEncodings {
		t.add(enc.name, num(per(mwRes[i].payload), 2), num(per(mwRes[i].up), 2), num(per(mwRes[i].down), 2),
			num(per(mqRes[i].up), 2), num(per(mqRes[i].down), 2), ratio(per(mwRes[i].up), per(mwRes[0].up)))
	}
	b.WriteString(t.String())
	return b.String(), nil
}
