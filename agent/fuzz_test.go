package agent

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// go test ./agent -run TestWriteFuzzCorpus -args -update-fuzz-corpus rewrites the seed
// corpora under testdata/fuzz.
var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite testdata/fuzz from the seeds")

// remoteConfigSeeds are desired configuration documents: the keys the agent takes, the
// ones it refuses, and documents of the wrong shape.
var remoteConfigSeeds = map[string]string{
	"settable":   `{"schedule":{"interval":"30s","jitter":"0s","max_batches_per_cycle":3},"batch":{"max_records":200,"max_bytes":8192,"min_window":"1s","max_window":"2m","slow_link":"5s"},"health":{"interval":"0s"},"log":{"level":"debug"},"uplink":{"keepalive":"25s"}}`,
	"local-only": `{"tls":{"cert_file":"/tmp/evil.crt"},"uplink":{"zone":"evil.example"},"spool":{"dir":"/"},"sources":{"exec":[{"name":"x","command":"/bin/sh"}],"system":{"proc_root":"/"}},"commands":{"allow_shell":true}}`,
	"unknown":    `{"schedul":{"interval":"1s"},"schedule":{"intervall":"1s"},"firmware":"2.0"}`,
	"bad-values": `{"schedule":{"interval":"soon","jitter":5,"max_batches_per_cycle":"many"},"log":{"level":"loud"},"uplink":{"keepalive":"1500ms"}}`,
	"cross":      `{"batch":{"min_window":"20m"}}`,
	"nulls":      `{"schedule":{"interval":null},"batch":null,"sources":{"system":null}}`,
	"system":     `{"sources":{"system":{"collectors":["uptime","gpu"],"interval":"10ms","mount_points":["/data","relative"],"interfaces":["eth*",""]}}}`,
	"aggregate":  `{"sources":{"aggregate":[{"metric":"a","window":"1m","functions":["mean","median"]},{"metric":"b","window":"10ms","every":"1s"}]}}`,
	"shapes":     `{"schedule":"fast","sources":[1],"log":{"level":["debug"]}}`,
	"yaml-ish":   `{"log":{"level":"!!binary aGk="},"schedule":{"interval":"&a 5s"}}`,
	"escapes":    `{"log":{"level":"d\u0065bug"},"sources":{"aggregate":[{"metric":"t\/x","window":"1m"}]}}`,
	"empty":      `{}`,
	"null":       `null`,
}

// FuzzRemoteConfig lays any JSON document over a valid local configuration, as the agent
// does with the server's desired configuration: it never panics, never changes the local
// configuration, always yields a valid one, applies only keys the server may set, and
// reports every key it does not apply.
func FuzzRemoteConfig(f *testing.F) {
	for _, s := range remoteConfigSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		if len(doc) > protocol.MaxChannelMessage {
			return
		}
		local, before := overlayLocal(), overlayLocal()
		ov := overlayRemote(local, doc, true)
		require.Equal(t, before, local)
		require.NoError(t, ov.cfg.Validate())
		for k := range ov.applied {
			require.True(t, k == remoteSystem || slices.Contains(remoteLeaves, k), "applied %q", k)
			_, refused := ov.refused[k]
			require.False(t, refused, "%q both applied and refused", k)
		}
		if _, err := json.Marshal(ov.refused); err != nil {
			t.Fatal(err)
		}
		var rc protocol.ReportedConfig
		rc.Version, rc.Refused = 1, ov.refused
		if len(ov.applied) > 0 {
			rc.Applied = nestKeys(ov.applied)
		}
		b, err := json.Marshal(rc)
		require.NoError(t, err)
		if len(b) <= protocol.MaxChannelMessage {
			_, err = protocol.DecodeReportedConfig(b)
			require.NoError(t, err, "the server takes the report: %s", b)
		}
	})
}

// mailboxSeeds are mailboxes as an HTTPS device gets them, and ways they go wrong.
var mailboxSeeds = map[string]string{
	"full":          `{"commands":[{"id":"c-1","name":"diag.spool","expires_at":"2026-12-04T10:00:00Z"},{"id":"c-2","name":"shell.exec","args":{"command":"uptime"},"expires_at":"2026-12-04T10:00:00Z"}],"config":{"version":7,"config":{"log":{"level":"debug"}}}}`,
	"empty":         `{"commands":[]}`,
	"null-config":   `{"commands":null,"config":null}`,
	"bad-command":   `{"commands":[{"id":"c-1","args":{}},{"id":"C/2","name":"x"},{"name":"x"},7]}`,
	"bad-config":    `{"commands":[],"config":{"version":1,"config":[1]}}`,
	"not-object":    `[{"id":"c-1","name":"x"}]`,
	"trailing":      `{"commands":[]}{}`,
	"commands-dict": `{"commands":{"c-1":{"id":"c-1","name":"x"}}}`,
}

// FuzzDecodeMailbox: whatever the mailbox holds, decodeMailbox never panics, refuses with
// ErrChannelMessage, returns only commands DecodeCommand takes and names only valid IDs of
// commands it could not read.
func FuzzDecodeMailbox(f *testing.F) {
	for _, s := range mailboxSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, bad, cfg, err := decodeMailbox(b)
		if err != nil {
			require.True(t, errors.Is(err, protocol.ErrChannelMessage), "%v", err)
		}
		for _, c := range cmds {
			again, err := json.Marshal(c)
			require.NoError(t, err)
			_, err = protocol.DecodeCommand(again)
			require.NoError(t, err)
		}
		for id, e := range bad {
			require.NoError(t, protocol.ValidateMessageID(id))
			require.ErrorIs(t, e, protocol.ErrChannelMessage)
		}
		if cfg != nil {
			var obj map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(cfg.Config, &obj))
		}
	})
}

func TestDecodeMailbox(t *testing.T) {
	cmds, bad, cfg, err := decodeMailbox([]byte(mailboxSeeds["full"]))
	require.NoError(t, err)
	require.Len(t, cmds, 2)
	require.Equal(t, "uptime", cmds[1].Args["command"])
	require.Empty(t, bad)
	require.Equal(t, int64(7), cfg.Version)

	cmds, bad, cfg, err = decodeMailbox([]byte(mailboxSeeds["bad-command"]))
	require.NoError(t, err)
	require.Empty(t, cmds)
	require.Len(t, bad, 1, "only c-1 has an ID to answer")
	require.ErrorContains(t, bad["c-1"], "has no name")
	require.Nil(t, cfg)

	_, _, _, err = decodeMailbox([]byte(mailboxSeeds["bad-config"]))
	require.ErrorIs(t, err, protocol.ErrChannelMessage)
	_, _, _, err = decodeMailbox([]byte(mailboxSeeds["trailing"]))
	require.ErrorContains(t, err, "data after the JSON object")
}

func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	for target, seeds := range map[string]map[string]string{"FuzzRemoteConfig": remoteConfigSeeds, "FuzzDecodeMailbox": mailboxSeeds} {
		dir := filepath.Join("testdata", "fuzz", target)
		require.NoError(t, os.RemoveAll(dir))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
		}
	}
}

func TestFuzzCorpusPresent(t *testing.T) {
	for _, target := range []string{"FuzzRemoteConfig", "FuzzDecodeMailbox"} {
		entries, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		require.NoError(t, err, "run go test ./agent -run TestWriteFuzzCorpus -args -update-fuzz-corpus")
		require.NotEmpty(t, entries, target)
	}
}
