package sim

import (
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/millwright/millwright/agent"
)

// ErrProfile is wrapped by every error in a profile file or in the flags that stand in for one.
// The message names the key and, for a file, its line.
var ErrProfile = errors.New("invalid simulation profile")

// File is a profile file (--profile): the device profiles the fleet is drawn from and the
// behaviour of firmware versions.
type File struct {
	// Profiles are the kinds of device in the fleet; each device gets one, drawn by weight.
	// At least one.
	Profiles []Profile `yaml:"profiles"`
	// Firmware lists firmware versions that misbehave; a device reporting one of these versions
	// behaves so, whatever its profile.
	Firmware []Firmware `yaml:"firmware"`
}

// Profile is one kind of simulated device.
type Profile struct {
	// Name labels the profile in the summary. Required in a file, unique.
	Name string `yaml:"name"`
	// Weight is the profile's share of the fleet, relative to the other profiles' weights.
	// Default 1; must not be negative; at least one profile must weigh more than 0.
	Weight *float64 `yaml:"weight"`
	// HardwareModel, NetworkOperator and FirmwareVersion are reported at connect (the agent's
	// identity). Default: none reported.
	HardwareModel   string `yaml:"hardware_model"`
	NetworkOperator string `yaml:"network_operator"`
	FirmwareVersion string `yaml:"firmware_version"`
	// Metrics is the metric set sampled: machine (default), environment or idle (nothing
	// sampled: the device only holds its connection).
	Metrics string `yaml:"metrics"`
	// SampleInterval is how often every metric of the set is sampled. Default 10 s.
	SampleInterval time.Duration `yaml:"sample_interval"`
	// Interval and Jitter are the agent's send schedule (interval + U[0, jitter)). Default the
	// agent's 45 s and 30 s; jitter 0 means none.
	Interval time.Duration  `yaml:"interval"`
	Jitter   *time.Duration `yaml:"jitter"`
	// Keepalive is the MQTT keepalive. Default the agent's 60 s; 0 turns pings off.
	Keepalive *time.Duration `yaml:"keepalive"`
	// HealthInterval is how often the agent writes its agent_* health measurements. Default the
	// agent's 60 s, but 0 (none) with the idle metric set; 0 turns them off.
	HealthInterval *time.Duration `yaml:"health_interval"`
	// Network shapes every connection of the profile's devices.
	Network Network `yaml:"network"`
}

// Network is how the network between a device and the server behaves.
type Network struct {
	// Latency delays every write by this much (one way). Default 0.
	Latency time.Duration `yaml:"latency"`
	// Loss is the share (0 to 1) of writes lost once and retransmitted, as TCP does: such a
	// write is delayed by a further retransmission timeout of max(200 ms, 3 × latency).
	// Default 0.
	Loss float64 `yaml:"loss"`
	// DropInterval is the mean time between connection losses (exponentially distributed):
	// the connection is reset. Default 0: none.
	DropInterval time.Duration `yaml:"drop_interval"`
	// NATIdleTimeout is the idle timeout of a carrier NAT on the path: a connection that
	// carried nothing in either direction for longer is silently dead (what is sent is lost,
	// nothing arrives), until the device notices — by its keepalive — and reconnects. A
	// keepalive below the timeout keeps the mapping alive. Default 0: no NAT.
	NATIdleTimeout time.Duration `yaml:"nat_idle_timeout"`
	// Outage, when set, takes the network away periodically for all of the profile's devices
	// at once.
	Outage *Outage `yaml:"outage"`
}

// Outage is a periodic network outage: connections go silent, new connections fail.
type Outage struct {
	// Every is the period. Required.
	Every time.Duration `yaml:"every"`
	// Duration is how long each outage lasts. Required, below Every.
	Duration time.Duration `yaml:"duration"`
	// First is when the first outage begins, after the start. Default Every.
	First time.Duration `yaml:"first"`
}

// Firmware is how a firmware version misbehaves.
type Firmware struct {
	// Version is the firmware version (a profile's firmware_version). Required, unique.
	Version string `yaml:"version"`
	// DropInterval is the mean time between connections the firmware itself drops
	// (exponentially distributed): the device closes its socket abruptly. Required.
	DropInterval time.Duration `yaml:"drop_interval"`
}

// Profile defaults.
const (
	DefaultSampleInterval = 10 * time.Second
	MetricsMachine        = "machine"
	MetricsEnvironment    = "environment"
	MetricsIdle           = "idle"
)

// LoadFile reads and validates a profile file.
func LoadFile(path string) (File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("load profile: %w", err)
	}
	f, err := ParseFile(data)
	if err != nil {
		return File{}, fmt.Errorf("load profile %s: %w", path, err)
	}
	return f, nil
}

// ParseFile parses and validates a profile file's YAML. Unknown keys, repeated keys and bad
// values are errors naming the key and its line.
func ParseFile(data []byte) (File, error) {
	var f File
	if err := agent.DecodeYAML(data, &f); err != nil {
		return File{}, fmt.Errorf("%w: %w", ErrProfile, err)
	}
	if err := f.Validate(); err != nil {
		return File{}, err
	}
	return f, nil
}

func profileErr(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrProfile, key, fmt.Sprintf(format, args...))
}

// Validate checks every value.
func (f File) Validate() error {
	if len(f.Profiles) == 0 {
		return profileErr("profiles", "at least one profile is required")
	}
	names := map[string]int{}
	total := 0.0
	for i, p := range f.Profiles {
		key := fmt.Sprintf("profiles[%d]", i)
		if p.Name == "" {
			return profileErr(key+".name", "required")
		}
		if j, dup := names[p.Name]; dup {
			return profileErr(key+".name", "%q is already the name of profiles[%d]", p.Name, j)
		}
		names[p.Name] = i
		if err := p.validate(key); err != nil {
			return err
		}
		total += p.weight()
	}
	if total <= 0 {
		return profileErr("profiles", "every weight is 0: no profile would get a device")
	}
	versions := map[string]int{}
	for i, fw := range f.Firmware {
		key := fmt.Sprintf("firmware[%d]", i)
		if fw.Version == "" {
			return profileErr(key+".version", "required")
		}
		if j, dup := versions[fw.Version]; dup {
			return profileErr(key+".version", "%q is already listed as firmware[%d]", fw.Version, j)
		}
		versions[fw.Version] = i
		if fw.DropInterval <= 0 {
			return profileErr(key+".drop_interval", "must be positive, got %v", fw.DropInterval)
		}
	}
	return nil
}

func (p Profile) weight() float64 {
	if p.Weight == nil {
		return 1
	}
	return *p.Weight
}

func (p Profile) validate(key string) error {
	if p.Weight != nil && (*p.Weight < 0 || math.IsNaN(*p.Weight) || math.IsInf(*p.Weight, 0)) {
		return profileErr(key+".weight", "must be a number of 0 or more, got %v", *p.Weight)
	}
	switch p.Metrics {
	case "", MetricsMachine, MetricsEnvironment, MetricsIdle:
	default:
		return profileErr(key+".metrics", "%q is not a metric set; use machine, environment or idle", p.Metrics)
	}
	n := p.Network
	switch {
	case p.SampleInterval < 0:
		return profileErr(key+".sample_interval", "must not be negative, got %v", p.SampleInterval)
	case p.SampleInterval > 0 && p.SampleInterval < 10*time.Millisecond:
		return profileErr(key+".sample_interval", "%v is below the minimum of 10ms", p.SampleInterval)
	case p.Interval < 0:
		return profileErr(key+".interval", "must not be negative, got %v", p.Interval)
	case p.Jitter != nil && *p.Jitter < 0:
		return profileErr(key+".jitter", "must not be negative, got %v", *p.Jitter)
	case p.Keepalive != nil && (*p.Keepalive < 0 || *p.Keepalive%time.Second != 0 || *p.Keepalive > 65535*time.Second):
		return profileErr(key+".keepalive", "%v is not whole seconds from 0 to 65535s", *p.Keepalive)
	case p.HealthInterval != nil && *p.HealthInterval < 0:
		return profileErr(key+".health_interval", "must not be negative, got %v", *p.HealthInterval)
	case n.Latency < 0:
		return profileErr(key+".network.latency", "must not be negative, got %v", n.Latency)
	case n.Loss < 0 || n.Loss >= 1 || math.IsNaN(n.Loss):
		return profileErr(key+".network.loss", "%v is not a share from 0 to below 1", n.Loss)
	case n.DropInterval < 0:
		return profileErr(key+".network.drop_interval", "must not be negative, got %v", n.DropInterval)
	case n.NATIdleTimeout < 0:
		return profileErr(key+".network.nat_idle_timeout", "must not be negative, got %v", n.NATIdleTimeout)
	}
	if o := n.Outage; o != nil {
		switch {
		case o.Every <= 0:
			return profileErr(key+".network.outage.every", "must be positive, got %v", o.Every)
		case o.Duration <= 0 || o.Duration >= o.Every:
			return profileErr(key+".network.outage.duration", "%v is not between 0 and outage.every %v", o.Duration, o.Every)
		case o.First < 0:
			return profileErr(key+".network.outage.first", "must not be negative, got %v", o.First)
		}
	}
	return nil
}

// Overrides are the flags that apply to every profile (zero or nil: keep the profile's value).
type Overrides struct {
	HardwareModel, NetworkOperator, FirmwareVersion, Metrics string
	SampleInterval, Interval                                 time.Duration
	Jitter, Keepalive                                        *time.Duration
}

// apply lays the overrides over p.
func (o Overrides) apply(p *Profile) {
	for _, s := range []struct {
		dst *string
		v   string
	}{
		{&p.HardwareModel, o.HardwareModel}, {&p.NetworkOperator, o.NetworkOperator},
		{&p.FirmwareVersion, o.FirmwareVersion}, {&p.Metrics, o.Metrics},
	} {
		if s.v != "" {
			*s.dst = s.v
		}
	}
	if o.SampleInterval > 0 {
		p.SampleInterval = o.SampleInterval
	}
	if o.Interval > 0 {
		p.Interval = o.Interval
	}
	if o.Jitter != nil {
		p.Jitter = o.Jitter
	}
	if o.Keepalive != nil {
		p.Keepalive = o.Keepalive
	}
}

// resolved is a profile with every default filled in.
type resolved struct {
	Profile
	metrics        []metricSpec
	jitter         time.Duration
	keepalive      time.Duration
	healthInterval time.Duration
	fwDrop         time.Duration // mean time between firmware drops; 0 none
	outage         *outageState  // shared by the profile's devices
}

func resolve(p Profile, fw []Firmware) *resolved {
	def := agent.DefaultConfig()
	r := &resolved{Profile: p}
	if r.Metrics == "" {
		r.Metrics = MetricsMachine
	}
	r.metrics = metricSets[r.Metrics]
	if r.SampleInterval == 0 {
		r.SampleInterval = DefaultSampleInterval
	}
	if r.Interval == 0 {
		r.Interval = def.Schedule.Interval
	}
	r.jitter = def.Schedule.Jitter
	if p.Jitter != nil {
		r.jitter = *p.Jitter
	}
	r.keepalive = def.Uplink.Keepalive
	if p.Keepalive != nil {
		r.keepalive = *p.Keepalive
	}
	r.healthInterval = def.Health.Interval
	if r.Metrics == MetricsIdle {
		r.healthInterval = 0
	}
	if p.HealthInterval != nil {
		r.healthInterval = *p.HealthInterval
	}
	for _, f := range fw {
		if f.Version == p.FirmwareVersion {
			r.fwDrop = f.DropInterval
		}
	}
	return r
}

// assign gives each of n devices a profile index: the largest-remainder apportionment of n by
// weight, laid out round-robin so that any prefix of the fleet is mixed like the whole.
func assign(profiles []Profile, n int) []int {
	total := 0.0
	for _, p := range profiles {
		total += p.weight()
	}
	counts := make([]int, len(profiles))
	rem := make([]float64, len(profiles))
	given := 0
	for i, p := range profiles {
		exact := float64(n) * p.weight() / total
		counts[i] = int(exact)
		rem[i] = exact - float64(counts[i])
		given += counts[i]
	}
	for ; given < n; given++ {
		best := 0
		for i := range rem {
			if rem[i] > rem[best] {
				best = i
			}
		}
		counts[best]++
		rem[best] = -1
	}
	// Smooth weighted round robin: each slot goes to the profile furthest behind its share.
	out := make([]int, 0, n)
	cur := make([]int, len(counts))
	for range n {
		best := -1
		for i := range counts {
			cur[i] += counts[i]
			if best < 0 || cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= n
		out = append(out, best)
	}
	return out
}
