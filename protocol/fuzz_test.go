package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
)

// go test ./protocol -run TestWriteFuzzCorpus -args -update-fuzz-corpus rewrites
// the committed seed corpus under testdata/fuzz from the test vectors.
var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite testdata/fuzz from the test vectors")

// fuzzLimits keep fuzzing fast while leaving room for zstd content larger
// than the payload.
var fuzzLimits = Limits{MaxPayload: 64 << 10, MaxDecompressed: 256 << 10, MaxRecords: 1000}

// decodeSeeds returns the test vectors and their other encodings, by name.
func decodeSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, v := range validVectors(t) {
		seeds[v.name] = v.payload
		base := strings.TrimSuffix(strings.TrimSuffix(v.name, ".json"), ".cbor.hex")
		for _, enc := range allEncodings {
			seeds[base+"."+enc.String()] = mustEncode(t, v.want.Pack(), enc)
		}
		for _, compress := range []bool{false, true} {
			p, err := EncodeCompact(v.want, compress)
			require.NoError(t, err, v.name)
			seeds[base+".compact"+map[bool]string{true: "+zstd"}[compress]] = p
		}
	}
	for _, v := range invalidVectors(t) {
		seeds[v.name] = v.payload
		if !bytes.HasPrefix(v.payload, zstdMagic) {
			seeds[v.name+".zstd"] = zstdCompress(t, v.payload)
		}
	}
	return seeds
}

func addSeeds(f *testing.F, seeds map[string][]byte) {
	for _, s := range seeds {
		f.Add(s)
	}
}

// checkDecode is the fuzz property: Decode never panics, fails only with an
// *Error of a decoding reason, and every accepted batch, encoded again in
// any encoding, decodes to the same batch.
func checkDecode(t *testing.T, payload []byte) (Batch, error) {
	b, _, err := Decode(payload, testNow, fuzzLimits)
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("error %v is not an *Error", err)
		}
		switch pe.Reason {
		case ReasonMalformed, ReasonInvalid, ReasonTooLarge, ReasonTooManyRecords:
		default:
			t.Fatalf("unexpected reason %v", err)
		}
		return b, err
	}
	if len(b.Measurements) == 0 && !b.HasSeq {
		return b, nil // would be an empty pack
	}
	for _, enc := range allEncodings {
		again, err := Encode(b.Pack(), enc)
		if err != nil {
			t.Fatalf("%v: encode accepted batch: %v", enc, err)
		}
		got, _, err := Decode(again, testNow, Limits{MaxPayload: 1 << 30, MaxDecompressed: 1 << 30, MaxRecords: fuzzLimits.MaxRecords})
		if err != nil {
			t.Fatalf("%v: decode re-encoded batch: %v\n%q", enc, err, again)
		}
		require.Equal(t, b, got, enc.String())
	}
	// The compact form the agent sends holds the same measurements.
	for _, compress := range []bool{false, true} {
		again, err := EncodeCompact(b, compress)
		if err != nil {
			t.Fatalf("compact: encode accepted batch: %v", err)
		}
		got, _, err := Decode(again, testNow, Limits{MaxPayload: 1 << 30, MaxDecompressed: 1 << 30, MaxRecords: fuzzLimits.MaxRecords})
		if err != nil {
			t.Fatalf("compact: decode: %v\n%x", err, again)
		}
		requireSameMeasurements(t, b, got)
	}
	return b, nil
}

func FuzzDecode(f *testing.F) {
	addSeeds(f, decodeSeeds(f))
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkDecode(t, payload)
	})
}

var fuzzEncoder = func() *zstd.Encoder {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		panic(err)
	}
	return e
}()

// FuzzDecodeCompressed: a payload and its zstd compression decode alike.
func FuzzDecodeCompressed(f *testing.F) {
	for _, v := range validVectors(f) {
		f.Add(v.payload)
	}
	for _, v := range invalidVectors(f) {
		f.Add(v.payload)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if bytes.HasPrefix(payload, zstdMagic) {
			return // compressed twice is malformed
		}
		lim := Limits{MaxPayload: 1 << 20, MaxDecompressed: 1 << 20, MaxRecords: 1000}
		plain, _, plainErr := Decode(payload, testNow, lim)
		packed, enc, packedErr := Decode(fuzzEncoder.EncodeAll(payload, nil), testNow, lim)
		require.True(t, enc.Compressed)
		require.Equal(t, ReasonOf(plainErr), ReasonOf(packedErr), "plain: %v, compressed: %v", plainErr, packedErr)
		require.Equal(t, plain, packed)
	})
}

// FuzzEncodeCompact: any batch of valid measurements, with values and times
// from the fuzzer's bytes (every float64 bit pattern, times of any
// millisecond), survives EncodeCompact and Decode bit for bit. Each 17
// bytes make a measurement: 8 bytes of float64 bits, 8 bytes of time, and
// one byte choosing name, unit and kind.
func FuzzEncodeCompact(f *testing.F) {
	for _, s := range compactSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, ok := compactBatch(data)
		if !ok {
			return
		}
		requireCompactRoundTrip(t, b)
	})
}

// compactBatch turns fuzz input into a batch of valid measurements.
func compactBatch(data []byte) (Batch, bool) {
	names := [...]string{"a", "b", "temp", "x:y"}
	units := [...]string{"", "Cel", "%RH", "s"}
	var b Batch
	if len(data)%17 == 1 {
		b.HasSeq, b.Seq = true, uint64(data[0])
		data = data[1:]
	}
	for ; len(data) >= 17; data = data[17:] {
		v := math.Float64frombits(binary.BigEndian.Uint64(data))
		ms := minTimeMs + int64(binary.BigEndian.Uint64(data[8:])%uint64(maxTimeMs-minTimeMs))
		c := data[16]
		m := Measurement{Name: names[c&3], Unit: units[c>>2&3], Time: ms, HasValue: true}
		switch c >> 4 & 3 {
		case 0, 1:
			if !finite(v) {
				return Batch{}, false
			}
			m.Value = v
		case 2:
			m.Kind, m.String = KindString, strconv.FormatUint(uint64(c), 10)
		case 3:
			m.Kind, m.Value = KindBool, float64(c>>7)
		}
		if c&0x40 != 0 && finite(v) {
			m.HasSum, m.Sum = true, -v
		}
		b.Measurements = append(b.Measurements, m)
	}
	return b, len(b.Measurements) > 0 || b.HasSeq
}

// compactSeeds encode sensor-like batches in the form compactBatch reads.
func compactSeeds() map[string][]byte {
	put := func(out []byte, v float64, ms int64, c byte) []byte {
		out = binary.BigEndian.AppendUint64(out, math.Float64bits(v))
		return append(binary.BigEndian.AppendUint64(out, uint64(ms-minTimeMs)), c)
	}
	seeds := map[string][]byte{}
	var byTime, bySeries, odd []byte
	for i := range int64(8) {
		at := int64(t0) + 10_000*i + i%3
		byTime = put(byTime, 21.3+float64(i%3)/10, at, 0x04|2) // temp, Cel
		byTime = put(byTime, 45+float64(i)/10, at, 0x08)       // a, %RH
		byTime = put(byTime, 1000+float64(i), at, 1)           // b
		bySeries = put(bySeries, float64(i)/100, t0+10*i, 0)
		odd = put(odd, []float64{math.Copysign(0, -1), 1e300, 5e-324, -9095922592705190, 0.30000000000000004, 1e23, 4294967296.5, -1.5}[i], t0+i, byte(0x40|i))
	}
	seeds["by-time"] = byTime
	seeds["by-series"] = append([]byte{7}, bySeries...)
	seeds["awkward-numbers"] = odd
	seeds["kinds"] = put(put(nil, 1, t0, 0x20), 0, t0+1, 0xb3)
	return seeds
}

// FuzzRecordJSON: what Record.UnmarshalJSON accepts, MarshalJSON writes
// back, and that reads as the same record.
func FuzzRecordJSON(f *testing.F) {
	for _, s := range recordJSONSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Record
		if err := json.Unmarshal(data, &r); err != nil {
			return
		}
		out, err := json.Marshal(r)
		require.NoError(t, err)
		var back Record
		require.NoError(t, json.Unmarshal(out, &back), "%s", out)
		require.Equal(t, r, back)
	})
}

// recordJSONSeeds returns the records of the JSON vectors, one by one.
func recordJSONSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	for _, v := range append(validVectors(t), invalidJSONVectors(t)...) {
		var records []json.RawMessage
		if json.Unmarshal(v.payload, &records) != nil {
			continue
		}
		for _, r := range records {
			seeds = append(seeds, r)
		}
	}
	return seeds
}

func invalidJSONVectors(t testing.TB) []validVector {
	var vs []validVector
	for _, v := range invalidVectors(t) {
		if strings.HasSuffix(v.name, ".json") {
			vs = append(vs, validVector{name: v.name, payload: v.payload})
		}
	}
	return vs
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	write := func(target string, seeds map[string][]byte) { writeSeedCorpus(t, target, seeds) }
	write("FuzzDecode", decodeSeeds(t))
	plain := map[string][]byte{}
	for _, v := range validVectors(t) {
		plain[v.name] = v.payload
	}
	write("FuzzDecodeCompressed", plain)
	records := map[string][]byte{}
	for i, s := range recordJSONSeeds(t) {
		records[fmt.Sprintf("record-%03d", i)] = s
	}
	write("FuzzRecordJSON", records)
	write("FuzzEncodeCompact", compactSeeds())
}

// The committed corpus passes the properties (go test runs it too; this
// makes a missing corpus an error rather than a silent skip).
func TestFuzzCorpusPresent(t *testing.T) {
	for _, target := range []string{"FuzzDecode", "FuzzDecodeCompressed", "FuzzRecordJSON", "FuzzEncodeCompact"} {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		require.NoError(t, err, "run go test ./protocol -run TestWriteFuzzCorpus -args -update-fuzz-corpus")
		require.NotEmpty(t, entries, target)
	}
}

// writeSeedCorpus replaces testdata/fuzz/<target> with one file per seed, in the format of
// go test -fuzz.
func writeSeedCorpus(t *testing.T, target string, seeds map[string][]byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
}
