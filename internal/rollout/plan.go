// Package rollout decides who gets a release when: phased plans (built in, or written in YAML),
// the deterministic cohorts they put devices in, and the phase a rollout is in on an injected
// clock. It holds no state of its own: the caller keeps the rollout (its ID, plan, phase and
// when the phase began) and passes the devices in scope; every decision can be replayed.
package rollout

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/yamlconf"
)

// ErrPlan is wrapped by every error of a plan file; the message names the key.
var ErrPlan = errors.New("invalid rollout plan")

// Phase is one step of a plan: the devices it adds, and how long they soak before the next.
type Phase struct {
	// Name names the phase ("test", "canary"). Required, unique within the plan.
	Name string `yaml:"name"`
	// Percent is the share of the devices in scope that have been offered the release by the
	// end of this phase, this phase's and every earlier one's together: phases are nested.
	// 0 to 100, never less than an earlier phase's; the last phase must reach 100. A phase with
	// Select alone may leave it 0.
	Percent float64 `yaml:"percent"`
	// Max bounds the devices the plan has offered by the end of this phase; 0 for none.
	Max int `yaml:"max"`
	// Select narrows the devices this phase adds to those that match, such as
	// {tag: ring=test}; none: every device in scope.
	Select Selector `yaml:"select"`
	// Soak is how long the phase's devices run the release, healthy, before the next phase.
	// 0: go on at once. Takes days and weeks ("2d", "1w").
	Soak time.Duration `yaml:"soak"`
}

// Selector narrows a phase to some devices; every field given must match.
type Selector struct {
	// Tag is key=value.
	Tag      string `yaml:"tag"`
	Group    string `yaml:"group"`
	Model    string `yaml:"model"`
	Operator string `yaml:"operator"`
}

// IsZero reports whether the selector selects every device.
func (s Selector) IsZero() bool { return s == Selector{} }

// Matches reports whether d matches every field of the selector.
func (s Selector) Matches(d Device) bool {
	if s.Tag != "" {
		k, v, _ := strings.Cut(s.Tag, "=")
		if got, ok := d.Tags[k]; !ok || got != v {
			return false
		}
	}
	if s.Group != "" && !contains(d.Groups, s.Group) {
		return false
	}
	return (s.Model == "" || d.Model == s.Model) && (s.Operator == "" || d.Operator == s.Operator)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Plan is a rollout's phases, in order, with its health gates and time limits.
type Plan struct {
	Phases []Phase `yaml:"phases"`
	// Gates are the phase's health checks; none given: DefaultGates. An empty list ("gates:
	// []") turns them off.
	Gates []Gate `yaml:"gates"`
	// Confirm is how long a device must run the new version, having reconnected with it,
	// before its update counts as done. Default 10 minutes.
	Confirm time.Duration `yaml:"confirm"`
	// Deadline is how long a device has, from the offer, to report running the version
	// offered; after it the device counts as unreachable. Default 48 hours.
	Deadline time.Duration `yaml:"deadline"`
	// AbsentAfter: a device not seen for this long when its phase offers the release is
	// placed in the canary phase instead and waits until it is seen again. Default 180 days.
	AbsentAfter time.Duration `yaml:"absent_after"`
	// DownloadWindow spreads the downloads of the devices offered in one step: each waits a
	// uniform random time below it before it downloads (the offer's start_within). Default
	// 10 minutes, or half of Deadline when that is shorter; at most a day and less than
	// Deadline; "1s" is as good as at once.
	DownloadWindow time.Duration `yaml:"download_window"`
}

// Defaults of a plan's time limits.
const (
	DefaultConfirm     = 10 * time.Minute
	DefaultDeadline    = 48 * time.Hour
	DefaultAbsentAfter = 180 * 24 * time.Hour
	// DefaultDownloadWindow: 1,000 devices offered at once start about 1.7 downloads a second.
	DefaultDownloadWindow = 10 * time.Minute
)

// WithDefaults fills the plan's unset limits and gates.
func (p Plan) WithDefaults() Plan {
	if p.Gates == nil {
		p.Gates = DefaultGates()
	}
	gates := make([]Gate, len(p.Gates))
	for i, g := range p.Gates {
		gates[i] = g.withDefaults()
	}
	p.Gates = gates
	if p.Confirm == 0 {
		p.Confirm = DefaultConfirm
	}
	if p.Deadline == 0 {
		p.Deadline = DefaultDeadline
	}
	if p.AbsentAfter == 0 {
		p.AbsentAfter = DefaultAbsentAfter
	}
	if p.DownloadWindow == 0 {
		p.DownloadWindow = min(DefaultDownloadWindow, p.Deadline/2)
	}
	return p
}

// CanaryPhase is the phase a device absent for long re-enters through: the phase named
// "canary", else the first phase without a selector.
func (p Plan) CanaryPhase() int {
	for i, ph := range p.Phases {
		if ph.Name == "canary" {
			return i
		}
	}
	for i, ph := range p.Phases {
		if ph.Select.IsZero() {
			return i
		}
	}
	return len(p.Phases) - 1
}

// Built-in plans.
const (
	// PlanGuide is the field guide's: test devices (tagged ring=test, at most 10) for 2 days;
	// canary 5 % for a week; expansion to 15 % (10 % more, at random) for a week; complete.
	PlanGuide = "guide"
	// Plan151 is the article's: 1 %, 5 %, 10 %, then everyone, a day apart.
	Plan151 = "1-5-10-100"
)

// TestTag is the tag that marks a test device for the guide plan's first phase.
const TestTag = "ring=test"

// Builtin returns a built-in plan by name.
func Builtin(name string) (Plan, error) {
	day := 24 * time.Hour
	switch name {
	case PlanGuide:
		return Plan{Phases: []Phase{
			{Name: "test", Select: Selector{Tag: TestTag}, Max: 10, Soak: 2 * day},
			{Name: "canary", Percent: 5, Soak: 7 * day},
			{Name: "expansion", Percent: 15, Soak: 7 * day},
			{Name: "complete", Percent: 100},
		}}, nil
	case Plan151:
		return Plan{Phases: []Phase{
			{Name: "1%", Percent: 1, Soak: day},
			{Name: "5%", Percent: 5, Soak: day},
			{Name: "10%", Percent: 10, Soak: day},
			{Name: "complete", Percent: 100},
		}}, nil
	}
	return Plan{}, fmt.Errorf("%w: no built-in plan %q; use %s, %s or a plan file", ErrPlan, name, PlanGuide, Plan151)
}

// ParsePlan reads a plan file: strict YAML (unknown and repeated keys are errors naming the
// key and its line), soaks in Go or Prometheus durations ("20s", "2d", "1w").
func ParsePlan(data []byte) (Plan, error) {
	var p Plan
	dec := yamlconf.Decoder{ParseDuration: parseDuration, DurationHint: "write a number with a unit, such as 20s, 36h, 2d or 1w"}
	if _, err := dec.Decode(data, &p); err != nil {
		return Plan{}, fmt.Errorf("%w: %w", ErrPlan, err)
	}
	if err := p.Validate(); err != nil {
		return Plan{}, err
	}
	return p, nil
}

func parseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	d, err := model.ParseDurationAllowNegative(s)
	return time.Duration(d), err
}

func planErr(key, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrPlan, key, fmt.Sprintf(format, args...))
}

// MaxPhases bounds a plan's phases.
const MaxPhases = 20

// Validate checks a plan: 1 to MaxPhases phases with unique names, shares from 0 to 100 that
// never fall, a last phase that reaches every device, no negative soak or bound, selectors
// that are well formed.
func (p Plan) Validate() error {
	if len(p.Phases) == 0 || len(p.Phases) > MaxPhases {
		return planErr("phases", "want 1 to %d phases, got %d", MaxPhases, len(p.Phases))
	}
	names := map[string]int{}
	prev := 0.0
	for i, ph := range p.Phases {
		key := fmt.Sprintf("phases[%d]", i)
		switch {
		case ph.Name == "":
			return planErr(key+".name", "required")
		case len(ph.Name) > 64:
			return planErr(key+".name", "at most 64 bytes")
		case math.IsNaN(ph.Percent) || ph.Percent < 0 || ph.Percent > 100:
			return planErr(key+".percent", "want 0 to 100, got %v", ph.Percent)
		case ph.Percent < prev:
			return planErr(key+".percent", "%v is less than an earlier phase's %v: phases are nested, each adds to the ones before", ph.Percent, prev)
		case ph.Percent == 0 && ph.Select.IsZero() && ph.Max == 0:
			return planErr(key, "adds no device: give percent, or select with max")
		case ph.Max < 0:
			return planErr(key+".max", "must not be negative, got %d", ph.Max)
		case ph.Soak < 0:
			return planErr(key+".soak", "must not be negative, got %v", ph.Soak)
		}
		if j, dup := names[ph.Name]; dup {
			return planErr(key+".name", "%q is already the name of phases[%d]", ph.Name, j)
		}
		names[ph.Name] = i
		if t := ph.Select.Tag; t != "" {
			if k, _, ok := strings.Cut(t, "="); !ok || k == "" {
				return planErr(key+".select.tag", "%q is not key=value", t)
			}
		}
		prev = ph.Percent
	}
	if p.Confirm < 0 || p.Deadline < 0 || p.AbsentAfter < 0 {
		return planErr("confirm/deadline/absent_after", "must not be negative")
	}
	if w := p.DownloadWindow; w < 0 || w > protocol.MaxStartWithin {
		return planErr("download_window", "want 0 (the default, %v) to %v, got %v", DefaultDownloadWindow, protocol.MaxStartWithin, w)
	}
	if d := p.WithDefaults(); p.DownloadWindow > 0 && d.DownloadWindow >= d.Deadline {
		return planErr("download_window", "%v is not less than the deadline %v: devices would count as unreachable before they start", d.DownloadWindow, d.Deadline)
	}
	if len(p.Gates) > 32 {
		return planErr("gates", "at most 32 gates, got %d", len(p.Gates))
	}
	gnames := map[string]int{}
	for i, g := range p.Gates {
		if err := g.withDefaults().validate(); err != nil {
			return planErr(fmt.Sprintf("gates[%d]", i), "%v", err)
		}
		if j, dup := gnames[g.Name]; dup {
			return planErr(fmt.Sprintf("gates[%d].name", i), "%q is already the name of gates[%d]", g.Name, j)
		}
		gnames[g.Name] = i
	}
	if last := p.Phases[len(p.Phases)-1]; last.Percent != 100 || !last.Select.IsZero() || last.Max != 0 {
		return planErr(fmt.Sprintf("phases[%d]", len(p.Phases)-1), "the last phase must reach every device: percent 100, no select, no max")
	}
	return nil
}
