package protocol

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testNow is "now" for the test vectors: 2025-01-01T00:00:00Z.
var testNow = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// readVector reads a test vector: *.hex files hold hex digits with '#'
// comments and free spacing, anything else is the payload itself.
func readVector(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	if !strings.HasSuffix(path, ".hex") {
		return data
	}
	var digits strings.Builder
	for line := range strings.Lines(string(data)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	payload, err := hex.DecodeString(digits.String())
	require.NoError(t, err, path)
	return payload
}

// wantBatch is the form of testdata/valid/*.want.json: the expected
// measurements, spelled with SenML labels so that they read like resolved
// SenML (RFC 8428 §5.1.4). A measurement has the kind of its value field;
// without one it has only a sum.
type wantBatch struct {
	Seq          *uint64 `json:"seq"`
	Measurements []struct {
		Name   string   `json:"n"`
		Unit   string   `json:"u"`
		Time   int64    `json:"t"`
		Value  *float64 `json:"v"`
		String *string  `json:"vs"`
		Bool   *bool    `json:"vb"`
		Data   *string  `json:"vd"`
		Sum    *float64 `json:"s"`
	} `json:"measurements"`
}

func (w wantBatch) batch(t testing.TB) Batch {
	var b Batch
	if w.Seq != nil {
		b.Seq, b.HasSeq = *w.Seq, true
	}
	for _, wm := range w.Measurements {
		m := Measurement{Name: wm.Name, Unit: wm.Unit, Time: wm.Time, HasValue: true}
		switch {
		case wm.Value != nil:
			m.Kind, m.Value = KindFloat, *wm.Value
		case wm.String != nil:
			m.Kind, m.String = KindString, *wm.String
		case wm.Bool != nil:
			m.Kind = KindBool
			if *wm.Bool {
				m.Value = 1
			}
		case wm.Data != nil:
			data, err := base64.RawURLEncoding.DecodeString(*wm.Data)
			require.NoError(t, err)
			m.Kind, m.Data = KindData, data
		default:
			m.HasValue = false
		}
		if wm.Sum != nil {
			m.HasSum, m.Sum = true, *wm.Sum
		}
		b.Measurements = append(b.Measurements, m)
	}
	return b
}

type validVector struct {
	name    string // file name
	payload []byte
	want    Batch
	format  Format
}

// validVectors loads testdata/valid: X.json and X.cbor.hex are payloads,
// X.want.json their expected Batch.
func validVectors(t testing.TB) []validVector {
	t.Helper()
	paths, err := filepath.Glob("testdata/valid/*")
	require.NoError(t, err)
	var vs []validVector
	for _, path := range paths {
		name := filepath.Base(path)
		if strings.HasSuffix(name, ".want.json") {
			continue
		}
		base, format := strings.TrimSuffix(name, ".json"), FormatJSON
		if strings.HasSuffix(name, ".cbor.hex") {
			base, format = strings.TrimSuffix(name, ".cbor.hex"), FormatCBOR
		}
		wantJSON, err := os.ReadFile(filepath.Join("testdata/valid", base+".want.json"))
		require.NoError(t, err, name)
		var w wantBatch
		require.NoError(t, json.Unmarshal(wantJSON, &w), name)
		vs = append(vs, validVector{name: name, payload: readVector(t, path), want: w.batch(t), format: format})
	}
	require.NotEmpty(t, vs)
	return vs
}

type invalidVector struct {
	name    string
	payload []byte
	reason  Reason
}

var invalidName = regexp.MustCompile(`^([a-z_]+)--`)

// invalidVectors loads testdata/invalid: each file's name starts with the
// expected Reason, "invalid--…", "malformed--…".
func invalidVectors(t testing.TB) []invalidVector {
	t.Helper()
	paths, err := filepath.Glob("testdata/invalid/*")
	require.NoError(t, err)
	names := map[string]Reason{}
	for _, r := range Reasons() {
		names[r.String()] = r
	}
	var vs []invalidVector
	for _, path := range paths {
		name := filepath.Base(path)
		m := invalidName.FindStringSubmatch(name)
		require.NotNil(t, m, "%s: name must start with <reason>--", name)
		reason, ok := names[m[1]]
		require.True(t, ok, "%s: unknown reason %q", name, m[1])
		vs = append(vs, invalidVector{name: name, payload: readVector(t, path), reason: reason})
	}
	require.NotEmpty(t, vs)
	return vs
}

func TestDecodeValidVectors(t *testing.T) {
	for _, v := range validVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			got, enc, err := Decode(v.payload, testNow, DefaultLimits())
			require.NoError(t, err)
			require.Equal(t, Encoding{Format: v.format}, enc)
			require.Equal(t, v.want, got)

			// The batch survives every encoding: JSON, CBOR, with and
			// without zstd, all decode to the identical Batch.
			for _, enc := range allEncodings {
				payload, err := Encode(got.Pack(), enc)
				require.NoError(t, err, enc)
				again, gotEnc, err := Decode(payload, testNow, DefaultLimits())
				require.NoError(t, err, enc)
				require.Equal(t, enc, gotEnc)
				require.Equal(t, v.want, again, enc)
			}
		})
	}
}

func TestDecodeInvalidVectors(t *testing.T) {
	for _, v := range invalidVectors(t) {
		t.Run(v.name, func(t *testing.T) {
			_, _, err := Decode(v.payload, testNow, DefaultLimits())
			require.Error(t, err)
			var pe *Error
			require.ErrorAs(t, err, &pe)
			require.Equal(t, v.reason, pe.Reason, "error: %v", err)
			require.True(t, strings.HasPrefix(err.Error(), v.reason.String()+": "), err.Error())
		})
	}
}

// Resolved data (§5.1.4) and the pack it resolves (§5.1.3) agree.
func TestRFC8428ResolvedDataMatches(t *testing.T) {
	packed, _, err := Decode(readVector(t, "testdata/valid/rfc8428-5.1.3-multiple-measurements.json"), testNow, DefaultLimits())
	require.NoError(t, err)
	resolved, _, err := Decode(readVector(t, "testdata/valid/rfc8428-5.1.4-resolved-data.json"), testNow, DefaultLimits())
	require.NoError(t, err)
	require.Equal(t, resolved, packed)
}

var allEncodings = []Encoding{
	{Format: FormatCBOR},
	{Format: FormatJSON},
	{Format: FormatCBOR, Compressed: true},
	{Format: FormatJSON, Compressed: true},
}
