package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
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
		for _, enc := range allEncodings {
			base := strings.TrimSuffix(strings.TrimSuffix(v.name, ".json"), ".cbor.hex")
			seeds[base+"."+enc.String()] = mustEncode(t, v.want.Pack(), enc)
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
	write := func(target string, seeds map[string][]byte) {
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.RemoveAll(dir))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
		}
	}
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
}

// The committed corpus passes the properties (go test runs it too; this
// makes a missing corpus an error rather than a silent skip).
func TestFuzzCorpusPresent(t *testing.T) {
	for _, target := range []string{"FuzzDecode", "FuzzDecodeCompressed", "FuzzRecordJSON"} {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		require.NoError(t, err, "run go test ./protocol -run TestWriteFuzzCorpus -args -update-fuzz-corpus")
		require.NotEmpty(t, entries, target)
	}
}
