package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProfileFixtures(t *testing.T) {
	bad := map[string][]string{
		"unknown-key.bad.yml":      {"profiles[0].netwrok", "unknown key", "line 3", `did you mean "network"`},
		"unknown-nested.bad.yml":   {"profiles[0].network.latncy", "unknown key", "line 4", `did you mean "latency"`},
		"bad-duration.bad.yml":     {"profiles[0].interval", `invalid duration "45 seconds"`, "line 3"},
		"bad-metrics.bad.yml":      {"profiles[0].metrics", `"everything" is not a metric set`},
		"duplicate-name.bad.yml":   {"profiles[1].name", `"a" is already the name of profiles[0]`},
		"zero-weight.bad.yml":      {"profiles", "every weight is 0"},
		"bad-loss.bad.yml":         {"profiles[0].network.loss", "1.5 is not a share"},
		"bad-outage.bad.yml":       {"profiles[0].network.outage.duration", "not between 0 and outage.every"},
		"firmware-no-drop.bad.yml": {"firmware[0].drop_interval", "must be positive"},
		"no-profiles.bad.yml":      {"profiles", "at least one profile"},
		"bad-keepalive.bad.yml":    {"profiles[0].keepalive", "not whole seconds"},
		"repeated-key.bad.yml":     {"profiles[0].name", "given twice", "line 3"},
	}
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(t, err)
	require.Len(t, files, len(bad), "every bad fixture has its expected error")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, ok := bad[filepath.Base(f)]
			require.True(t, ok, "no expected error for %s", f)
			_, err := LoadFile(f)
			require.ErrorIs(t, err, ErrProfile)
			for _, w := range want {
				require.ErrorContains(t, err, w)
			}
		})
	}

	f, err := LoadFile("testdata/fleet.good.yml")
	require.NoError(t, err)
	require.Len(t, f.Profiles, 3)
	p := f.Profiles[0]
	require.Equal(t, "gw-200", p.HardwareModel)
	require.Equal(t, 80*time.Millisecond, p.Network.Latency)
	require.Equal(t, 5*time.Minute, p.Network.NATIdleTimeout)
	require.Equal(t, 30*time.Second, *p.Jitter)
	canary := resolve(f.Profiles[1], f.Firmware)
	require.Equal(t, 10*time.Minute, canary.fwDrop, "the firmware's behaviour follows its version")
	require.Equal(t, MetricsMachine, canary.Metrics)
	require.Equal(t, 45*time.Second, canary.Interval, "the agent's defaults")
	require.Equal(t, 30*time.Second, canary.jitter)
	box := resolve(f.Profiles[2], f.Firmware)
	require.Zero(t, box.fwDrop)
	require.Equal(t, time.Minute, box.SampleInterval)
	require.Equal(t, 5*time.Minute, box.healthInterval)
	require.Equal(t, 30*time.Minute, box.Network.Outage.First)

	f, err = LoadFile("testdata/idle.good.yml")
	require.NoError(t, err)
	idle := resolve(f.Profiles[0], nil)
	require.Empty(t, idle.metrics)
	require.Zero(t, idle.healthInterval, "an idle device samples nothing, its health neither")
	require.Equal(t, 30*time.Second, idle.keepalive)
}

func TestOverrides(t *testing.T) {
	zero := time.Duration(0)
	p := Profile{Name: "a", FirmwareVersion: "1.0", Interval: time.Minute}
	Overrides{FirmwareVersion: "2.0", Interval: 2 * time.Second, Jitter: &zero, Metrics: MetricsIdle}.apply(&p)
	r := resolve(p, nil)
	require.Equal(t, "2.0", r.FirmwareVersion)
	require.Equal(t, 2*time.Second, r.Interval)
	require.Zero(t, r.jitter)
	require.Equal(t, MetricsIdle, r.Metrics)

	// A run lays the overrides over its own copy of the profiles.
	given := []Profile{{Name: "a", FirmwareVersion: "1.0"}}
	cfg := Config{DataDir: t.TempDir(), Devices: 1, Profiles: File{Profiles: given}, Overrides: Overrides{FirmwareVersion: "2.0"}}
	require.NoError(t, cfg.setDefaults())
	require.Equal(t, "2.0", cfg.Profiles.Profiles[0].FirmwareVersion)
	require.Equal(t, "1.0", given[0].FirmwareVersion)
}

func TestAssign(t *testing.T) {
	w := func(v float64) *float64 { return &v }
	profiles := []Profile{{Name: "a", Weight: w(70)}, {Name: "b", Weight: w(5)}, {Name: "c", Weight: w(25)}}
	got := assign(profiles, 1000)
	counts := make([]int, 3)
	for _, i := range got {
		counts[i]++
	}
	require.Equal(t, []int{700, 50, 250}, counts)
	// Any prefix is mixed like the whole: the first 100 devices hold 70, 5 and 25.
	counts = make([]int, 3)
	for _, i := range got[:100] {
		counts[i]++
	}
	require.InDeltaSlice(t, []float64{70, 5, 25}, []float64{float64(counts[0]), float64(counts[1]), float64(counts[2])}, 1)
	require.Len(t, assign(profiles, 7), 7)
	require.Equal(t, []int{0, 0, 0}, assign([]Profile{{Name: "only"}}, 3))
}

func FuzzParseFile(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yml")
	require.NoError(f, err)
	for _, p := range files {
		data, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := ParseFile(data)
		if err != nil {
			require.ErrorIs(t, err, ErrProfile)
			require.NotEmpty(t, strings.TrimPrefix(err.Error(), ErrProfile.Error()))
			return
		}
		require.NoError(t, file.Validate())
		for _, p := range file.Profiles {
			r := resolve(p, file.Firmware)
			require.Positive(t, r.Interval)
			require.Positive(t, r.SampleInterval)
		}
	})
}
