package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

func ptr[T any](v T) *T { return &v }

func mustEncode(t testing.TB, p Pack, enc Encoding) []byte {
	t.Helper()
	b, err := Encode(p, enc)
	require.NoError(t, err)
	return b
}

func requireReason(t testing.TB, err error, want Reason) {
	t.Helper()
	require.Error(t, err)
	var pe *Error
	require.ErrorAs(t, err, &pe)
	require.Equal(t, want, pe.Reason, "error: %v", err)
}

func TestSniff(t *testing.T) {
	cborPack := mustEncode(t, Pack{{Name: "a", Value: ptr(1.0)}}, Encoding{Format: FormatCBOR})
	jsonPack := mustEncode(t, Pack{{Name: "a", Value: ptr(1.0)}}, Encoding{Format: FormatJSON})
	for _, tc := range []struct {
		name    string
		payload []byte
		want    Encoding
		reason  Reason
	}{
		{"cbor", cborPack, Encoding{Format: FormatCBOR}, ReasonNone},
		{"cbor indefinite array", []byte{0x9f, 0xff}, Encoding{Format: FormatCBOR}, ReasonNone},
		{"json", jsonPack, Encoding{Format: FormatJSON}, ReasonNone},
		{"json after whitespace", []byte(" \r\n\t[]"), Encoding{Format: FormatJSON}, ReasonNone},
		{"cbor+zstd", mustEncode(t, Pack{{Name: "a", Value: ptr(1.0)}}, Encoding{Format: FormatCBOR, Compressed: true}), Encoding{Format: FormatCBOR, Compressed: true}, ReasonNone},
		{"json+zstd", mustEncode(t, Pack{{Name: "a", Value: ptr(1.0)}}, Encoding{Format: FormatJSON, Compressed: true}), Encoding{Format: FormatJSON, Compressed: true}, ReasonNone},
		{"empty", nil, Encoding{}, ReasonMalformed},
		{"whitespace only", []byte("  "), Encoding{}, ReasonMalformed},
		{"json object", []byte(`{"n":"a"}`), Encoding{}, ReasonMalformed},
		{"cbor map", []byte{0xa0}, Encoding{}, ReasonMalformed},
		{"self-described cbor tag", []byte{0xd9, 0xd9, 0xf7, 0x80}, Encoding{}, ReasonMalformed},
		{"utf-8 bom", []byte("\xef\xbb\xbf[]"), Encoding{}, ReasonMalformed},
		{"zstd garbage", []byte{0x28, 0xb5, 0x2f, 0xfd, 0xff}, Encoding{Compressed: true}, ReasonMalformed},
		{"zstd of zstd", zstdCompress(t, zstdCompress(t, cborPack)), Encoding{Compressed: true}, ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Sniff(tc.payload)
			require.Equal(t, tc.want, got)
			if tc.reason == ReasonNone {
				require.NoError(t, err)
			} else {
				requireReason(t, err, tc.reason)
			}
		})
	}
}

func zstdCompress(t testing.TB, data []byte) []byte {
	t.Helper()
	e, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer e.Close()
	return e.EncodeAll(data, nil)
}

func TestEncodingNames(t *testing.T) {
	require.Equal(t, "cbor", Encoding{Format: FormatCBOR}.String())
	require.Equal(t, "json+zstd", Encoding{Format: FormatJSON, Compressed: true}.String())
	require.Equal(t, "unknown", Encoding{}.String())
	require.Equal(t, "application/senml+cbor", Encoding{Format: FormatCBOR, Compressed: true}.ContentType())
	require.Equal(t, "application/senml+json", Encoding{Format: FormatJSON}.ContentType())
}

// samplePack uses every field Encode writes.
func samplePack() Pack {
	return Pack{
		{
			Seq: ptr(uint64(1) << 40), BaseVersion: ptr(10), BaseName: "press-3:", BaseTime: 1735689600.25,
			BaseUnit: "Cel", BaseValue: ptr(20.0), BaseSum: ptr(100.0),
			Name: "temp", Value: ptr(1.5), UpdateTime: 60,
		},
		{Name: "temp", Time: 10, Value: ptr(-0.125)},
		{Name: "label", Unit: "", StringValue: ptr("Machine Room \"A\"\n\t\x01 ✓"), Time: 10.5},
		{Name: "open", BoolValue: ptr(true), Time: -1},
		{Name: "blob", DataValue: []byte{0, 1, 2, 0xff}},
		{Name: "empty-blob", DataValue: []byte{}},
		{Name: "energy", Unit: "J", Sum: ptr(1234.5)},
		{BaseName: "press-4:", Name: "temp", Value: ptr(1e-7), Time: 1e-3},
		{Name: "big", Value: ptr(1e300)},
		{Name: "pi", Value: ptr(math.Pi)},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	p := samplePack()
	want, err := Resolve(p, testNow)
	require.NoError(t, err)
	require.Len(t, want.Measurements, len(p))
	require.Equal(t, uint64(1)<<40, want.Seq)
	// Spot checks of resolution.
	require.Equal(t, Measurement{Name: "press-3:temp", Unit: "Cel", Time: 1735689600250, Kind: KindFloat, Value: 21.5, HasValue: true, HasSum: true, Sum: 100}, want.Measurements[0])
	require.Equal(t, Measurement{Name: "press-3:empty-blob", Unit: "Cel", Time: 1735689600250, Kind: KindData, Data: []byte{}, HasValue: true, HasSum: true, Sum: 100}, want.Measurements[5])
	require.Equal(t, int64(1735689600251), want.Measurements[7].Time)

	for _, enc := range allEncodings {
		t.Run(enc.String(), func(t *testing.T) {
			payload := mustEncode(t, p, enc)
			got, gotEnc, err := Decode(payload, testNow, DefaultLimits())
			require.NoError(t, err)
			require.Equal(t, enc, gotEnc)
			require.Equal(t, want, got)

			// Resolved, the batch encodes and decodes to itself.
			again, _, err := Decode(mustEncode(t, got.Pack(), enc), testNow, DefaultLimits())
			require.NoError(t, err)
			require.Equal(t, want, again)
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  Record
	}{
		{"NaN value", Record{Name: "a", Value: ptr(math.NaN())}},
		{"infinite time", Record{Name: "a", Value: ptr(1.0), Time: math.Inf(-1)}},
		{"infinite base sum", Record{Name: "a", Value: ptr(1.0), BaseSum: ptr(math.Inf(1))}},
		{"unit not UTF-8", Record{Name: "a", Value: ptr(1.0), Unit: "\xff"}},
		{"string value not UTF-8", Record{Name: "a", StringValue: ptr("a\xc3")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, enc := range allEncodings {
				_, err := Encode(Pack{tc.rec}, enc)
				requireReason(t, err, ReasonInvalid)
			}
		})
	}
	_, err := Encode(Pack{{Name: "a", Value: ptr(1.0)}}, Encoding{})
	requireReason(t, err, ReasonInvalid)
}

// The CBOR encoder picks the shortest exact form of every number.
func TestCBORNumbers(t *testing.T) {
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{0, "00"},
		{math.Copysign(0, -1), "f98000"}, // keeps its sign
		{1, "01"},
		{23, "17"},
		{24, "1818"},
		{-5, "24"},
		{-25, "3818"},
		{1.5, "f93e00"},
		{21.5, "f94d60"},
		{-0.125, "f9b000"},
		{65504, "19ffe0"},          // a float16 too, but the integer is as short
		{65536, "1a00010000"},      // a float32 too, but the integer is as short
		{1735689600, "1a67748580"}, // ditto
		{1e10, "fa501502f9"},       // float32 beats the 9-byte integer
		{1 << 40, "fa53800000"},
		{1<<53 + 2, "1b0020000000000002"}, // integral beyond 2^53, still exact
		{-9095922592705190, "3b002050b1830aeaa5"}, // -1-arg must round once
		{1234.5, "fa449a5000"},
		{100000.5, "fa47c35040"},
		{1.1, "fb3ff199999999999a"},
		{1735689600.25, "fb41d9dd2160100000"},
		{5.960464477539063e-08, "f90001"}, // smallest float16 subnormal
		{6.097555160522461e-05, "f903ff"}, // largest float16 subnormal
		{6.103515625e-05, "f90400"},       // smallest float16 normal
		{1e300, "fb7e37e43c8800759c"},
	} {
		got := hex.EncodeToString(appendCBORNumber(nil, tc.f))
		require.Equal(t, strings.ReplaceAll(tc.want, " ", ""), got, "%v", tc.f)
		d := cborReader{b: appendCBORNumber(nil, tc.f)}
		back, err := d.number()
		require.NoError(t, err)
		require.Equal(t, math.Float64bits(tc.f), math.Float64bits(back), "%v", tc.f)
	}
}

func TestFloat16Exhaustive(t *testing.T) {
	for h := 0; h <= 0xffff; h++ {
		f := halfToFloat64(uint16(h))
		if math.IsNaN(f) {
			require.Equal(t, 0x7c00, h&0x7c00, "0x%04x", h)
			continue
		}
		back, ok := float64ToHalf(f)
		require.True(t, ok, "0x%04x", h)
		require.Equal(t, uint16(h), back, "0x%04x", h)
		if h&0x7fff != 0 && !math.IsInf(f, 0) {
			// A float half-way to the next float16 is not exact.
			_, ok := float64ToHalf(math.Nextafter(f, math.Inf(1)))
			require.False(t, ok, "0x%04x", h)
		}
	}
	_, ok := float64ToHalf(math.NaN())
	require.False(t, ok)
}

func TestCBORDecimalFraction(t *testing.T) {
	for _, tc := range []struct {
		hex  string
		want float64
	}{
		{"c4822119 6ab3", 273.15}, // 4([-2, 27315])
		{"c4820222", -300},        // 4([2, -3])
		{"c4820000", 0},           // 4([0, 0])
		{"c482201b ffffffffffffffff", 1.8446744073709552e18},
		{"c482203b ffffffffffffffff", -1.8446744073709552e18},
		{"c4821a 7fffffff 01", math.Inf(1)}, // overflows: an error
	} {
		b, err := hex.DecodeString(strings.ReplaceAll(tc.hex, " ", ""))
		require.NoError(t, err)
		d := cborReader{b: b}
		got, err := d.number()
		if math.IsInf(tc.want, 0) {
			require.Error(t, err)
			continue
		}
		require.NoError(t, err, tc.hex)
		require.Equal(t, tc.want, got, tc.hex)
	}
}

func TestResolve(t *testing.T) {
	now := testNow
	nowMs := now.UnixMilli()
	for _, tc := range []struct {
		name string
		pack Pack
		want []Measurement // nil: no measurements
		err  string        // substring of an invalid error
	}{
		{
			name: "relative time rounds half away from zero",
			pack: Pack{{Name: "a", Value: ptr(1.0), Time: 0.0625}, {Name: "a", Value: ptr(1.0), Time: -0.0625}, {Name: "a", Value: ptr(1.0), Time: 0.0004}},
			want: []Measurement{
				{Name: "a", Time: nowMs + 63, Value: 1, HasValue: true},
				{Name: "a", Time: nowMs - 63, Value: 1, HasValue: true},
				{Name: "a", Time: nowMs, Value: 1, HasValue: true},
			},
		},
		{
			name: "base time plus relative time stays relative",
			pack: Pack{{BaseTime: -60, Name: "a", Value: ptr(1.0), Time: 30}},
			want: []Measurement{{Name: "a", Time: nowMs - 30000, Value: 1, HasValue: true}},
		},
		{
			name: "absolute base time minus time can become relative",
			pack: Pack{{BaseTime: 1 << 28, Name: "a", Value: ptr(1.0), Time: -1}},
			want: []Measurement{{Name: "a", Time: nowMs + (1<<28-1)*1000, Value: 1, HasValue: true}},
		},
		{
			name: "smallest absolute time",
			pack: Pack{{Name: "a", Value: ptr(1.0), Time: 1 << 28}},
			want: []Measurement{{Name: "a", Time: (1 << 28) * 1000, Value: 1, HasValue: true}},
		},
		{
			name: "base value and base sum carry forward",
			pack: Pack{
				{BaseName: "m:", BaseValue: ptr(100.0), BaseSum: ptr(5.0), Name: "a", Value: ptr(1.0)},
				{Name: "b", Value: ptr(2.0), Sum: ptr(1.0)},
				{Name: "c", StringValue: ptr("x")},
				{BaseValue: ptr(0.0), Name: "d", Value: ptr(3.0)},
			},
			want: []Measurement{
				{Name: "m:a", Time: nowMs, Value: 101, HasValue: true, HasSum: true, Sum: 5},
				{Name: "m:b", Time: nowMs, Value: 102, HasValue: true, HasSum: true, Sum: 6},
				{Name: "m:c", Time: nowMs, Kind: KindString, String: "x", HasValue: true, HasSum: true, Sum: 5},
				{Name: "m:d", Time: nowMs, Value: 3, HasValue: true, HasSum: true, Sum: 5},
			},
		},
		{
			name: "sum only",
			pack: Pack{{Name: "e", Unit: "J", Sum: ptr(7.0)}},
			want: []Measurement{{Name: "e", Unit: "J", Time: nowMs, HasSum: true, Sum: 7}},
		},
		{
			name: "unit overrides base unit for its record only",
			pack: Pack{{BaseUnit: "Cel", Name: "a", Value: ptr(1.0)}, {Name: "b", Unit: "K", Value: ptr(2.0)}, {Name: "c", Value: ptr(3.0)}},
			want: []Measurement{
				{Name: "a", Unit: "Cel", Time: nowMs, Value: 1, HasValue: true},
				{Name: "b", Unit: "K", Time: nowMs, Value: 2, HasValue: true},
				{Name: "c", Unit: "Cel", Time: nowMs, Value: 3, HasValue: true},
			},
		},
		{
			name: "base name alone names the record",
			pack: Pack{{BaseName: "urn:dev:mac:0024befffe804ff1", Value: ptr(1.0)}},
			want: []Measurement{{Name: "urn:dev:mac:0024befffe804ff1", Time: nowMs, Value: 1, HasValue: true}},
		},
		{
			name: "base-only records yield nothing",
			pack: Pack{{Seq: ptr(uint64(3)), BaseName: "x:"}, {BaseUnit: "V"}},
		},
		{
			name: "lower version, consistent",
			pack: Pack{{BaseVersion: ptr(5), Name: "a", Value: ptr(1.0)}, {BaseVersion: ptr(5), Name: "b", Value: ptr(1.0)}},
			want: []Measurement{{Name: "a", Time: nowMs, Value: 1, HasValue: true}, {Name: "b", Time: nowMs, Value: 1, HasValue: true}},
		},
		{name: "empty", pack: Pack{}, err: "empty pack"},
		{name: "version 11", pack: Pack{{BaseVersion: ptr(11), Name: "a", Value: ptr(1.0)}}, err: "unsupported SenML version"},
		{name: "negative version", pack: Pack{{BaseVersion: ptr(-1), Name: "a", Value: ptr(1.0)}}, err: "unsupported SenML version"},
		{name: "seq on second record", pack: Pack{{Name: "a", Value: ptr(1.0)}, {Seq: ptr(uint64(1)), Name: "a", Value: ptr(1.0)}}, err: "first record only"},
		{name: "name with space", pack: Pack{{Name: "a b", Value: ptr(1.0)}}, err: `name "a b"`},
		{name: "name starting with dot", pack: Pack{{BaseName: ".", Name: "a", Value: ptr(1.0)}}, err: `name ".a"`},
		{name: "no value", pack: Pack{{Name: "a"}}, err: "neither a value"},
		{name: "bool and float", pack: Pack{{Name: "a", Value: ptr(1.0), BoolValue: ptr(true)}}, err: "2 value fields"},
		{name: "empty record", pack: Pack{{}}, err: "no SenML field"},
		{name: "NaN base value", pack: Pack{{BaseValue: ptr(math.NaN()), Name: "a", Value: ptr(1.0)}}, err: "bv is not a finite number"},
		{name: "infinite sum", pack: Pack{{Name: "a", Sum: ptr(math.Inf(1))}}, err: "s is not a finite number"},
		{name: "year 10000", pack: Pack{{Name: "a", Value: ptr(1.0), Time: 253402300800}}, err: "resolves outside"},
		{name: "unit not UTF-8", pack: Pack{{Name: "a", Value: ptr(1.0), Unit: "\xc3("}}, err: "u: not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.pack, now)
			if tc.err != "" {
				requireReason(t, err, ReasonInvalid)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got.Measurements)
		})
	}
}

func TestBatchPackRoundTrip(t *testing.T) {
	b := Batch{Seq: 9, HasSeq: true}
	p := b.Pack()
	require.Len(t, p, 1)
	got, err := Resolve(p, testNow)
	require.NoError(t, err)
	require.Equal(t, b, got)
	require.Empty(t, Batch{}.Pack())
}

func TestLimits(t *testing.T) {
	require.Equal(t, Limits{MaxPayload: 256 << 10, MaxDecompressed: 4 << 20, MaxRecords: 10000}, DefaultLimits())
	require.Equal(t, DefaultLimits(), Limits{}.normalized())
	require.Equal(t, DefaultLimits(), Limits{MaxPayload: -1, MaxDecompressed: -1, MaxRecords: -1}.normalized())

	records := func(n int) Pack {
		p := make(Pack, n)
		for i := range p {
			p[i] = Record{Name: "a", Value: ptr(float64(i))}
		}
		return p
	}
	for _, enc := range allEncodings {
		t.Run(enc.String(), func(t *testing.T) {
			small := mustEncode(t, records(10), enc)

			_, _, err := Decode(small, testNow, Limits{MaxPayload: len(small)})
			require.NoError(t, err)
			_, gotEnc, err := Decode(small, testNow, Limits{MaxPayload: len(small) - 1})
			requireReason(t, err, ReasonTooLarge)
			require.Equal(t, Encoding{}, gotEnc)

			_, _, err = Decode(small, testNow, Limits{MaxRecords: 10})
			require.NoError(t, err)
			_, gotEnc, err = Decode(small, testNow, Limits{MaxRecords: 9})
			requireReason(t, err, ReasonTooManyRecords)
			require.Equal(t, enc, gotEnc)

			// The default record limit, on a payload long enough that JSON
			// counts before parsing.
			many := mustEncode(t, records(10001), enc)
			_, _, err = Decode(many, testNow, Limits{MaxPayload: 1 << 20})
			requireReason(t, err, ReasonTooManyRecords)
			ok := mustEncode(t, records(10000), enc)
			b, _, err := Decode(ok, testNow, Limits{MaxPayload: 1 << 20})
			require.NoError(t, err)
			require.Len(t, b.Measurements, 10000)

			if enc.Compressed {
				raw := mustEncode(t, records(10), Encoding{Format: enc.Format})
				_, _, err = Decode(small, testNow, Limits{MaxDecompressed: len(raw)})
				require.NoError(t, err)
				_, _, err = Decode(small, testNow, Limits{MaxDecompressed: len(raw) - 1})
				requireReason(t, err, ReasonTooLarge)
			}
		})
	}
}

// zstdBomb returns size bytes of zeros, compressed by the streaming
// encoder, which does not declare the content size in the frame header.
func zstdBomb(t testing.TB, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	require.NoError(t, err)
	zeros := make([]byte, 1<<20)
	for written := 0; written < size; written += len(zeros) {
		_, err := w.Write(zeros)
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func TestZstdBomb(t *testing.T) {
	bomb := zstdBomb(t, 1<<30)
	require.Less(t, len(bomb), DefaultLimits().MaxPayload, "the bomb must pass the payload limit")
	declared := zstdCompress(t, make([]byte, 64<<20)) // declares its 64 MiB

	for name, payload := range map[string][]byte{"streamed 1 GiB": bomb, "declared 64 MiB": declared} {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, enc, err := Decode(payload, testNow, DefaultLimits())
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)

			requireReason(t, err, ReasonTooLarge)
			require.True(t, enc.Compressed)
			allocated := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d-byte payload refused in %v, %d KiB allocated", len(payload), elapsed, allocated>>10)
			// The bound is the 4 MiB buffer plus the decoder's own state.
			require.Less(t, allocated, uint64(32<<20))
			require.Less(t, elapsed, 2*time.Second)
		})
	}
}

// Decoded batches share no memory with the payload, nor with the pooled
// decompression buffer that the next Decode reuses.
func TestDecodeDoesNotAlias(t *testing.T) {
	p := Pack{
		{BaseName: "m:", BaseUnit: "Cel", Name: "s", StringValue: ptr("hello")},
		{Name: "d", DataValue: []byte("data")},
		{Name: "v", Unit: "V", Value: ptr(1.0)},
	}
	want, err := Resolve(p, testNow)
	require.NoError(t, err)
	for _, enc := range allEncodings {
		payload := mustEncode(t, p, enc)
		got, _, err := Decode(payload, testNow, DefaultLimits())
		require.NoError(t, err)
		for i := range payload {
			payload[i] = 'x'
		}
		other := mustEncode(t, Pack{{Name: "zzzzzzzzzzzzzzzzzzzzzzzzzzzzz", StringValue: ptr("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")}}, enc)
		_, _, err = Decode(other, testNow, DefaultLimits())
		require.NoError(t, err)
		require.Equal(t, want, got, enc)
	}
}

func TestDecodeConcurrent(t *testing.T) {
	vs := validVectors(t)
	compressed := make([][]byte, len(vs))
	for i, v := range vs {
		compressed[i] = zstdCompress(t, v.payload)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 50; i++ {
				k := (g + i) % len(vs)
				v, payload := vs[k], vs[k].payload
				if i%2 == 1 {
					payload = compressed[k]
				}
				got, _, err := Decode(payload, testNow, DefaultLimits())
				if err != nil || !equalBatch(got, v.want) {
					t.Errorf("%s: %v", v.name, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func equalBatch(a, b Batch) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// Record's JSON methods follow Encode and Decode, so encoding/json works on
// a Pack.
func TestRecordJSON(t *testing.T) {
	p := samplePack()
	viaJSON, err := json.Marshal(p)
	require.NoError(t, err)
	require.JSONEq(t, string(mustEncode(t, p, Encoding{Format: FormatJSON})), string(viaJSON))

	var back Pack
	require.NoError(t, json.Unmarshal(viaJSON, &back))
	require.Equal(t, p, back)

	var r Record
	require.ErrorContains(t, json.Unmarshal([]byte(`{"n":"a","x_":1}`), &r), "must be understood")
	require.ErrorContains(t, json.Unmarshal([]byte(`{"n":"a","n":"b"}`), &r), "repeats field n")
	require.ErrorContains(t, json.Unmarshal([]byte(`{"vd":"AA=="}`), &r), "base64url")
	require.NoError(t, json.Unmarshal([]byte(`{"n":"a","vd":"AAE","other":{"k":[1,"}"]}}`), &r))
	require.Equal(t, Record{Name: "a", DataValue: []byte{0, 1}}, r)
	_, err = json.Marshal(Record{Value: ptr(math.Inf(1))})
	require.Error(t, err)
}

func TestJSONEncoding(t *testing.T) {
	p := Pack{
		{Seq: ptr(uint64(7)), BaseName: "m:", BaseTime: 1735689600, Name: "t", Unit: "Cel", Value: ptr(21.5)},
		{Name: "t", Time: 0.5, Value: ptr(1e-7)},
		{Name: "s", StringValue: ptr("a\"b\\c\n\u2028é")},
		{Name: "d", DataValue: []byte{0xfb, 0xff}},
	}
	require.Equal(t,
		`[{"mw_seq":7,"bn":"m:","bt":1735689600,"n":"t","u":"Cel","v":21.5},`+
			`{"n":"t","v":1e-7,"t":0.5},`+
			`{"n":"s","vs":"a\"b\\c\n`+"\u2028é"+`"},`+
			`{"n":"d","vd":"-_8"}]`,
		string(mustEncode(t, p, Encoding{Format: FormatJSON})))
}

// The CBOR the package writes, and RFC 8428 CBOR written by fxamacker/cbor
// from Record's struct tags, decode to the same batches as the reflection
// decoder of fxamacker/cbor into a Pack followed by Resolve: an independent
// check of the hand-written reader.
func TestCBORAgainstReflection(t *testing.T) {
	var payloads [][]byte
	for _, v := range validVectors(t) {
		if v.format == FormatCBOR && !strings.HasPrefix(v.name, "millwright") { // tag 4 and extensions: no reflection
			payloads = append(payloads, v.payload)
		}
		payloads = append(payloads, mustEncode(t, v.want.Pack(), Encoding{Format: FormatCBOR}))
		viaTags, err := cbor.Marshal(v.want.Pack())
		require.NoError(t, err)
		payloads = append(payloads, viaTags)
	}
	payloads = append(payloads, mustEncode(t, samplePack(), Encoding{Format: FormatCBOR}))
	for _, payload := range payloads {
		var p Pack
		require.NoError(t, cborDecMode.Unmarshal(payload, &p))
		want, err := Resolve(p, testNow)
		require.NoError(t, err)
		got, _, err := Decode(payload, testNow, DefaultLimits())
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
}

// Likewise for JSON, against encoding/json into a Pack.
func TestJSONAgainstReflection(t *testing.T) {
	var payloads [][]byte
	for _, v := range validVectors(t) {
		if v.format == FormatJSON {
			payloads = append(payloads, v.payload)
		}
	}
	payloads = append(payloads, mustEncode(t, samplePack(), Encoding{Format: FormatJSON}))
	for _, payload := range payloads {
		var p Pack
		require.NoError(t, json.Unmarshal(payload, &p))
		want, err := Resolve(p, testNow)
		require.NoError(t, err)
		got, _, err := Decode(payload, testNow, DefaultLimits())
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
}
