package protocol

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// benchRecords is the batch size the server is sized for.
const benchRecords = 100

// sensorPack returns a realistic batch: 25 sampling instants 10 s apart
// (base time plus small offsets), four metrics of slowly drifting values
// at the resolution of common sensors, mw_seq on the first record.
func sensorPack(n int) Pack {
	rng := rand.New(rand.NewPCG(1, 2))
	temp, hum, pres, cur := 21.0, 45.0, 101325.0, 12.5
	drift := func(v, step float64) float64 { return v + step*float64(rng.IntN(3)-1) }
	round := func(v float64, digits float64) float64 { return math.Round(v*digits) / digits }
	seq := uint64(4711)
	p := make(Pack, 0, n)
	for i := 0; len(p) < n; i++ {
		t := float64(i * 10)
		temp = drift(temp, 0.0625) // DS18B20: 1/16 °C steps
		hum = round(drift(hum, 0.1), 10)
		pres = drift(pres, 1) // whole pascals
		cur = round(drift(cur, 0.01), 100)
		for _, r := range []Record{
			{Name: "temp", Unit: "Cel", Time: t, Value: ptr(temp)},
			{Name: "humidity", Unit: "%RH", Time: t, Value: ptr(hum)},
			{Name: "pressure", Unit: "Pa", Time: t, Value: ptr(pres)},
			{Name: "current", Unit: "A", Time: t, Value: ptr(cur)},
		} {
			if len(p) < n {
				p = append(p, r)
			}
		}
	}
	p[0].Seq = &seq
	p[0].BaseName = "plant-a:press-7:"
	p[0].BaseTime = 1735689600
	return p
}

func reportPerRecord(b *testing.B, payloadLen int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRecords), "ns/record")
	b.ReportMetric(float64(payloadLen)/benchRecords, "B/measurement")
}

func BenchmarkDecode(b *testing.B) {
	p := sensorPack(benchRecords)
	for _, enc := range allEncodings {
		payload := mustEncode(b, p, enc)
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				batch, _, err := Decode(payload, testNow, DefaultLimits())
				if err != nil || len(batch.Measurements) != benchRecords {
					b.Fatal(err)
				}
			}
			reportPerRecord(b, len(payload))
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	p := sensorPack(benchRecords)
	for _, enc := range allEncodings {
		b.Run(enc.String(), func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				out, err := Encode(p, enc)
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			reportPerRecord(b, n)
		})
	}
	// The compact form the agent sends, from the resolved batch.
	res, err := Resolve(p, testNow)
	if err != nil {
		b.Fatal(err)
	}
	for _, compress := range []bool{false, true} {
		name := map[bool]string{false: "compact-cbor", true: "compact-cbor+zstd"}[compress]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				out, err := EncodeCompact(res, compress)
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			reportPerRecord(b, n)
		})
	}
	// For comparison: fxamacker/cbor from Record's struct tags, with the
	// shortest floats it can write (integral values stay floats).
	em, err := cbor.EncOptions{ShortestFloat: cbor.ShortestFloat16}.EncMode()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cbor-reflection", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			out, err := em.Marshal(p)
			if err != nil {
				b.Fatal(err)
			}
			n = len(out)
		}
		reportPerRecord(b, n)
	})
}

// refRecord is Record without its JSON methods, for the reflection baseline.
type refRecord struct {
	BaseVersion *int     `json:"bver,omitempty"`
	BaseName    string   `json:"bn,omitempty"`
	BaseTime    float64  `json:"bt,omitempty"`
	BaseUnit    string   `json:"bu,omitempty"`
	BaseValue   *float64 `json:"bv,omitempty"`
	BaseSum     *float64 `json:"bs,omitempty"`
	Name        string   `json:"n,omitempty"`
	Unit        string   `json:"u,omitempty"`
	Value       *float64 `json:"v,omitempty"`
	StringValue *string  `json:"vs,omitempty"`
	BoolValue   *bool    `json:"vb,omitempty"`
	Sum         *float64 `json:"s,omitempty"`
	Time        float64  `json:"t,omitempty"`
	UpdateTime  float64  `json:"ut,omitempty"`
	Seq         *uint64  `json:"mw_seq,omitempty"`
}

// BenchmarkDecodeReflection is the baseline the hand-written readers are
// measured against: reflection decoding into a Pack (fxamacker/cbor with
// the same DecMode, encoding/json), then Resolve.
func BenchmarkDecodeReflection(b *testing.B) {
	p := sensorPack(benchRecords)
	b.Run("cbor", func(b *testing.B) {
		payload := mustEncode(b, p, Encoding{Format: FormatCBOR})
		b.ReportAllocs()
		for b.Loop() {
			var pack Pack
			if err := cborDecMode.Unmarshal(payload, &pack); err != nil {
				b.Fatal(err)
			}
			if _, err := Resolve(pack, testNow); err != nil {
				b.Fatal(err)
			}
		}
		reportPerRecord(b, len(payload))
	})
	b.Run("json", func(b *testing.B) {
		payload := mustEncode(b, p, Encoding{Format: FormatJSON})
		b.ReportAllocs()
		for b.Loop() {
			var refs []refRecord
			if err := json.Unmarshal(payload, &refs); err != nil {
				b.Fatal(err)
			}
			pack := make(Pack, len(refs))
			for i, r := range refs {
				pack[i] = Record{BaseName: r.BaseName, BaseTime: r.BaseTime, Name: r.Name, Unit: r.Unit, Value: r.Value, Time: r.Time, Seq: r.Seq}
			}
			if _, err := Resolve(pack, testNow); err != nil {
				b.Fatal(err)
			}
		}
		reportPerRecord(b, len(payload))
	})
}
