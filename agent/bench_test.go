package agent

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// Framing per message on the wire, besides the payload: the MQTT 5 PUBLISH
// (fixed header with a 1–2 byte length, topic length and topic, packet ID,
// empty property length) and the TLS 1.3 record (5-byte header, 16-byte
// AEAD tag, 1-byte inner content type). TCP/IP headers come on top and are
// shared by whatever fits in one segment.
func mqttTLSFraming(device string, payload int) int {
	topic := len(protocol.BatchTopic(device))
	rest := 2 + topic + 2 + 1 + payload
	lenBytes := 1
	for n := rest; n >= 128; n >>= 7 {
		lenBytes++
	}
	return 1 + lenBytes + rest - payload + 22
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

// BenchmarkWireBytes measures bytes per measurement from the spool to the
// wire: the agent's 100-measurement batches (compact CBOR + zstd, built from
// the spool as the sender does) against the plain resolved pack and one
// JSON SenML message per measurement. Run: go test ./agent -run '^$' -bench WireBytes
func BenchmarkWireBytes(b *testing.B) {
	const device = "pump-0042"
	for _, kind := range []string{"4 metrics / 10 s", "1 metric / 10 ms"} {
		recs := benchData(kind, 100)
		clk := clock.NewFake(time.Date(2030, 1, 1, 1, 0, 0, 0, time.UTC))
		sp, err := spool.Open(b.TempDir(), spool.Options{Sync: spool.SyncNever, Clock: clk})
		require.NoError(b, err)
		sink := &spoolSink{sp: sp, clk: clk}
		require.NoError(b, sink.Write(context.Background(), recs, spool.ClassRaw))
		stored, err := sp.Peek(0, 0)
		require.NoError(b, err)
		spoolBytes := 0
		for _, r := range stored {
			spoolBytes += len(r.Payload)
		}

		b.Run("batch-cbor-zstd/"+kind, func(b *testing.B) {
			var payload int
			for i := 0; b.Loop(); i++ {
				bt, err := buildBatch(stored, uint64(i+1), clk.Now())
				if err != nil {
					b.Fatal(err)
				}
				payload = len(bt.payload)
			}
			n := float64(len(recs))
			b.ReportMetric(float64(spoolBytes)/n, "spool-B/meas")
			b.ReportMetric(float64(payload)/n, "payload-B/meas")
			b.ReportMetric(float64(payload+mqttTLSFraming(device, payload))/n, "wire-B/meas")
		})
		b.Run("plain-cbor-zstd/"+kind, func(b *testing.B) {
			// The resolved pack as protocol.Encode writes it (full name,
			// unit and absolute time on every record): the agent's
			// encoding before the compact layout.
			var payload int
			for i := 0; b.Loop(); i++ {
				res, _, err := protocol.Decode(joinPacks(stored), clk.Now(), decodeLimits)
				if err != nil {
					b.Fatal(err)
				}
				p, err := protocol.Encode(protocol.Batch{Seq: uint64(i + 1), HasSeq: true, Measurements: res.Measurements}.Pack(),
					protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
				if err != nil {
					b.Fatal(err)
				}
				payload = len(p)
			}
			n := float64(len(recs))
			b.ReportMetric(float64(payload)/n, "payload-B/meas")
			b.ReportMetric(float64(payload+mqttTLSFraming(device, payload))/n, "wire-B/meas")
		})
		b.Run("json-per-measurement/"+kind, func(b *testing.B) {
			var payload, wire int
			for b.Loop() {
				payload, wire = 0, 0
				for _, r := range recs {
					p, err := protocol.Encode(protocol.Pack{r}, protocol.Encoding{Format: protocol.FormatJSON})
					if err != nil {
						b.Fatal(err)
					}
					payload += len(p)
					wire += len(p) + mqttTLSFraming(device, len(p))
				}
			}
			n := float64(len(recs))
			b.ReportMetric(float64(payload)/n, "payload-B/meas")
			b.ReportMetric(float64(wire)/n, "wire-B/meas")
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
		if err := sink.Write(ctx, recs, spool.ClassRaw); err != nil {
			b.Fatal(err)
		}
	}
}
