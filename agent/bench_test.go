package agent

import (
	"context"
	"crypto/tls"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

// wireMeter counts what a PUBLISH costs on the TCP socket: the packet
// encoded by paho and written the agent's way (packetConn, one TLS record
// per packet) over a real TLS 1.3 connection on loopback, counting the
// bytes that reach the socket below TLS: MQTT fixed and variable header,
// topic or topic alias, payload, and the TLS record's header, content type
// and AEAD tag. TCP/IP headers come on top (one segment per batch up to the
// path MTU).
type wireMeter struct {
	sock *socketCounter
	conn net.Conn // what paho writes to
	id   uint16
}

type socketCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *socketCounter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func newWireMeter(b *testing.B) *wireMeter {
	b.Helper()
	ca, err := pki.NewCA("wire meter", time.Now())
	require.NoError(b, err)
	key, err := pki.GenerateKey()
	require.NoError(b, err)
	_, certPEM, err := ca.ServerCert([]string{"localhost"}, nil, key.Public(), time.Now(), time.Hour)
	require.NoError(b, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(b, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(b, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	require.NoError(b, err)
	b.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			_ = c.Close()
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(b, err)
	sock := &socketCounter{Conn: raw}
	tc := tls.Client(sock, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	require.NoError(b, tc.Handshake())
	require.Equal(b, uint16(tls.VersionTLS13), tc.ConnectionState().Version)
	go func() { _, _ = io.Copy(io.Discard, tc) }() // session tickets
	b.Cleanup(func() { _ = tc.Close() })
	return &wireMeter{sock: sock, conn: packets.NewThreadSafeConn(&packetConn{Conn: tc})}
}

// publish returns the socket bytes of one QoS 1 PUBLISH of payload: with
// the topic alone (a server without topic aliases), the topic and the alias
// (a connection's first batch), or the alias alone (every later batch).
func (m *wireMeter) publish(b *testing.B, topic string, alias bool, payload []byte) int {
	m.id++
	p := &paho.Publish{QoS: 1, PacketID: m.id, Topic: topic, Payload: payload}
	if alias {
		p.Properties = &paho.PublishProperties{TopicAlias: paho.Uint16(batchTopicAlias)}
	}
	before := m.sock.n.Load()
	if _, err := p.Packet().WriteTo(m.conn); err != nil {
		b.Fatal(err)
	}
	return int(m.sock.n.Load() - before)
}

// wire reports the socket bytes per measurement of sending payloads (one
// PUBLISH each) carrying n measurements: wire-B/meas with the alias alone,
// the steady state of a connection; wire-first-B/meas with topic and alias,
// a connection's first batch; wire-noalias-B/meas with the full topic, a
// server without topic aliases.
func (m *wireMeter) report(b *testing.B, device string, payloads [][]byte, n int) {
	topic := protocol.BatchTopic(device)
	var steady, first, noAlias int
	for _, p := range payloads {
		steady += m.publish(b, "", true, p)
		first += m.publish(b, topic, true, p)
		noAlias += m.publish(b, topic, false, p)
	}
	b.ReportMetric(float64(steady)/float64(n), "wire-B/meas")
	b.ReportMetric(float64(first)/float64(n), "wire-first-B/meas")
	b.ReportMetric(float64(noAlias)/float64(n), "wire-noalias-B/meas")
}

// benchData is realistic sensor data, time-stamped as the agent's sources
// stamp it: in milliseconds, on a schedule started at an arbitrary
// millisecond, each sample 0–2 ms late (scheduling delay). "4 metrics /
// 10 s" is an environmental or machine sensor: temperature (0.1 °C),
// humidity (0.1 %RH), pressure (1 Pa), all drifting slowly, and a parts
// counter, sampled together every 10 s. "1 metric / 10 ms" is a vibration
// sensor read at 100 Hz (0.01 mm/s).
func benchData(kind string, n int) []protocol.Record {
	r := rand.New(rand.NewPCG(1, 1))
	start := time.Date(2030, 1, 1, 0, 0, 3, 217e6, time.UTC).UnixMilli()
	at := func(i int, step int64) float64 {
		return float64(start+int64(i)*step+r.Int64N(3)) / 1000
	}
	var out []protocol.Record
	temp, hum, pres, cnt := 21.3, 45.0, 101325.0, 1000.0
	for i := 0; len(out) < n; i++ {
		switch kind {
		case "4 metrics / 10 s":
			t := at(i, 10_000)
			temp += math.Round((r.Float64()-0.5)*2) / 10
			hum += math.Round((r.Float64()-0.5)*4) / 10
			pres += math.Round((r.Float64() - 0.5) * 6)
			cnt += float64(r.IntN(5))
			for _, m := range []struct {
				n, u string
				v    float64
			}{{"boiler_temp", "Cel", math.Round(temp*10) / 10}, {"room_humidity", "%RH", math.Round(hum*10) / 10}, {"line_pressure", "Pa", pres}, {"parts_made", "", cnt}} {
				v := m.v
				out = append(out, protocol.Record{Name: m.n, Unit: m.u, Time: t, Value: &v})
			}
		default: // "1 metric / 10 ms"
			t := at(i, 10)
			temp += math.Round((r.Float64()-0.5)*2) / 100
			v := math.Round(temp*100) / 100
			out = append(out, protocol.Record{Name: "vibration_mm_s", Unit: "mm/s", Time: t, Value: &v})
		}
	}
	return out[:n]
}

// benchSeq is the batch sequence number in the measured batches. Its CBOR
// length changes the payload: 1 byte below 24, 3 below 65,536, 5 below
// 2^32. A device sending a batch a minute passes 65,536 after 45 days, so
// a 5-byte number is what it sends for most of its life.
const benchSeq = 1 << 20

// BenchmarkWireBytes measures bytes per measurement from the spool to the
// wire: the agent's 100-measurement batches (compact CBOR + zstd, built from
// the spool as the sender does) against the plain resolved pack and one
// JSON SenML message per measurement. The wire figures are measured on a
// TLS 1.3 socket (wireMeter). Run: go test ./agent -run '^$' -bench WireBytes
func BenchmarkWireBytes(b *testing.B) {
	const device = "pump-0042"
	wm := newWireMeter(b)
	for _, kind := range []string{"4 metrics / 10 s", "1 metric / 10 ms"} {
		recs := benchData(kind, 100)
		clk := clock.NewFake(time.Date(2030, 1, 1, 1, 0, 0, 0, time.UTC))
		sp, err := spool.Open(b.TempDir(), spool.Options{Sync: spool.SyncNever, Clock: clk})
		require.NoError(b, err)
		sink := &spoolSink{sp: sp, clk: clk}
		require.NoError(b, sink.Write(context.Background(), recs, source.ClassRaw))
		stored, err := sp.Peek(0, 0)
		require.NoError(b, err)
		spoolBytes := 0
		for _, r := range stored {
			spoolBytes += len(r.Payload)
		}

		b.Run("batch-cbor-zstd/"+kind, func(b *testing.B) {
			var payload []byte
			for b.Loop() {
				bt, err := buildBatch(stored, benchSeq, clk.Now())
				if err != nil {
					b.Fatal(err)
				}
				payload = bt.payload
			}
			n := float64(len(recs))
			b.ReportMetric(float64(spoolBytes)/n, "spool-B/meas")
			b.ReportMetric(float64(len(payload))/n, "payload-B/meas")
			wm.report(b, device, [][]byte{payload}, len(recs))
		})
		b.Run("plain-cbor-zstd/"+kind, func(b *testing.B) {
			// The resolved pack as protocol.Encode writes it (full name,
			// unit and absolute time on every record): the agent's
			// encoding before the compact layout.
			var payload []byte
			for b.Loop() {
				res, _, err := protocol.Decode(joinPacks(stored), clk.Now(), decodeLimits)
				if err != nil {
					b.Fatal(err)
				}
				p, err := protocol.Encode(protocol.Batch{Seq: benchSeq, HasSeq: true, Measurements: res.Measurements}.Pack(),
					protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
				if err != nil {
					b.Fatal(err)
				}
				payload = p
			}
			n := float64(len(recs))
			b.ReportMetric(float64(len(payload))/n, "payload-B/meas")
			wm.report(b, device, [][]byte{payload}, len(recs))
		})
		b.Run("json-per-measurement/"+kind, func(b *testing.B) {
			var payloads [][]byte
			for b.Loop() {
				payloads = payloads[:0]
				for _, r := range recs {
					p, err := protocol.Encode(protocol.Pack{r}, protocol.Encoding{Format: protocol.FormatJSON})
					if err != nil {
						b.Fatal(err)
					}
					payloads = append(payloads, p)
				}
			}
			payload := 0
			for _, p := range payloads {
				payload += len(p)
			}
			n := float64(len(recs))
			b.ReportMetric(float64(payload)/n, "payload-B/meas")
			wm.report(b, device, payloads, len(recs))
		})
		require.NoError(b, sp.Close())
	}
}

// BenchmarkSinkWrite is the cost of storing one measurement (validate,
// encode, append to a SyncBatch spool).
func BenchmarkSinkWrite(b *testing.B) {
	sp, err := spool.Open(b.TempDir(), spool.Options{})
	require.NoError(b, err)
	defer sp.Close()
	sink := &spoolSink{sp: sp, clk: clock.Real()}
	recs := benchData("1 metric / 10 ms", 1)
	ctx := context.Background()
	for b.Loop() {
		if err := sink.Write(ctx, recs, source.ClassRaw); err != nil {
			b.Fatal(err)
		}
	}
}
