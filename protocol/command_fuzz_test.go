package protocol

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The server → device messages of the device channel are outside input for the device: a
// device decodes whatever arrives on its command and configuration topics, or in its
// mailbox, with DecodeCommand and DecodeDesiredConfig. Each must refuse with
// ErrChannelMessage or accept a value that survives its own encoding. Seed corpora are in
// testdata/fuzz/<target>, written by TestWriteChannelFuzzCorpus.

// commandSeeds are commands as the server sends them, and ways they go wrong.
var commandSeeds = map[string]string{
	"connectivity":   `{"id":"c-18f3a2b4c5d-9f2e","name":"diag.connectivity","args":{"host":"example"},"expires_at":"2026-12-04T10:00:00Z"}`,
	"shell":          `{"id":"m-1a2b-3c","name":"shell.exec","args":{"command":"uptime; df -h /"},"expires_at":"2026-12-04T10:00:00.123456789+01:00"}`,
	"no-args":        `{"id":"a","name":"diag.spool","expires_at":"2026-12-04T10:00:00Z"}`,
	"no-expiry":      `{"id":"a","name":"diag.spool"}`,
	"empty-id":       `{"id":"","name":"diag.spool"}`,
	"upper-id":       `{"id":"C-1","name":"diag.spool"}`,
	"slash-id":       `{"id":"c/1","name":"diag.spool"}`,
	"long-id":        `{"id":"` + strings.Repeat("a", MaxMessageIDLen+1) + `","name":"x"}`,
	"no-name":        `{"id":"c-1","args":{}}`,
	"args-not-map":   `{"id":"c-1","name":"x","args":["a"]}`,
	"arg-not-string": `{"id":"c-1","name":"x","args":{"lines":5}}`,
	"bad-time":       `{"id":"c-1","name":"x","expires_at":"tomorrow"}`,
	"trailing":       `{"id":"c-1","name":"x"} {}`,
	"array":          `[{"id":"c-1","name":"x"}]`,
	"null":           `null`,
	"unknown-field":  `{"id":"c-1","name":"x","priority":9}`,
}

// desiredSeeds are desired configurations as the server sends them, and ways they go wrong.
var desiredSeeds = map[string]string{
	"doc":           `{"version":7,"config":{"schedule":{"interval":"30s"},"log":{"level":"debug"}}}`,
	"empty":         `{"version":2,"config":{}}`,
	"system-off":    `{"version":3,"config":{"sources":{"system":null}}}`,
	"aggregate":     `{"version":4,"config":{"sources":{"aggregate":[{"metric":"t_*","window":"1m","functions":["mean"]}]}}}`,
	"local-only":    `{"version":5,"config":{"tls":{"cert_file":"/tmp/x"},"spool":{"dir":"/"}}}`,
	"null-config":   `{"version":1,"config":null}`,
	"no-config":     `{"version":1}`,
	"array-config":  `{"version":1,"config":[1,2]}`,
	"string-config": `{"version":1,"config":"x"}`,
	"negative":      `{"version":-1,"config":{}}`,
	"huge-version":  `{"version":99999999999999999999,"config":{}}`,
	"float-version": `{"version":1.5,"config":{}}`,
	"trailing":      `{"version":1,"config":{}}x`,
	"deep":          `{"version":1,"config":` + strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat(`}`, 200) + `}`,
}

func FuzzDecodeCommand(f *testing.F) {
	for _, s := range commandSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			require.ErrorIs(t, err, ErrChannelMessage)
			return
		}
		require.NoError(t, ValidateMessageID(c.ID))
		require.NotEmpty(t, c.Name)
		again, err := json.Marshal(c)
		require.NoError(t, err)
		c2, err := DecodeCommand(again)
		require.NoError(t, err, "%s", again)
		require.Equal(t, c.ID, c2.ID)
		require.Equal(t, c.Name, c2.Name)
		require.Equal(t, len(c.Args), len(c2.Args))
		for k, v := range c.Args {
			require.Equal(t, v, c2.Args[k])
		}
		require.True(t, c.ExpiresAt.Equal(c2.ExpiresAt), "%v != %v", c.ExpiresAt, c2.ExpiresAt)
	})
}

func FuzzDecodeDesiredConfig(f *testing.F) {
	for _, s := range desiredSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeDesiredConfig(b)
		if err != nil {
			require.ErrorIs(t, err, ErrChannelMessage)
			return
		}
		again, err := json.Marshal(c)
		require.NoError(t, err)
		c2, err := DecodeDesiredConfig(again)
		require.NoError(t, err, "%s", again)
		require.Equal(t, c.Version, c2.Version)
		require.JSONEq(t, string(c.Config), string(c2.Config))
	})
}

func TestWriteChannelFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	for target, seeds := range map[string]map[string]string{"FuzzDecodeCommand": commandSeeds, "FuzzDecodeDesiredConfig": desiredSeeds} {
		bs := make(map[string][]byte, len(seeds))
		for name, seed := range seeds {
			bs[name] = []byte(seed)
		}
		writeSeedCorpus(t, target, bs)
	}
}

func TestChannelFuzzCorpusPresent(t *testing.T) {
	for _, target := range []string{"FuzzDecodeCommand", "FuzzDecodeDesiredConfig"} {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		require.NoError(t, err, "run go test ./protocol -run TestWriteChannelFuzzCorpus -args -update-fuzz-corpus")
		require.NotEmpty(t, entries, target)
	}
}
