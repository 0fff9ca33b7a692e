package millwrightcli

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/rollout"
	"github.com/millwright/millwright/internal/server"
)

// rolloutPlan is the plan of the simulated rollouts: a canary of a fifth of the fleet soaks
// 25 s, then everyone; the devices start their downloads within 2 s of the offer; an update is
// done after 2 s on the new version; one gate, the drops
// per device-hour, with a minimum exposure scaled to seconds-long soaks.
const rolloutPlan = `
phases:
  - {name: canary, percent: 20, soak: 25s}
  - {name: complete, percent: 100}
confirm: 2s
deadline: 2m
download_window: 2s
gates:
  - {name: drops, query: 'increase(millwright_device_disconnects_total{cause=~"keepalive_timeout|reset|protocol_error"}[$window])', min_exposure: 0.02}
  - {name: update_failures, outcome: failures, max: 0.05}
`

// simRollout starts a server stepping rollouts every second, uploads releases 2.0.3 and 2.1.0
// of gw-100 signed with a key made here, runs a simulated fleet of 40 devices on 2.0.3 that
// trust that key (profile gives the firmware's behaviour), and creates a rollout of 2.1.0.
func simRollout(t *testing.T, firmware string) (*simServer, *cliAgainst, <-chan struct{}) {
	s := startSimServerWith(t, func(o *server.Options) {
		o.Monitor.Interval = time.Second
		o.RolloutInterval = time.Second
	})
	cli := newCLI(t, s.srv)
	keys := cli.uploadReleases("gw-100", 200_000, "2.0.3", "2.1.0")
	profile := filepath.Join(t.TempDir(), "fleet.yml")
	require.NoError(t, os.WriteFile(profile, []byte("profiles:\n  - {name: gw, firmware_version: 2.0.3, network_operator: op-a, hardware_model: gw-100}\n"+firmware), 0o644))
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr := run("sim", "--json", "--log-level", "warn", "--server", s.srv.MQTTAddr().String(), "--data", s.dir,
			"--api-server", s.api(), "--est-server", s.api(), "--firmware-key", filepath.Join(keys, "firmware.pub"),
			"--devices", "40", "--id-prefix", "ro", "--profile", profile,
			"--interval", "2s", "--jitter", "0s", "--sample-interval", "1s", "--backoff-base", "100ms", "--duration", "75s")
		if code != 0 {
			t.Errorf("sim: %s", stderr)
		}
	}()
	t.Cleanup(func() { <-done })
	// Every device connected once and reported its firmware before the rollout starts.
	require.Eventually(t, func() bool {
		v := s.query(t, `count(millwright_device_info{firmware="2.0.3"})`, time.Now())
		return len(v) == 1 && v[0].Value[1] == "40"
	}, 30*time.Second, 200*time.Millisecond)
	plan := filepath.Join(t.TempDir(), "plan.yml")
	require.NoError(t, os.WriteFile(plan, []byte(rolloutPlan), 0o644))
	cli.ok("rollouts", "create", "--version", "2.1.0", "--plan", plan, "--model", "gw-100", "--id", "sim-210")
	return s, cli, done
}

// TestSimRollout is the acceptance run of docs/rollouts.md on a simulated fleet of real
// agents: a release whose devices drop their connection every 3 s halts in its canary phase
// on the drops gate, with the evidence, and the rest of the fleet is never offered it; the
// same release without the fault reaches every device, each updated through the agent's
// signed OTA (verify, resumable download, install, restart) and confirmed.
func TestSimRollout(t *testing.T) {
	t.Run("faulty", func(t *testing.T) {
		t.Parallel()
		_, cli, _ := simRollout(t, "firmware:\n  - {version: 2.1.0, drop_interval: 3s}\n")
		var st rollout.Status
		require.Eventually(t, func() bool {
			st = rollout.Status{}
			decodeStrict(t, cli.ok("rollouts", "show", "sim-210", "-o", "json"), &st)
			return st.State != "running"
		}, 45*time.Second, time.Second)
		require.Equal(t, "halted", st.State, "%+v", st.Gates)
		require.Equal(t, "canary", st.PhaseName)
		require.Contains(t, st.HaltReason, "drops:")
		require.NotEmpty(t, st.HaltEvidence)
		require.Equal(t, 8, st.Phases[0].Placed, "a fifth of 40 devices")
		require.Equal(t, 8, st.Devices, "no device beyond the canary is offered the release")
		t.Logf("halted: %s", st.HaltReason)
	})
	t.Run("healthy", func(t *testing.T) {
		t.Parallel()
		_, cli, _ := simRollout(t, "")
		var st rollout.Status
		require.Eventually(t, func() bool {
			st = rollout.Status{}
			decodeStrict(t, cli.ok("rollouts", "show", "sim-210", "-o", "json"), &st)
			return st.State != "running"
		}, 70*time.Second, time.Second, "%+v\n%s", &st, cli.ok("rollouts", "devices", "sim-210"))
		require.Equal(t, "completed", st.State, "%+v", st)
		require.Equal(t, map[string]int{"succeeded": 40}, st.Counts)
		out := cli.ok("devices", "updates", "ro-1")
		require.Contains(t, out, "succeeded")
	})
}

// BenchmarkSimRolloutSeeds repeats the acceptance run over 20 seeds, each against its own
// server and simulated fleet of 80 real agents: 40 or so gw-100 devices are offered 2.1.0,
// whose firmware drops its connection three times as often as 2.0.3 does (every 3 s on
// average on top of the network's every 6 s, both exponential); the gw-200 devices are
// offered 3.1.0, as healthy as 3.0.3. Both rollouts run the plan of TestSimRollout, with a
// 40 s canary soak, at once. It
// reports the false halts (the healthy rollout halted), the missed halts (the faulty one
// completed), the faulty halts outside the canary, the healthy rollouts whose every device
// did not succeed, and the seeds where a rollout was still running after 80 s (a loaded
// machine updates slowly). docs/benchmarks.md has the numbers and the command:
//
//	go test -run '^$' -bench SimRolloutSeeds -benchtime 1x -timeout 60m ./internal/millwrightcli/
func BenchmarkSimRolloutSeeds(b *testing.B) {
	const seeds = 20
	var ran, unfinished, falseHalts, missedHalts, lateHalts, incomplete int
	var haltAfter []time.Duration
	for seed := 1; seed <= seeds; seed++ {
		b.Run(fmt.Sprintf("seed=%d", seed), func(b *testing.B) {
			o := simRolloutPair(b, seed)
			ran++
			if o.healthy.State == "running" || o.faulty.State == "running" {
				unfinished++
			}
			if o.healthy.State == "halted" {
				falseHalts++
			}
			if o.faulty.State == "completed" {
				missedHalts++
			}
			if o.faulty.State == "halted" {
				haltAfter = append(haltAfter, o.haltAfter)
				if o.faulty.PhaseName != "canary" {
					lateHalts++
				}
			}
			if o.healthy.State == "completed" && o.healthy.Counts["succeeded"] != o.healthy.Devices {
				incomplete++
			}
			b.Logf("seed %d: healthy %s %v; faulty %s in %s after %v: %s", seed, o.healthy.State, o.healthy.Counts,
				o.faulty.State, o.faulty.PhaseName, o.haltAfter.Round(time.Second), o.faulty.HaltReason)
		})
	}
	slices.Sort(haltAfter)
	b.Logf("%d seeds ran, %d with a rollout still running after 80 s: %d false halts, %d missed halts, %d faulty halts after the canary, %d healthy rollouts incomplete; faulty halted after %v (median)",
		ran, unfinished, falseHalts, missedHalts, lateHalts, incomplete, median(haltAfter))
	b.ReportMetric(float64(falseHalts), "false-halts")
	b.ReportMetric(float64(missedHalts), "missed-halts")
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[len(d)/2]
}

// pairOutcome is how the two rollouts of one seed ended.
type pairOutcome struct {
	healthy, faulty rollout.Status
	// haltAfter is the time from the faulty rollout's creation to its halt.
	haltAfter time.Duration
}

// simRolloutPair runs one seed of BenchmarkSimRolloutSeeds.
func simRolloutPair(b *testing.B, seed int) pairOutcome {
	s := startSimServerWith(b, func(o *server.Options) {
		o.Monitor.Interval = time.Second
		o.RolloutInterval = time.Second
	})
	cli := newCLI(b, s.srv)
	keys := b.TempDir()
	code, _, stderr := runIn("", "firmware", "keygen", "--out", keys)
	require.Zero(b, code, stderr)
	for _, r := range [][2]string{{"2.0.3", "gw-100"}, {"2.1.0", "gw-100"}, {"3.0.3", "gw-200"}, {"3.1.0", "gw-200"}} {
		img := filepath.Join(b.TempDir(), r[0]+".img")
		data := make([]byte, 100_000)
		_, _ = rand.Read(data)
		require.NoError(b, os.WriteFile(img, data, 0o600))
		cli.ok("firmware", "upload", "--key", filepath.Join(keys, "firmware.key"), "--version", r[0], "--model", r[1], img)
	}
	profile := filepath.Join(b.TempDir(), "fleet.yml")
	require.NoError(b, os.WriteFile(profile, []byte(`profiles:
  - {name: a, firmware_version: 2.0.3, network_operator: op-a, hardware_model: gw-100, network: {drop_interval: 6s}}
  - {name: b, firmware_version: 3.0.3, network_operator: op-a, hardware_model: gw-200, network: {drop_interval: 6s}}
firmware:
  - {version: 2.1.0, drop_interval: 3s}
`), 0o644))
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr := run("sim", "--json", "--log-level", "warn", "--server", s.srv.MQTTAddr().String(), "--data", s.dir,
			"--api-server", s.api(), "--est-server", s.api(), "--firmware-key", filepath.Join(keys, "firmware.pub"),
			"--devices", "80", "--id-prefix", "ro", "--profile", profile, "--seed", strconv.Itoa(seed),
			"--interval", "2s", "--jitter", "0s", "--sample-interval", "1s", "--backoff-base", "100ms", "--duration", "100s")
		if code != 0 {
			b.Errorf("sim: %s", stderr)
		}
	}()
	b.Cleanup(func() { <-done })
	require.Eventually(b, func() bool {
		v := s.query(b, `count(millwright_device_info{firmware=~"2.0.3|3.0.3"})`, time.Now())
		return len(v) == 1 && v[0].Value[1] == "80"
	}, 90*time.Second, 200*time.Millisecond, "the fleet did not connect (a loaded machine connects 80 agents slowly)")
	plan := filepath.Join(b.TempDir(), "plan.yml")
	require.NoError(b, os.WriteFile(plan, []byte(strings.Replace(rolloutPlan, "soak: 25s", "soak: 40s", 1)), 0o644))
	start := time.Now()
	cli.ok("rollouts", "create", "--version", "2.1.0", "--plan", plan, "--select", "model=gw-100", "--id", "faulty")
	cli.ok("rollouts", "create", "--version", "3.1.0", "--plan", plan, "--select", "model=gw-200", "--id", "healthy")
	// Both rollouts are followed until neither is running, for at most 80 s; one still
	// running then is reported as unfinished, not as an outcome.
	var o pairOutcome
	for deadline := time.Now().Add(80 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		o.healthy, o.faulty = rollout.Status{}, rollout.Status{}
		decodeStrict(b, cli.ok("rollouts", "show", "faulty", "-o", "json"), &o.faulty)
		if o.faulty.State == "halted" && o.haltAfter == 0 {
			o.haltAfter = time.Since(start)
		}
		decodeStrict(b, cli.ok("rollouts", "show", "healthy", "-o", "json"), &o.healthy)
		if o.faulty.State != "running" && o.healthy.State != "running" {
			break
		}
	}
	return o
}
