package source

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// fixtureRoots copies the fake proc and sys trees to a temporary directory
// that a test may change.
func fixtureRoots(t *testing.T) (procRoot, sysRoot string) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.CopyFS(dir, os.DirFS("testdata")))
	return filepath.Join(dir, "proc"), filepath.Join(dir, "sys")
}

func fakeStatfs(path string) (diskUsage, error) {
	switch path {
	case "/":
		return diskUsage{total: 1000, free: 400, avail: 300}, nil
	case "/data/logs":
		return diskUsage{total: 5000, free: 5000, avail: 4500}, nil
	}
	return diskUsage{}, os.ErrNotExist
}

func TestSystemFixture(t *testing.T) {
	procRoot, sysRoot := fixtureRoots(t)
	clk := clock.NewFake(epoch)
	s, err := NewSystem(SystemOptions{
		ProcRoot:    procRoot,
		SysRoot:     sysRoot,
		MountPoints: []string{"/", "/data/logs"},
		Clock:       clk,
	})
	require.NoError(t, err)
	s.statfs = fakeStatfs
	sink := newRecordSink()
	stop := runSource(t, s, sink)

	w := sink.next(t)
	require.Equal(t, ClassRaw, w.class)
	requireResolved(t, w.recs)
	m := byName(t, w.recs)
	t0 := float64(epoch.Unix())
	for _, r := range w.recs {
		require.Equal(t, t0, r.Time, r.Name)
	}
	want := map[string]struct {
		unit string
		v    float64
	}{
		"system_load1":                {"", 0.52},
		"system_load5":                {"", 0.48},
		"system_load15":               {"", 0.41},
		"system_memory_total":         {"B", 4000000 * 1024},
		"system_memory_available":     {"B", 3000000 * 1024},
		"system_memory_used":          {"B", 1000000 * 1024},
		"system_disk_total_root":      {"B", 1000},
		"system_disk_free_root":       {"B", 300},
		"system_disk_used_root":       {"B", 600},
		"system_disk_total_data_logs": {"B", 5000},
		"system_disk_free_data_logs":  {"B", 4500},
		"system_disk_used_data_logs":  {"B", 0},
		"system_uptime":               {"s", 12345.67},
		"system_temp_x86_pkg_temp":    {"Cel", 45},
		"system_temp_acpitz_1":        {"Cel", 27.8},
		"system_temp_acpitz_2":        {"Cel", -1.5},
		"system_net_rx_eth0":          {"B", 400521072},
		"system_net_tx_eth0":          {"B", 2035258},
		"system_net_rx_wlan0":         {"B", 1000},
		"system_net_tx_wlan0":         {"B", 2000},
	}
	require.Len(t, m, len(want), "the first sample has everything but CPU utilisation")
	for name, wv := range want {
		r, ok := m[name]
		require.True(t, ok, "missing %s", name)
		require.Equal(t, wv.unit, r.Unit, name)
		require.InDelta(t, wv.v, value(t, r), 1e-9, name)
	}

	// The second sample, one interval later, has CPU utilisation from the
	// difference of the two /proc/stat readings: 200 busy of 1000 ticks.
	clk.BlockUntil(1)
	next, err := os.ReadFile(filepath.Join(procRoot, "stat.next"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(procRoot, "stat"), next, 0o644))
	clk.Advance(10 * time.Second)
	w = sink.next(t)
	requireResolved(t, w.recs)
	m = byName(t, w.recs)
	require.Len(t, m, len(want)+1)
	cpu := m["system_cpu_usage"]
	require.Equal(t, "%", cpu.Unit)
	require.InDelta(t, 20.0, value(t, cpu), 1e-9)
	require.Equal(t, t0+10, cpu.Time)

	require.NoError(t, stop())
	st := s.Stats()
	require.Equal(t, uint64(2), st.Samples)
	require.Equal(t, uint64(2*len(want)+1), st.Records)
	require.Zero(t, st.CollectErrors)
	require.Zero(t, st.WriteErrors)
}

func TestSystemCollectorsAndInterfaces(t *testing.T) {
	procRoot, sysRoot := fixtureRoots(t)
	s, err := NewSystem(SystemOptions{
		ProcRoot:   procRoot,
		SysRoot:    sysRoot,
		Collectors: []string{CollectNetwork, CollectUptime},
		Interfaces: []string{"wl*", "lo"},
		Clock:      clock.NewFake(epoch),
	})
	require.NoError(t, err)
	var names []string
	for _, r := range s.sample(epoch) {
		names = append(names, r.Name)
	}
	require.Equal(t, []string{"system_uptime", "system_net_rx_lo", "system_net_tx_lo", "system_net_rx_wlan0", "system_net_tx_wlan0"}, names)
}

func TestSystemFailuresLoggedOnce(t *testing.T) {
	procRoot, sysRoot := fixtureRoots(t)
	require.NoError(t, os.Remove(filepath.Join(procRoot, "meminfo")))
	// A zone whose sensor cannot be read.
	bad := filepath.Join(sysRoot, "class", "thermal", "thermal_zone7")
	require.NoError(t, os.MkdirAll(bad, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "type"), []byte("soc\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "temp"), []byte("n/a\n"), 0o644))

	log, logs := newTestLogger()
	clk := clock.NewFake(epoch)
	s, err := NewSystem(SystemOptions{ProcRoot: procRoot, SysRoot: sysRoot, Clock: clk, Logger: log, Collectors: []string{CollectMemory, CollectThermal, CollectUptime}})
	require.NoError(t, err)
	for range 3 {
		m := byName(t, s.sample(clk.Now()))
		require.Contains(t, m, "system_uptime")
		require.Contains(t, m, "system_temp_x86_pkg_temp", "good zones are still reported")
		require.NotContains(t, m, "system_memory_total")
	}
	require.Equal(t, uint64(6), s.Stats().CollectErrors)
	out := logs.String()
	require.Equal(t, 1, strings.Count(out, "collect system memory"), out)
	require.Equal(t, 1, strings.Count(out, "thermal_zone7"), out)

	// Recovery is logged.
	require.NoError(t, os.WriteFile(filepath.Join(procRoot, "meminfo"), []byte("MemTotal: 100 kB\nMemFree: 50 kB\n"), 0o644))
	m := byName(t, s.sample(clk.Now()))
	require.InDelta(t, 50*1024.0, value(t, m["system_memory_available"]), 0, "MemAvailable is estimated on old kernels")
	require.Contains(t, logs.String(), "collect system memory: working again")
}

func TestSystemWriteErrorCounted(t *testing.T) {
	procRoot, sysRoot := fixtureRoots(t)
	clk := clock.NewFake(epoch)
	s, err := NewSystem(SystemOptions{ProcRoot: procRoot, SysRoot: sysRoot, Clock: clk, Collectors: []string{CollectUptime}})
	require.NoError(t, err)
	sink := newRecordSink()
	sink.fail(errSinkDown)
	stop := runSource(t, s, sink)
	clk.BlockUntil(1)
	sink.fail(nil)
	clk.Advance(10 * time.Second)
	w := sink.next(t)
	require.Len(t, w.recs, 1)
	require.NoError(t, stop())
	require.Equal(t, uint64(1), s.Stats().WriteErrors)
	require.Equal(t, uint64(1), s.Stats().Records)
}

func TestSystemClockNotSet(t *testing.T) {
	procRoot, sysRoot := fixtureRoots(t)
	s, err := NewSystem(SystemOptions{ProcRoot: procRoot, SysRoot: sysRoot})
	require.NoError(t, err)
	require.Empty(t, s.sample(time.Unix(1000, 0)), "a board that booted without a real-time clock")
	require.NotEmpty(t, s.sample(epoch))
}

// TestSystemRealProc samples the machine the test runs on.
func TestSystemRealProc(t *testing.T) {
	_, err := os.Stat("/proc/stat")
	require.NoError(t, err, "the agent's system source needs Linux /proc")
	s, err := NewSystem(SystemOptions{})
	require.NoError(t, err)
	first := byName(t, s.sample(time.Now()))
	requireResolved(t, s.sample(time.Now()))
	for _, name := range []string{"system_memory_total", "system_memory_available", "system_memory_used", "system_uptime", "system_load1", "system_disk_free_root"} {
		require.Contains(t, first, name)
	}
	require.Greater(t, value(t, first["system_memory_total"]), 0.0)
	require.Greater(t, value(t, first["system_uptime"]), 0.0)
	// CPU utilisation needs time to pass between two readings.
	var cpu float64
	require.Eventually(t, func() bool {
		m := byName(t, s.sample(time.Now()))
		r, ok := m["system_cpu_usage"]
		if ok {
			cpu = value(t, r)
		}
		return ok
	}, 5*time.Second, 50*time.Millisecond)
	require.GreaterOrEqual(t, cpu, 0.0)
	require.LessOrEqual(t, cpu, 100.0)
}

func TestSystemOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts SystemOptions
		err  string
	}{
		{"defaults", SystemOptions{}, ""},
		{"everything", DefaultSystemOptions(), ""},
		{"short interval", SystemOptions{Interval: 500 * time.Millisecond}, "interval 500ms is below the minimum"},
		{"unknown collector", SystemOptions{Collectors: []string{"cpu", "gpu"}}, `unknown collector "gpu"`},
		{"relative mount", SystemOptions{MountPoints: []string{"data"}}, `"data" is not an absolute path`},
		{"clashing mounts", SystemOptions{MountPoints: []string{"/a/b", "/a_b"}}, `both give the name "a_b"`},
		{"empty interface", SystemOptions{Interfaces: []string{""}}, "empty pattern"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSystem(tc.opts)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestProcParsers(t *testing.T) {
	_, err := parseStat([]byte("intr 1\n"))
	require.ErrorContains(t, err, "no cpu line")
	_, err = parseStat([]byte("cpu 1 2 x 4\n"))
	require.Error(t, err)
	c, err := parseStat([]byte("cpu 1 2 3 4\n")) // very old kernels: four fields
	require.NoError(t, err)
	require.Equal(t, cpuTimes{busy: 6, total: 10}, c)

	_, ok := cpuUsage(cpuTimes{busy: 5, total: 10}, cpuTimes{busy: 5, total: 10})
	require.False(t, ok, "no time passed")
	_, ok = cpuUsage(cpuTimes{busy: 5, total: 10}, cpuTimes{busy: 1, total: 20})
	require.False(t, ok, "counters reset")

	_, _, err = parseMeminfo([]byte("MemFree: 1 kB\n"))
	require.ErrorContains(t, err, "no MemTotal")
	_, err = parseUptime([]byte(""))
	require.Error(t, err)
	_, err = parseUptime([]byte("NaN 1"))
	require.Error(t, err)
	_, err = parseLoadavg([]byte("1 2"))
	require.Error(t, err)
	_, err = parseNetDev([]byte("eth0: 1 2 3\n"))
	require.Error(t, err)
	_, err = parseMilliCelsius([]byte("hot"))
	require.Error(t, err)
}

func TestNameHelpers(t *testing.T) {
	require.Equal(t, "root", mountName("/"))
	require.Equal(t, "data_logs", mountName("/data/logs/"))
	require.Equal(t, "mnt_sd_card", mountName("/mnt/SD Card"))
	require.Equal(t, "cpu-thermal", sanitize("cpu-thermal\n"))
	require.Equal(t, "unknown", sanitize("  "))
	require.Equal(t, "br_lan_1", sanitize("br@lan:1"))

	for _, tc := range []struct {
		pattern, name string
		match         bool
	}{
		{"eth*", "eth0", true},
		{"eth*", "veth0", false},
		{"*", "", true},
		{"*0", "wlan0", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"lo", "lo", true},
		{"lo", "lo0", false},
		{"system_*_temp", "system_cpu_temp", true},
	} {
		require.Equal(t, tc.match, MatchGlob(tc.pattern, tc.name), "%q %q", tc.pattern, tc.name)
	}
}
