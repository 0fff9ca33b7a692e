package millwrightcli

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestFeedbackCLI records feedback against devices through a real server: kept with the
// firmware each device runs, listed and filtered, counted per firmware version, counted in the
// device's series millwright_device_feedback_total (which rollouts' feedback gate reads);
// unknown devices and bad kinds refused; viewers may read but not record.
func TestFeedbackCLI(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	ctx := context.Background()
	_, err := srv.Registry().ImportDevices(ctx, []registry.DeviceImport{
		{ID: "gw-1", Model: "gw-200", Firmware: "2.0.3", LastSeen: time.Now()},
		{ID: "gw-2", Model: "gw-200", Firmware: "2.1.0", LastSeen: time.Now()},
	}, "test", "")
	require.NoError(t, err)

	out := cli.ok("feedback", "add", "gw-2", "--kind", "crash", "--severity", "critical", "--message", "watchdog reset", "--source", "crashdump")
	require.Contains(t, out, "critical crash on gw-2 (firmware 2.1.0)")
	var f registry.Feedback
	decodeStrict(t, cli.ok("feedback", "add", "gw-2", "--kind", "incident", "-o", "json"), &f)
	require.Equal(t, "2.1.0", f.Firmware)
	require.Equal(t, "warning", f.Severity)
	cli.ok("feedback", "add", "gw-1", "--kind", "feedback", "--severity", "info", "--message", "fine", "--at", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))

	code, _, stderr := cli.run("", "feedback", "add", "nobody", "--kind", "crash")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "device nobody")
	code, _, stderr = cli.run("", "feedback", "add", "gw-1", "--kind", "rumour")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `kind "rumour" is not one of feedback, incident, crash`)
	code, _, stderr = cli.run("", "feedback", "add", "gw-1", "--kind", "crash", "--at", "yesterday")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `--at "yesterday"`)

	var list api.FeedbackList
	decodeStrict(t, cli.ok("feedback", "list", "--firmware", "2.1.0", "-o", "json"), &list)
	require.Len(t, list.Events, 2)
	require.Equal(t, "incident", list.Events[0].Kind)
	require.Equal(t, "admin via crashdump", list.Events[1].Source)
	decodeStrict(t, cli.ok("feedback", "list", "--device", "nobody", "-o", "json"), &list)
	require.NotNil(t, list.Events)
	require.Empty(t, list.Events)
	require.Contains(t, cli.ok("feedback", "list", "--kind", "feedback"), "fine")

	var sum api.FeedbackSummary
	decodeStrict(t, cli.ok("feedback", "summary", "--since", "1d", "-o", "json"), &sum)
	require.Equal(t, []registry.FeedbackCount{
		{Firmware: "2.0.3", Kind: "feedback", Events: 1, Devices: 1, Fleet: 1},
		{Firmware: "2.1.0", Kind: "crash", Events: 1, Devices: 1, Fleet: 1},
		{Firmware: "2.1.0", Kind: "incident", Events: 1, Devices: 1, Fleet: 1},
	}, sum.Counts)
	require.Contains(t, cli.ok("feedback", "summary"), "2.1.0")
	code, _, stderr = cli.run("", "feedback", "summary", "--since", "-1d")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `"since"`)

	// The device's series, as the rollout gate reads it.
	require.NoError(t, srv.Monitor().Flush(ctx))
	q, err := srv.Store().Engine().NewInstantQuery(ctx, srv.Store().Queryable(), nil, `sum by (device) (millwright_device_feedback_total)`, time.Now())
	require.NoError(t, err)
	res := q.Exec(ctx)
	require.NoError(t, res.Err)
	vec, err := res.Vector()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, s := range vec {
		got[s.Metric.Get("device")] = s.F
	}
	require.Equal(t, map[string]float64{"gw-1": 1, "gw-2": 2}, got)
	q.Close()

	// A viewer reads but does not record.
	var viewer apitypes.OperatorCreated
	decodeStrict(t, cli.ok("operators", "create", "fb-viewer", "--role", "viewer", "-o", "json"), &viewer)
	tokenFile := filepath.Join(t.TempDir(), "viewer.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(viewer.Token), 0o600))
	cli.ok("feedback", "list", "--token-file", tokenFile)
	code, _, stderr = cli.run("", "feedback", "add", "gw-1", "--kind", "crash", "--token-file", tokenFile)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(forbidden)")
}
