package millwrightcli

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/rollout"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestRolloutsCLI drives millwright rollouts against a real server: two releases uploaded and
// signed here, a plan file, a rollout created, its first phase offered through the mailbox,
// paused (a second pause refused), resumed, aborted (its offers withdrawn), listed; a second
// rollout refused while the first runs, a release missing from the archive refused, a bad
// plan refused with the key at fault; a device's update history.
func TestRolloutsCLI(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	ctx := context.Background()
	cli.uploadReleases("gw-200", 1000, "1.0.0", "1.1.0")
	devs := make([]registry.DeviceImport, 40)
	for i := range devs {
		devs[i] = registry.DeviceImport{ID: fmt.Sprintf("gw-%03d", i), Model: "gw-200", Firmware: "1.0.0", LastSeen: time.Now()}
	}
	_, err := srv.Registry().ImportDevices(ctx, devs, "test", "")
	require.NoError(t, err)

	planFile := filepath.Join(t.TempDir(), "plan.yml")
	require.NoError(t, os.WriteFile(planFile, []byte("phases:\n  - {name: canary, percent: 10, soak: 1h}\n  - {name: complete, percent: 100}\ngates: []\n"), 0o600))
	badPlan := filepath.Join(t.TempDir(), "bad.yml")
	require.NoError(t, os.WriteFile(badPlan, []byte("phases:\n  - {name: canary, percent: 10, sok: 1h}\n"), 0o600))
	code, _, stderr := cli.run("", "rollouts", "create", "--version", "1.1.0", "--plan", badPlan)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "sok")
	code, _, stderr = cli.run("", "rollouts", "create", "--version", "9.9.9", "--plan", planFile)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no artifact of it")

	var st rollout.Status
	decodeStrict(t, cli.ok("rollouts", "create", "--version", "1.1.0", "--plan", planFile, "--select", "model=gw-200", "--id", "r-110", "-o", "json"), &st)
	require.Equal(t, "r-110", st.ID)
	require.Equal(t, "running", st.State)
	require.Equal(t, "custom", st.Plan)
	require.Equal(t, []string{"gw-200"}, st.Scope.Models)
	require.Len(t, st.Phases, 2)
	code, _, stderr = cli.run("", "rollouts", "create", "--version", "1.1.0", "--plan", planFile)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "rollout r-110")

	require.NoError(t, srv.Rollouts().Step(ctx))
	decodeStrict(t, cli.ok("rollouts", "show", "r-110", "-o", "json"), &st)
	require.Equal(t, map[string]int{"offered": 4}, st.Counts, "10 %% of 40 devices offered")
	require.Equal(t, 4, st.Phases[0].Cohort)
	var devices api.RolloutDevices
	decodeStrict(t, cli.ok("rollouts", "devices", "r-110", "--state", "offered", "-o", "json"), &devices)
	require.Len(t, devices.Devices, 4)
	offered := devices.Devices[0]
	require.Equal(t, "1.0.0", offered.From)
	require.Equal(t, "1.1.0", offered.Target)
	msg, err := srv.Registry().Message(ctx, offered.Command)
	require.NoError(t, err)
	require.Equal(t, "firmware.update", msg.Name)
	require.Contains(t, msg.Args["path"], "/device/v1/firmware/")

	out := cli.ok("rollouts", "show", "r-110")
	require.Contains(t, out, "rollout r-110: release 1.1.0, plan custom, running")
	require.Contains(t, out, "devices 4: offered 4")
	decodeStrict(t, cli.ok("rollouts", "pause", "r-110", "-o", "json"), &st)
	require.Equal(t, "paused", st.State)
	code, _, stderr = cli.run("", "rollouts", "pause", "r-110")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "is paused, not running")
	decodeStrict(t, cli.ok("rollouts", "resume", "r-110", "-o", "json"), &st)
	require.Equal(t, "running", st.State)
	decodeStrict(t, cli.ok("rollouts", "abort", "r-110", "-o", "json"), &st)
	require.Equal(t, "aborted", st.State)
	msg, err = srv.Registry().Message(ctx, offered.Command)
	require.NoError(t, err)
	require.Equal(t, registry.MessageSuperseded, msg.State, "an aborted rollout withdraws its offers")

	// Without -o json, create prints the new rollout's ID alone, for scripts. --select takes
	// model=, group=, operator= and tags.
	code, _, stderr = cli.run("", "rollouts", "create", "--version", "1.1.0", "--select", "nokey")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `--select "nokey": want key=value`)
	id := strings.TrimSpace(cli.ok("rollouts", "create", "--version", "1.1.0", "--plan", planFile, "--select", "model=gw-200", "--select", "site=north", "--select", "group=line-1"))
	require.NotEmpty(t, id)
	require.NotContains(t, id, "\n")
	decodeStrict(t, cli.ok("rollouts", "show", id, "-o", "json"), &st)
	require.Equal(t, []string{"gw-200"}, st.Scope.Models)
	require.Equal(t, []string{"site=north"}, st.Scope.Tags)
	require.Equal(t, []string{"line-1"}, st.Scope.Groups)
	decodeStrict(t, cli.ok("rollouts", "abort", id, "-o", "json"), &st)

	var list api.RolloutList
	decodeStrict(t, cli.ok("rollouts", "list", "-o", "json"), &list)
	require.Len(t, list.Rollouts, 2)
	require.Contains(t, cli.ok("rollouts", "list"), "r-110")
	var hist api.UpdateHistory
	decodeStrict(t, cli.ok("devices", "updates", offered.Device, "-o", "json"), &hist)
	require.Len(t, hist.Events, 1)
	require.Equal(t, "offered", hist.Events[0].Event)
	require.Contains(t, cli.ok("devices", "updates", offered.Device), "r-110")

	audit, err := srv.Registry().ListAudit(ctx, 100, 0)
	require.NoError(t, err)
	var actions []string
	for _, a := range audit {
		if a.Target == "r-110" {
			actions = append(actions, a.Action)
		}
	}
	require.Subset(t, actions, []string{"rollout.create", "rollout.pause", "rollout.resume", "rollout.abort"})
}

// uploadReleases makes a firmware signing key pair and uploads, signed with it, a random image
// of size bytes for model at each version; it returns the keys' directory (firmware.key,
// firmware.pub).
func (c *cliAgainst) uploadReleases(model string, size int, versions ...string) string {
	c.t.Helper()
	keys := c.t.TempDir()
	code, _, stderr := runIn("", "firmware", "keygen", "--out", keys)
	require.Zero(c.t, code, stderr)
	for _, v := range versions {
		img := filepath.Join(c.t.TempDir(), v+".img")
		b := make([]byte, size)
		_, _ = rand.Read(b)
		require.NoError(c.t, os.WriteFile(img, b, 0o600))
		c.ok("firmware", "upload", "--key", filepath.Join(keys, "firmware.key"), "--version", v, "--model", model, img)
	}
	return keys
}
