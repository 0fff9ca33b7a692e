package millwrightcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestListsSayWhenMoreFollow: an empty list is [] in JSON, never null; a list cut at its
// limit says how to get the rest (after a table on standard output, after JSON on standard
// error, so the JSON stays one value); --all follows every page.
func TestListsSayWhenMoreFollow(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	for _, args := range [][]string{{"devices", "list"}, {"devices", "list", "--state", "online"}, {"operators", "list"}, {"config", "layers"}} {
		code, out, stderr := cli.run("", append(args, "-o", "json")...)
		require.Zero(t, code, stderr)
		require.Equal(t, "[]", strings.TrimSpace(out), "%v", args)
	}

	devs := make([]registry.DeviceImport, 5)
	for i := range devs {
		devs[i] = registry.DeviceImport{ID: fmt.Sprintf("gw-%d", i), Model: "m-200", LastSeen: time.Now()}
	}
	_, err := srv.Registry().ImportDevices(context.Background(), devs, "test", "")
	require.NoError(t, err)
	for i := range 3 {
		_, err := srv.Registry().RecordFeedback(context.Background(), registry.Feedback{Device: "gw-1", Kind: "incident"}, "test", "")
		require.NoError(t, err, i)
	}

	out := cli.ok("devices", "list", "--limit", "2")
	require.Contains(t, out, "gw-1")
	require.NotContains(t, out, "gw-2")
	require.Contains(t, out, "more: more devices follow: --all lists every page")
	out = cli.ok("devices", "list", "--limit", "2", "--all")
	require.Contains(t, out, "gw-4")
	require.NotContains(t, out, "more:")
	code, out, stderr := cli.run("", "devices", "list", "--limit", "2", "-o", "json")
	require.Zero(t, code)
	require.Contains(t, stderr, "more: more devices follow")
	var listed []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &listed), out)
	require.Len(t, listed, 2)

	out = cli.ok("feedback", "list", "--limit", "2")
	require.Regexp(t, `more: --before \d+`, out)
	require.NotContains(t, cli.ok("feedback", "list", "--limit", "4"), "more:")
}
