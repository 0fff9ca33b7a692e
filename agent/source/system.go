package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// ErrInvalidOptions is wrapped by the errors of the Validate methods and
// constructors of this package for options that cannot work.
var ErrInvalidOptions = errors.New("invalid source options")

// Collectors of the System source, the values of SystemOptions.Collectors.
const (
	CollectCPU     = "cpu"     // system_cpu_usage (%), from /proc/stat
	CollectLoad    = "load"    // system_load1, system_load5, system_load15, from /proc/loadavg
	CollectMemory  = "memory"  // system_memory_total, _available, _used (B), from /proc/meminfo
	CollectDisk    = "disk"    // system_disk_total_<m>, _free_<m>, _used_<m> (B), from statfs(2)
	CollectUptime  = "uptime"  // system_uptime (s), from /proc/uptime
	CollectThermal = "thermal" // system_temp_<type> (Cel), from /sys/class/thermal
	CollectNetwork = "network" // system_net_rx_<if>, system_net_tx_<if> (B, counters), from /proc/net/dev
)

// allCollectors is every collector, in the order a sample lists them.
var allCollectors = []string{CollectCPU, CollectLoad, CollectMemory, CollectDisk, CollectUptime, CollectThermal, CollectNetwork}

// SystemOptions configure a System source. The zero value of every field
// means its default; DefaultSystemOptions shows them.
type SystemOptions struct {
	// Interval is the time between samples. Default 10 s; zero means the
	// default; minimum 1 s.
	Interval time.Duration `yaml:"interval"`
	// Collectors lists what to sample, out of "cpu", "load", "memory",
	// "disk", "uptime", "thermal", "network". Default all; empty means the
	// default.
	Collectors []string `yaml:"collectors"`
	// MountPoints are the mounted file systems whose space the "disk"
	// collector reports. Default ["/"]; empty means the default. The name
	// part of a mount point is its path without the leading '/', with
	// other '/' and unsafe bytes as '_', and "root" for "/": /data/logs
	// gives system_disk_free_data_logs.
	MountPoints []string `yaml:"mount_points"`
	// Interfaces are the network interfaces the "network" collector
	// reports, as names or globs where '*' matches any run of characters
	// ("eth*", "wlan0"). Default: every interface but lo; empty means the
	// default.
	Interfaces []string `yaml:"interfaces"`
	// ProcRoot is where procfs is mounted. Default "/proc"; empty means the
	// default. Set it to sample the host from a container that mounts the
	// host's /proc elsewhere, or to a fixture tree in tests.
	ProcRoot string `yaml:"proc_root"`
	// SysRoot is where sysfs is mounted. Default "/sys"; empty means the
	// default.
	SysRoot string `yaml:"sys_root"`

	// Clock gives sampling times and drives the interval. Default the real
	// clock; nil means the default.
	Clock clock.Clock `yaml:"-"`
	// Logger receives collector failures (once per new failure, see the
	// package documentation). Default: discard; nil means the default.
	Logger *slog.Logger `yaml:"-"`
}

// DefaultSystemOptions returns the defaults.
func DefaultSystemOptions() SystemOptions {
	return SystemOptions{
		Interval:    10 * time.Second,
		Collectors:  slices.Clone(allCollectors),
		MountPoints: []string{"/"},
		ProcRoot:    "/proc",
		SysRoot:     "/sys",
	}
}

// withDefaults fills in zero fields.
func (o SystemOptions) withDefaults() SystemOptions {
	d := DefaultSystemOptions()
	if o.Interval == 0 {
		o.Interval = d.Interval
	}
	if len(o.Collectors) == 0 {
		o.Collectors = d.Collectors
	}
	if len(o.MountPoints) == 0 {
		o.MountPoints = d.MountPoints
	}
	if o.ProcRoot == "" {
		o.ProcRoot = d.ProcRoot
	}
	if o.SysRoot == "" {
		o.SysRoot = d.SysRoot
	}
	return o
}

// Validate reports options that cannot work; the error wraps
// ErrInvalidOptions and names the field.
func (o SystemOptions) Validate() error {
	o = o.withDefaults()
	if o.Interval < time.Second {
		return fmt.Errorf("%w: system: interval %v is below the minimum of 1s", ErrInvalidOptions, o.Interval)
	}
	for _, c := range o.Collectors {
		if !slices.Contains(allCollectors, c) {
			return fmt.Errorf("%w: system: collectors: unknown collector %q, known: %s", ErrInvalidOptions, c, strings.Join(allCollectors, ", "))
		}
	}
	seen := make(map[string]string, len(o.MountPoints))
	for _, m := range o.MountPoints {
		if !strings.HasPrefix(m, "/") {
			return fmt.Errorf("%w: system: mount_points: %q is not an absolute path", ErrInvalidOptions, m)
		}
		n := mountName(m)
		if prev, dup := seen[n]; dup {
			return fmt.Errorf("%w: system: mount_points: %q and %q both give the name %q", ErrInvalidOptions, prev, m, n)
		}
		seen[n] = m
	}
	for _, g := range o.Interfaces {
		if g == "" {
			return fmt.Errorf("%w: system: interfaces: empty pattern", ErrInvalidOptions)
		}
	}
	return nil
}

// SystemStats are counters since the System was made.
type SystemStats struct {
	// Samples counts sampling rounds.
	Samples uint64
	// Records counts records written to the sink without error.
	Records uint64
	// CollectErrors counts collector failures (an unreadable or
	// unparsable file), one per collector and round.
	CollectErrors uint64
	// WriteErrors counts rounds whose records the sink refused; those
	// records are lost.
	WriteErrors uint64
}

// System samples the device's own health from procfs and sysfs; see
// SystemOptions for what and the Collect* constants for the names.
// Temperatures are in Cel, sizes and network counters in B (RFC 8798 byte),
// CPU utilisation in %, uptime in s; load averages have no unit. The network
// byte counts are the kernel's counters, which only grow (until a reboot or
// a 32-bit wrap on some drivers); the server derives rates.
type System struct {
	opts   SystemOptions
	clk    clock.Clock
	log    *slog.Logger
	probs  *problems
	enable map[string]bool
	// statfs reads a file system's space; replaced in tests.
	statfs func(path string) (diskUsage, error)

	mu      sync.Mutex // serializes sample
	prevCPU cpuTimes
	haveCPU bool

	samples, records, collectErrors, writeErrors atomic.Uint64
}

// diskUsage is a file system's space in bytes.
type diskUsage struct {
	total, free, avail uint64
}

// NewSystem returns a System source. It fails, wrapping ErrInvalidOptions,
// when opts do not validate.
func NewSystem(opts SystemOptions) (*System, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	s := &System{
		opts:   opts,
		clk:    defaultClock(opts.Clock),
		log:    defaultLogger(opts.Logger).With("source", "system"),
		enable: make(map[string]bool, len(opts.Collectors)),
		statfs: statfs,
	}
	s.probs = newProblems(s.log)
	for _, c := range opts.Collectors {
		s.enable[c] = true
	}
	return s, nil
}

// Name returns "system".
func (s *System) Name() string { return "system" }

// Stats returns the counters.
func (s *System) Stats() SystemStats {
	return SystemStats{
		Samples:       s.samples.Load(),
		Records:       s.records.Load(),
		CollectErrors: s.collectErrors.Load(),
		WriteErrors:   s.writeErrors.Load(),
	}
}

// Run samples at once and then every Interval until ctx ends, writing each
// round's records to sink as ClassRaw in one call. CPU utilisation needs two
// readings, so the first round has none. A write may take at most one
// Interval; a failed write is logged and its records are lost.
func (s *System) Run(ctx context.Context, sink Sink) error {
	every(ctx, s.clk, s.opts.Interval, func(ctx context.Context, now time.Time) {
		recs := s.sample(now)
		if len(recs) == 0 {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, s.opts.Interval)
		defer cancel()
		if err := sink.Write(wctx, recs, ClassRaw); err != nil {
			s.writeErrors.Add(1)
			if ctx.Err() == nil {
				s.probs.report("write", "write system sample: "+err.Error(), "records", len(recs))
			}
			return
		}
		s.probs.ok("write", "system sample written again")
		s.records.Add(uint64(len(recs)))
	})
	return nil
}

// sample reads every enabled collector and returns the records, all
// time-stamped now.
func (s *System) sample(now time.Time) []protocol.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples.Add(1)
	if !clockSet(now) {
		s.probs.report("clock", "system clock not set, sample skipped", "now", now)
		return nil
	}
	s.probs.ok("clock", "system clock set")
	t := unixSeconds(now)
	var recs []protocol.Record
	for _, c := range allCollectors {
		if !s.enable[c] {
			continue
		}
		var err error
		switch c {
		case CollectCPU:
			recs, err = s.cpu(recs, t)
		case CollectLoad:
			recs, err = s.load(recs, t)
		case CollectMemory:
			recs, err = s.memory(recs, t)
		case CollectDisk:
			recs, err = s.disk(recs, t)
		case CollectUptime:
			recs, err = s.uptime(recs, t)
		case CollectThermal:
			recs, err = s.thermal(recs, t)
		case CollectNetwork:
			recs, err = s.network(recs, t)
		}
		if err != nil {
			s.collectErrors.Add(1)
			s.probs.report(c, "collect system "+c+": "+err.Error(), "collector", c)
			continue
		}
		s.probs.ok(c, "collect system "+c+": working again", "collector", c)
	}
	return recs
}

func (s *System) procFile(name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.opts.ProcRoot, name))
}

func (s *System) cpu(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	data, err := s.procFile("stat")
	if err != nil {
		return recs, err
	}
	cur, err := parseStat(data)
	if err != nil {
		return recs, fmt.Errorf("parse stat: %w", err)
	}
	if s.haveCPU {
		if pct, ok := cpuUsage(s.prevCPU, cur); ok {
			recs = append(recs, numeric("system_cpu_usage", unitPercent, t, pct))
		}
	}
	s.prevCPU, s.haveCPU = cur, true
	return recs, nil
}

func (s *System) load(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	data, err := s.procFile("loadavg")
	if err != nil {
		return recs, err
	}
	l, err := parseLoadavg(data)
	if err != nil {
		return recs, fmt.Errorf("parse loadavg: %w", err)
	}
	return append(recs,
		numeric("system_load1", "", t, l[0]),
		numeric("system_load5", "", t, l[1]),
		numeric("system_load15", "", t, l[2])), nil
}

func (s *System) memory(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	data, err := s.procFile("meminfo")
	if err != nil {
		return recs, err
	}
	total, avail, err := parseMeminfo(data)
	if err != nil {
		return recs, fmt.Errorf("parse meminfo: %w", err)
	}
	return append(recs,
		numeric("system_memory_total", unitByte, t, float64(total)),
		numeric("system_memory_available", unitByte, t, float64(avail)),
		numeric("system_memory_used", unitByte, t, float64(total-avail))), nil
}

// disk reports every mount point it can; the error names those it cannot.
func (s *System) disk(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	var errs []error
	for _, m := range s.opts.MountPoints {
		u, err := s.statfs(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("statfs %s: %w", m, err))
			continue
		}
		n := mountName(m)
		used := u.total - min(u.free, u.total)
		recs = append(recs,
			numeric("system_disk_total_"+n, unitByte, t, float64(u.total)),
			numeric("system_disk_free_"+n, unitByte, t, float64(u.avail)),
			numeric("system_disk_used_"+n, unitByte, t, float64(used)))
	}
	return recs, errors.Join(errs...)
}

// mountName is the name part of a mount point: "/" is "root", others lose
// the leading '/' and are sanitized.
func mountName(m string) string {
	m = strings.Trim(path.Clean(m), "/")
	if m == "" {
		return "root"
	}
	return sanitize(m)
}

func (s *System) uptime(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	data, err := s.procFile("uptime")
	if err != nil {
		return recs, err
	}
	up, err := parseUptime(data)
	if err != nil {
		return recs, fmt.Errorf("parse uptime: %w", err)
	}
	return append(recs, numeric("system_uptime", unitSecond, t, up)), nil
}

// thermalZone is one /sys/class/thermal/thermal_zone<N>.
type thermalZone struct {
	n    int
	dir  string
	kind string
}

// thermal reports every thermal zone that has a readable temperature,
// named after the zone's type; when several zones share a type, each name
// gets the zone number: system_temp_acpitz_0, system_temp_acpitz_1. A
// device without thermal zones reports none, without error. Zones that
// cannot be read (some report EIO or ENODATA while a sensor sleeps) are
// skipped and named in the error.
func (s *System) thermal(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	dirs, err := filepath.Glob(filepath.Join(s.opts.SysRoot, "class", "thermal", "thermal_zone*"))
	if err != nil {
		return recs, err
	}
	zones := make([]thermalZone, 0, len(dirs))
	count := make(map[string]int)
	for _, d := range dirs {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "thermal_zone"))
		if err != nil {
			continue
		}
		kind := "zone" + strconv.Itoa(n)
		if b, err := os.ReadFile(filepath.Join(d, "type")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			kind = sanitize(string(b))
		}
		zones = append(zones, thermalZone{n: n, dir: d, kind: kind})
		count[kind]++
	}
	slices.SortFunc(zones, func(a, b thermalZone) int { return a.n - b.n })
	var errs []error
	for _, z := range zones {
		b, err := os.ReadFile(filepath.Join(z.dir, "temp"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := parseMilliCelsius(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("thermal_zone%d: %w", z.n, err))
			continue
		}
		name := "system_temp_" + z.kind
		if count[z.kind] > 1 {
			name += "_" + strconv.Itoa(z.n)
		}
		recs = append(recs, numeric(name, unitCelsius, t, c))
	}
	return recs, errors.Join(errs...)
}

func (s *System) network(recs []protocol.Record, t float64) ([]protocol.Record, error) {
	data, err := s.procFile("net/dev")
	if err != nil {
		return recs, err
	}
	devs, err := parseNetDev(data)
	if err != nil {
		return recs, fmt.Errorf("parse net/dev: %w", err)
	}
	for _, d := range devs {
		if !s.wantInterface(d.name) {
			continue
		}
		n := sanitize(d.name)
		recs = append(recs,
			numeric("system_net_rx_"+n, unitByte, t, float64(d.rx)),
			numeric("system_net_tx_"+n, unitByte, t, float64(d.tx)))
	}
	return recs, nil
}

func (s *System) wantInterface(name string) bool {
	if len(s.opts.Interfaces) == 0 {
		return name != "lo"
	}
	for _, g := range s.opts.Interfaces {
		if MatchGlob(g, name) {
			return true
		}
	}
	return false
}

// MatchGlob reports whether name matches pattern, in which '*' matches any
// run of bytes (including none) and every other byte itself. Sources and the
// aggregator select names with it.
func MatchGlob(pattern, name string) bool {
	// Iterative matching with backtracking to the last '*': linear in
	// practice, O(len(pattern)·len(name)) at worst.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
