package protocol

import (
	"encoding/hex"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The vectors testdata/valid/millwright-compact-*.cbor.hex are exactly what
// EncodeCompact writes for their batches, so the documented wire form and
// the code agree.
func TestEncodeCompactVectors(t *testing.T) {
	n := 0
	for _, v := range validVectors(t) {
		if !strings.HasPrefix(v.name, "millwright-compact-") {
			continue
		}
		n++
		got, err := EncodeCompact(v.want, false)
		require.NoError(t, err)
		require.Equal(t, v.payload, got, v.name)
	}
	require.Equal(t, 2, n)
}

// requireSameMeasurements checks that got holds exactly want's
// measurements, bit for bit, with the order of each series (name and unit)
// kept; series may be interleaved differently.
func requireSameMeasurements(t testing.TB, want, got Batch) {
	t.Helper()
	require.Equal(t, want.HasSeq, got.HasSeq)
	if want.HasSeq {
		require.Equal(t, want.Seq, got.Seq)
	}
	require.Len(t, got.Measurements, len(want.Measurements))
	bySeries := func(b Batch) map[seriesKey][]Measurement {
		out := map[seriesKey][]Measurement{}
		for _, m := range b.Measurements {
			k := seriesKey{m.Name, m.Unit}
			out[k] = append(out[k], m)
		}
		return out
	}
	w, g := bySeries(want), bySeries(got)
	require.Len(t, g, len(w))
	for k, ws := range w {
		gs := g[k]
		require.Len(t, gs, len(ws), "series %v", k)
		for i := range ws {
			a, b := ws[i], gs[i]
			require.Equal(t, math.Float64bits(a.Value), math.Float64bits(b.Value), "series %v #%d: value %v, got %v", k, i, a.Value, b.Value)
			require.Equal(t, math.Float64bits(a.Sum), math.Float64bits(b.Sum), "series %v #%d: sum %v, got %v", k, i, a.Sum, b.Sum)
			if a.Kind == KindData && a.Data == nil {
				a.Data = []byte{} // an absent and an empty vd are alike on the wire
			}
			require.Equal(t, a, b, "series %v #%d", k, i)
		}
	}
}

func requireCompactRoundTrip(t testing.TB, b Batch) []byte {
	t.Helper()
	var plain []byte
	for _, compress := range []bool{false, true} {
		payload, err := EncodeCompact(b, compress)
		require.NoError(t, err)
		got, enc, err := Decode(payload, testNow, Limits{MaxPayload: 1 << 30, MaxDecompressed: 1 << 30, MaxRecords: maxRecordsCeiling})
		require.NoError(t, err, "%x", payload)
		require.Equal(t, Encoding{Format: FormatCBOR, Compressed: compress}, enc)
		requireSameMeasurements(t, b, got)
		if !compress {
			plain = payload
		}
	}
	return plain
}

const t0 = 1893456003217 // 2030-01-01T00:00:03.217Z in ms

func float(name, unit string, ms int64, v float64) Measurement {
	return Measurement{Name: name, Unit: unit, Time: ms, Kind: KindFloat, Value: v, HasValue: true}
}

func TestEncodeCompactRoundTrip(t *testing.T) {
	negZero, tenth := math.Copysign(0, -1), 0.1
	for _, tc := range []struct {
		name string
		ms   []Measurement
	}{
		{"one measurement", []Measurement{float("a", "", t0, 1)}},
		{"by time, whole seconds", []Measurement{
			float("t", "Cel", 1893456000000, 21.3), float("p", "Pa", 1893456000000, 101325),
			float("t", "Cel", 1893456010000, 21.5), float("p", "Pa", 1893456010000, 101326),
		}},
		{"by time, unit-less between units", []Measurement{
			float("t", "Cel", t0, 21.3), float("n", "", t0, 7), float("h", "%RH", t0, 45),
			float("t", "Cel", t0+10001, 21.4), float("n", "", t0+10001, 8), float("h", "%RH", t0+10001, 45.2),
		}},
		{"by series, 10 ms steps, bu cleared and set again", []Measurement{
			float("v", "mm/s", t0+3, 1.25), float("c", "", t0-7, 5), float("v", "mm/s", t0+13, 1.5),
			float("w", "mm/s", t0+23, 0.5), float("v", "mm/s", t0+33, -0.02),
		}},
		{"same name, two units", []Measurement{
			float("x", "Cel", t0, 1), float("x", "K", t0+1, 274.15), float("x", "Cel", t0+2, 1.5),
		}},
		{"times out of order within a series", []Measurement{
			float("a", "", t0, 1), float("a", "", t0-5000, 2), float("a", "", t0+1, 3),
		}},
		{"awkward numbers", []Measurement{
			float("a", "", t0, tenth+0.2), float("a", "", t0+1, 1e300), float("a", "", t0+2, 5e-324),
			float("a", "", t0+3, negZero), float("a", "", t0+4, 0), float("a", "", t0+5, -1.5),
			float("a", "", t0+6, 1<<53+2), float("a", "", t0+7, -math.MaxFloat64), float("a", "", t0+8, 21.333333333333332),
			float("a", "", t0+9, 123456789.125), float("a", "", t0+10, 4294967296.5), float("a", "", t0+11, 1e22), float("a", "", t0+12, 1e23),
		}},
		{"a series of integers and one fraction", []Measurement{
			float("a", "", t0, 45), float("a", "", t0+1, 45.1), float("a", "", t0+2, 46), float("a", "", t0+3, -45),
		}},
		{"mantissas past 32 bits at the common exponent", []Measurement{
			float("a", "", t0, 0.000001), float("a", "", t0+1, 123456789), float("a", "", t0+2, 0.5),
		}},
		{"other kinds and sums", []Measurement{
			{Name: "s", Time: t0, Kind: KindString, String: "open", HasValue: true},
			{Name: "b", Time: t0, Kind: KindBool, Value: 1, HasValue: true},
			{Name: "d", Unit: "B", Time: t0, Kind: KindData, Data: []byte{1, 2}, HasValue: true},
			{Name: "d", Unit: "B", Time: t0 + 1, Kind: KindData, HasValue: true},
			{Name: "e", Unit: "J", Time: t0, HasSum: true, Sum: 1234.5},
			{Name: "f", Unit: "W", Time: t0, Value: 3.5, HasValue: true, HasSum: true, Sum: 0.1},
		}},
		{"earliest and latest times", []Measurement{
			float("a", "", minTimeMs, 1), float("a", "", maxTimeMs-1, 2), float("b", "", minTimeMs+1, 3),
		}},
		{"bt+t would round below 2^28 s: the record sets bt", []Measurement{
			float("a", "", 505500751928, 1), float("a", "", minTimeMs, 2), float("a", "", minTimeMs+10, 3),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, seq := range []bool{false, true} {
				requireCompactRoundTrip(t, Batch{Seq: 99, HasSeq: seq, Measurements: tc.ms})
			}
		})
	}
	// Only a sequence number.
	p := requireCompactRoundTrip(t, Batch{Seq: 5, HasSeq: true})
	require.Equal(t, "81a1666d775f73657105", hex.EncodeToString(p))
}

// Random sensor-like batches and random float64 bit patterns survive the
// compact encoding exactly.
func TestEncodeCompactRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	names := []string{"a", "b", "c", "d"}
	units := []string{"", "Cel", "%RH"}
	for range 500 {
		n := 1 + rng.IntN(200)
		ms := make([]Measurement, n)
		tm := int64(t0) + rng.Int64N(1e9)
		step := []int64{0, 1, 10, 1000, 10000}[rng.IntN(5)]
		for i := range ms {
			if rng.IntN(3) == 0 {
				tm += step + rng.Int64N(3)
			}
			var v float64
			switch rng.IntN(4) {
			case 0:
				v = math.Float64frombits(rng.Uint64())
				if !finite(v) {
					v = 1
				}
			case 1:
				v = float64(rng.Int64N(100000)-50000) / math.Pow10(rng.IntN(6))
			case 2:
				v = float64(rng.Int64N(1 << 40))
			default:
				v = rng.NormFloat64()
			}
			ms[i] = float(names[rng.IntN(len(names))], units[rng.IntN(len(units))], tm, v)
		}
		requireCompactRoundTrip(t, Batch{Seq: rng.Uint64(), HasSeq: rng.IntN(2) == 0, Measurements: ms})
	}
}

func TestEncodeCompactRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    Batch
		err  string
	}{
		{"empty", Batch{}, "empty pack"},
		{"bad name", Batch{Measurements: []Measurement{float("a b", "", t0, 1)}}, `name "a b"`},
		{"no name", Batch{Measurements: []Measurement{float("", "", t0, 1)}}, "empty name"},
		{"NaN", Batch{Measurements: []Measurement{float("a", "", t0, math.NaN())}}, "not a finite number"},
		{"infinite sum", Batch{Measurements: []Measurement{{Name: "a", Time: t0, HasSum: true, Sum: math.Inf(1)}}}, "sum is not a finite"},
		{"time too early", Batch{Measurements: []Measurement{float("a", "", minTimeMs-1, 1)}}, "outside"},
		{"time too late", Batch{Measurements: []Measurement{float("a", "", maxTimeMs, 1)}}, "outside"},
		{"unit not UTF-8", Batch{Measurements: []Measurement{float("a", "\xff", t0, 1)}}, "unit is not UTF-8"},
		{"string not UTF-8", Batch{Measurements: []Measurement{{Name: "a", Time: t0, Kind: KindString, String: "\xff", HasValue: true}}}, "string value is not UTF-8"},
		{"no value", Batch{Measurements: []Measurement{{Name: "a", Time: t0}}}, "neither a value nor a sum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := EncodeCompact(tc.b, true)
			requireReason(t, err, ReasonInvalid)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

// The layout follows the runs of common times.
func TestCompactLayout(t *testing.T) {
	byTime := []Measurement{float("a", "", t0, 1), float("b", "", t0, 2), float("a", "", t0+1, 3), float("b", "", t0+1, 4)}
	require.False(t, planCompact(byTime).bySeries)
	bySeries := []Measurement{float("a", "", t0, 1), float("b", "", t0+1, 2), float("a", "", t0+2, 3)}
	l := planCompact(bySeries)
	require.True(t, l.bySeries)
	require.Equal(t, []int{0, 2, 1}, l.order)
	require.Equal(t, int64(-3), l.timeExp)
	require.Equal(t, int64(0), planCompact([]Measurement{float("a", "", 1893456000000, 1)}).timeExp)
	require.Equal(t, int64(-1), planCompact([]Measurement{float("a", "", 1893456000100, 1), float("a", "", 1893456000300, 1)}).timeExp)
}

func TestShortestDecimal(t *testing.T) {
	tenth := 0.1
	for _, tc := range []struct {
		f         float64
		exp, mant int64
	}{
		{21.53, -2, 2153},
		{-0.02, -2, -2},
		{45, 0, 45},
		{100, 2, 1},
		{1e300, 300, 1},
		{5e-324, -324, 5},
		{tenth + 0.2, -17, 30000000000000004},
	} {
		exp, mant, ok := shortestDecimal(tc.f)
		require.True(t, ok, "%v", tc.f)
		require.Equal(t, [2]int64{tc.exp, tc.mant}, [2]int64{exp, mant}, "%v", tc.f)
	}
}

// The reader's fast path for decimal fractions gives what strconv gives.
func TestDecimalFractionFastPath(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for range 200_000 {
		exp := rng.Int64N(60) - 30
		mant := rng.Int64N(1<<54) - 1<<53
		if rng.IntN(2) == 0 {
			mant >>= rng.IntN(50)
		}
		var b []byte
		b = appendCBORInt(appendCBORInt(append(b, 0xc4, 0x82), exp), mant)
		d := cborReader{b: b}
		got, err := d.number()
		require.NoError(t, err)
		want, err := strconv.ParseFloat(strconv.FormatInt(mant, 10)+"e"+strconv.FormatInt(exp, 10), 64)
		require.NoError(t, err)
		require.Equal(t, math.Float64bits(want), math.Float64bits(got), "%de%d", mant, exp)
	}
}

// Near 2^28 s a large bt plus a negative t can round below the bound, where
// times become relative; such a record sets bt instead.
func TestCompactRebasesNearMinTime(t *testing.T) {
	const base = 505500751928
	require.False(t, offsetExact(base, minTimeMs, -3))
	require.True(t, offsetExact(base, minTimeMs+1, -3))
	p, err := EncodeCompact(Batch{Measurements: []Measurement{
		{Name: "a", Time: base, Kind: KindBool, HasValue: true},
		{Name: "a", Time: minTimeMs, Kind: KindBool, HasValue: true},
	}}, false)
	require.NoError(t, err)
	// The second record sets bt (label 0x22) to 2^28 s and has no t.
	require.Equal(t, "82"+"a3"+"22c482221b00000075b2315838"+"21616104f4"+"a2"+"22c482221b0000003e80000000"+"04f4", hex.EncodeToString(p))
}
