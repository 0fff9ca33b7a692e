package millwrightcli

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
)

// FuzzReadConfigDocument: config set --file reads an operator's file. Whatever it holds, the
// reader answers without panicking, and what it accepts is the same JSON object, compacted,
// within the size a layer may have.
func FuzzReadConfigDocument(f *testing.F) {
	for _, seed := range []string{
		`{"schedule": {"interval": "30s", "jitter": "5s"}, "log": {"level": "debug"}}`,
		"{\n  \"schedule\": {\"interval\": 30s}\n}",
		`[{"schedule": {}}]`,
		`null`,
		`{"sources": {"system": {"mount_points": ["/", "/data"]}}, "schedule": {"jitter": null}}`,
		"{\"log\": {\"level\": \"\u00e9\"}}\n\n{",
		``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		doc, err := readConfigDocument("-", bytes.NewReader(b))
		if err != nil {
			require.Contains(t, err.Error(), "standard input")
			return
		}
		require.LessOrEqual(t, len(doc), apitypes.MaxConfigDocument)
		var got, want map[string]any
		require.NoError(t, json.Unmarshal(doc, &got))
		require.NoError(t, json.Unmarshal(b, &want))
		require.Equal(t, want, got)
		var compact bytes.Buffer
		require.NoError(t, json.Compact(&compact, doc))
		require.Equal(t, compact.String(), string(doc))
	})
}

// TestPosition: a JSON error's byte offset is shown as a line and column, in characters.
func TestPosition(t *testing.T) {
	for _, tc := range []struct {
		in        string
		offset    int64
		line, col int
	}{
		{"{x", 2, 1, 2},
		{"{\n  \"a\": 30s\n}", 12, 2, 10},
		{"{\"é\": x", 8, 1, 7},
		{"", 5, 1, 1},
		{"{}", -1, 1, 1},
	} {
		line, col := position([]byte(tc.in), tc.offset)
		require.Equal(t, [2]int{tc.line, tc.col}, [2]int{line, col}, "%q at %d", tc.in, tc.offset)
	}
}
