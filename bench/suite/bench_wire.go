package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
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

// wireEncoding is one way of sending measurements: an encoding and batch size, written by
// the suite's MQTT client, or the device agent itself (agent set).
type wireEncoding struct {
	name  string
	batch int
	agent bool
	// make encodes the next n measurements; seq numbers the batches of a connection from 1.
	make func(r readings, n int, seq uint64) [][]byte
}

var wireEncodings = []wireEncoding{
	{name: "one SenML JSON message per measurement", batch: 1, make: func(r readings, n int, _ uint64) [][]byte { return singles(r, n) }},
	{name: "SenML JSON, batches of 100", batch: 100, make: func(r readings, n int, _ uint64) [][]byte { return [][]byte{encode(r, n, encJSON)} }},
	{name: "SenML CBOR, batches of 100", batch: 100, make: func(r readings, n int, _ uint64) [][]byte { return [][]byte{encode(r, n, encCBOR)} }},
	{name: "SenML CBOR + zstd, batches of 100", batch: 100, make: func(r readings, n int, _ uint64) [][]byte { return [][]byte{encode(r, n, encCBORZstd)} }},
	{name: "compact CBOR + zstd (`protocol.EncodeCompact`), batches of 100", batch: 100, make: func(r readings, n int, seq uint64) [][]byte { return [][]byte{compact(r, n, seq)} }},
	{name: "the same, sent by the device agent (one TLS record per packet, topic alias)", batch: 100, agent: true},
}

// wireDatasets are the readings the wire benchmark sends.
var wireDatasets = []struct {
	name        string
	newReadings func(int, time.Time, time.Duration) readings
}{
	{"random walks", randomWalk},
	{"plant mix", plantMix},
}

type wireResult struct {
	payload, up, down int64
}

// sendWire publishes measurements from one device in one encoding with the suite's client
// (paho.golang on a *tls.Conn) and counts the bytes.
func sendWire(addr string, cfg *tls.Config, id string, enc wireEncoding, r readings, measurements int) (wireResult, error) {
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
	seq := uint64(1)
	if _, err := publish(ctx, cl, id, enc.make(r, enc.batch, seq)[0]); err != nil {
		return wireResult{}, err
	}
	in0, out0 := cc.in.Load(), cc.out.Load()
	var res wireResult
	for sent := 0; sent < measurements; sent += enc.batch {
		seq++
		for _, p := range enc.make(r, enc.batch, seq) {
			res.payload += int64(len(p))
			refused, err := publish(ctx, cl, id, p)
			if err != nil {
				return res, err
			}
			if refused {
				return res, fmt.Errorf("%s: a batch was refused", enc.name)
			}
		}
	}
	res.up, res.down = cc.out.Load()-out0, cc.in.Load()-in0
	return res, nil
}

func benchWire(e *env) (string, error) {
	const prefix = "wire-"
	measurements := 10000
	if e.opts.quick {
		measurements = 1000
	}
	// One device per dataset and encoding, so that no two runs write the same series.
	devices := len(wireDatasets) * len(wireEncodings)
	certs, err := issue(e.ca, prefix, devices)
	if err != nil {
		return "", err
	}
	tf := tlsFor(e.ca, certs)
	data, err := e.newServerData("wire", prefix, certs)
	if err != nil {
		return "", err
	}
	start := time.Now().Add(-48 * time.Hour)
	run := func(server, addr string) ([]wireResult, error) {
		res := make([]wireResult, devices)
		for d, ds := range wireDatasets {
			for i, enc := range wireEncodings {
				k := d*len(wireEncodings) + i
				r := ds.newReadings(0, start, 10*time.Second)
				var err error
				if enc.agent {
					res[k], err = sendWireAgent(filepath.Join(e.work, "wire-agent-"+server, deviceID(prefix, k)), addr, tf(k), r, measurements)
				} else {
					res[k], err = sendWire(addr, tf(k), deviceID(prefix, k), enc, r, measurements)
				}
				if err != nil {
					return nil, fmt.Errorf("%s, %s, %s: %w", server, ds.name, enc.name, err)
				}
			}
		}
		return res, nil
	}
	mw, err := newMillwright(e.bin, data)
	if err != nil {
		return "", err
	}
	if err := mw.start(); err != nil {
		return "", err
	}
	mwRes, err := run("millwright", mw.mqttAddr)
	if err != nil {
		return "", err
	}
	stopProc(mw.cmd, 20*time.Second)
	mq, err := startMosquitto(e.work, e.ca)
	if err != nil {
		return "", err
	}
	mqRes, err := run("mosquitto", mq.addr)
	if err != nil {
		return "", err
	}
	stopProc(mq.cmd, 10*time.Second)

	var b strings.Builder
	fmt.Fprintf(&b, `### Wire: bytes per measurement

One device per dataset and encoding sends %s measurements (one sample of each metric every
10 s) at QoS 1 over MQTT 5 and mutual TLS 1.3. The datasets are the storage section's: the
random walks the other sections send (ten metrics at 0.01 resolution, its worst case) and the
plant mix (sixteen signals, most of them held between changes, its target data). Payload is the
MQTT payload; "on the socket" counts every byte written to the TCP socket below TLS after the
connection's first batch (MQTT headers and topic, TLS record overhead), and "acks" the bytes the
server sent back. Peer: Mosquitto, the same bytes over its own TLS listener.

Every row but the agent's is written by the suite's client, paho.golang on a `+"`tls.Conn`"+`, which
writes each PUBLISH in three TLS records (fixed header; topic and packet ID; payload: 3 × 22 B
of TLS overhead) and names the topic (`+"`mw/v1/wire-00000/batch`"+`, 22 B) in each. The compact
rows are what the device agent sends (`+"`protocol.EncodeCompact`"+`: compact SenML CBOR, zstd).
The agent row is the agent library itself (`+"`agent.New`"+` in this process with a counting dialer,
fed 100 measurements and flushed per batch, health reports off): it hands each MQTT packet to
TLS in one record and names the topic by its alias after the connection's first batch, so its
framing is lower than the suite client's for the same payload. Its sequence numbers are a new
device's (2–%d, 1–2 bytes of CBOR; a device past 65,536 batches writes 5), as are those of the
compact row above it.

`, num(float64(measurements), 0), 1+measurements/100)
	t := newTable("data", "encoding", ">payload B/measurement", ">on the socket B/measurement (Millwright)", ">acks B/measurement (Millwright)", ">on the socket B/measurement (Mosquitto)", ">acks B/measurement (Mosquitto)", ">ratio to one JSON message per measurement (socket)")
	per := func(v int64) float64 { return float64(v) / float64(measurements) }
	for d, ds := range wireDatasets {
		base := d * len(wireEncodings)
		for i, enc := range wireEncodings {
			k := base + i
			t.add(ds.name, enc.name, num(per(mwRes[k].payload), 2), num(per(mwRes[k].up), 2), num(per(mwRes[k].down), 2),
				num(per(mqRes[k].up), 2), num(per(mqRes[k].down), 2), ratio(per(mwRes[k].up), per(mwRes[base].up)))
		}
	}
	b.WriteString(t.String())
	ag, cl := len(wireEncodings)-1, len(wireEncodings)-2
	plant := len(wireEncodings)
	batches := float64(measurements / 100)
	framing := func(r wireResult) string { return num(float64(r.up-r.payload)/batches, 1) }
	fmt.Fprintf(&b, `
- Framing per 100-measurement batch (socket bytes less payload), plant mix: the agent %s B, the
  suite's client %s B with the same payload on Millwright (%s B and %s B on Mosquitto).
- The agent sends the plant mix in %s B per measurement on the socket and the random walks in
  %s B (payload %s B and %s B); one SenML JSON message per measurement takes %s B and %s B.
`, framing(mwRes[plant+ag]), framing(mwRes[plant+cl]), framing(mqRes[plant+ag]), framing(mqRes[plant+cl]),
		num(per(mwRes[plant+ag].up), 2), num(per(mwRes[ag].up), 2), num(per(mwRes[plant+ag].payload), 2), num(per(mwRes[ag].payload), 2),
		num(per(mwRes[plant].up), 2), num(per(mwRes[0].up), 2))
	return b.String(), nil
}
