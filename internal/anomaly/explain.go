// Package anomaly finds when a fleet-level connectivity metric moves and names the dimension
// value (firmware=…, model=…, operator=…, group=…) that best explains the move; it also
// measures per-group trends over long ranges.
//
// The statistics (Analyze for moves, FindOutlier for values standing above the rest now,
// Trend) are pure functions of counts, and Generate makes the scenarios they are measured on.
// The Finder reads those counts from the embedded TSDB with PromQL, runs Analyze and
// FindOutlier every interval, writes its findings back as the series millwright_anomaly_factor
// and millwright_anomaly_share, records each window's counts for cheap trends
// (millwright_anomaly_window_num and _den), and keeps the latest report for the API. docs/monitoring.md, sections "Anomalies" and "Trends", explains the
// method and gives its measured precision and recall.
package anomaly

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Kind is how a metric's numerator behaves, which decides its noise model.
type Kind int

const (
	// KindRate is a count of events over an exposure (drops over device-hours): Poisson.
	KindRate Kind = iota
	// KindMean is a sum over a count (seconds of ingest delay over batches): the spread is
	// taken from the baseline windows.
	KindMean
	// KindRatio is a count of devices in a state over devices (offline over all): binomial.
	KindRatio
)

// Metric names a fleet metric the finder watches.
type Metric string

const (
	// DropsPerDeviceHour is disconnects with a cause other than clean, per device-hour.
	DropsPerDeviceHour Metric = "drops_per_device_hour"
	// IngestDelaySeconds is the mean arrival − measurement time of accepted batches.
	IngestDelaySeconds Metric = "ingest_delay_seconds"
	// OfflineRatio is the share of devices not online.
	OfflineRatio Metric = "offline_ratio"
)

// MinDelta is the smallest rise of the metric above its baseline worth reporting, whatever
// its significance: an operator acts on half a second more latency, not on 150 ms, however
// sure the statistics are of it (a restart of a few agents moves the fleet's mean delay that
// much). A group is named only if its own metric rose by this much; a move no group explains
// is reported only if the fleet's rose by this much. Drops: 0.05 per device-hour (one more drop a day on every device); ingest delay:
// 0.5 s; offline ratio: 0.02 (two devices in a hundred).
func (m Metric) MinDelta() float64 {
	switch m {
	case DropsPerDeviceHour:
		return 0.05
	case IngestDelaySeconds:
		return 0.5
	case OfflineRatio:
		return 0.02
	}
	return 0
}

// Metrics lists the metrics in the order the finder evaluates them.
var Metrics = []Metric{DropsPerDeviceHour, IngestDelaySeconds, OfflineRatio}

// Kind returns the metric's noise model.
func (m Metric) Kind() Kind {
	switch m {
	case IngestDelaySeconds:
		return KindMean
	case OfflineRatio:
		return KindRatio
	}
	return KindRate
}

// Title is how a report's text names the metric.
func (m Metric) Title() string {
	switch m {
	case DropsPerDeviceHour:
		return "drops per device-hour"
	case IngestDelaySeconds:
		return "mean ingest delay"
	case OfflineRatio:
		return "offline ratio"
	}
	return string(m)
}

// Dimensions are the device facts a cause is looked for in.
var Dimensions = []string{"firmware", "model", "operator", "group"}

// Counts is one window's numerator and denominator (the exposure): drops and device-hours,
// delay seconds and batches, offline devices and devices.
type Counts struct {
	Num float64 `json:"num"`
	Den float64 `json:"den"`
}

func (c Counts) sub(o Counts) Counts { return Counts{Num: c.Num - o.Num, Den: c.Den - o.Den} }

// Series is a slice of the fleet (or the whole fleet) over the current window and the trailing
// baseline windows.
type Series struct {
	// Now is the current window.
	Now Counts
	// Baseline holds the baseline windows, aligned across the slices of one Input: index i is
	// the same window for every slice (a slice without data in a window has zero Counts).
	Baseline []Counts
	// Devices is how many devices the slice has now; slices with fewer than
	// Config.MinDevices are never named as a cause.
	Devices int
}

// Key names a slice: a dimension and one of its values.
type Key struct {
	Dimension string `json:"dimension"`
	Value     string `json:"value"`
}

func (k Key) String() string { return k.Dimension + "=" + k.Value }

// Input is one metric's counts for the fleet and for every dimension value.
type Input struct {
	Metric Metric
	Fleet  Series
	Slices map[Key]Series
}

// Config holds the thresholds of Analyze.
type Config struct {
	// MinZ is how many standard deviations above its baseline a count must be to be called a
	// move (the fleet's, and a candidate group's against its own baseline and against the rest
	// of the fleet). Default 3 (docs/monitoring.md has what 3.5 would change: fewer false
	// alarms, fewer candidates, so more moves left unexplained on a noisy metric).
	MinZ float64
	// MinFactor is the smallest factor (now over baseline, and group over rest) called a move.
	// Default 1.25.
	MinFactor float64
	// MinShare is the smallest share of the fleet's excess a group must account for to be
	// named as the cause. Default 0.5.
	MinShare float64
	// MinDevices is the fewest devices a group must have to be named. Default 5.
	MinDevices int
	// GroupMinZ, when positive, lets a single value's move be a finding although the fleet's
	// did not move: the value's count must be GroupMinZ standard deviations above its own
	// baseline, at least twice that baseline and twice the rest of the fleet's rate, the rest
	// normal, and (for counts) at least 10 events. Default 6; 0 turns group findings off.
	GroupMinZ float64
	// MinOutlierFactor is how far above the rest of the fleet (the lower bound of the factor)
	// a value must stand now to be reported as an outlier (FindOutlier). Default 3; 0 turns
	// outliers off.
	MinOutlierFactor float64
}

// DefaultConfig returns the thresholds used by default.
func DefaultConfig() Config {
	return Config{MinZ: 3, MinFactor: 1.25, MinShare: 0.5, MinDevices: 5, MinOutlierFactor: 3, GroupMinZ: 6}
}

// Evidence holds the numbers a finding rests on.
type Evidence struct {
	// FleetNow and FleetBaseline are the fleet's metric now and its baseline level.
	FleetNow      float64 `json:"fleet_now"`
	FleetBaseline float64 `json:"fleet_baseline"`
	// FleetZ is the fleet's excess in standard deviations.
	FleetZ float64 `json:"fleet_z"`
	// Group* describe the named group (zero when no group explains the move).
	GroupNow      float64 `json:"group_now"`
	GroupBaseline float64 `json:"group_baseline"`
	GroupZ        float64 `json:"group_z"`
	GroupDevices  int     `json:"group_devices"`
	GroupCounts   Counts  `json:"group_counts"`
	// RestNow and RestBaseline are the rest of the fleet's metric (all devices outside the
	// group) now and its baseline level; RestZ its excess in standard deviations.
	RestNow      float64 `json:"rest_now"`
	RestBaseline float64 `json:"rest_baseline"`
	RestZ        float64 `json:"rest_z"`
	// Candidates is how many dimension values passed the tests before the most specific was
	// chosen.
	Candidates int `json:"candidates"`
}

// Finding is a fleet metric that moved, and the dimension value that best explains it.
type Finding struct {
	Metric Metric `json:"metric"`
	// Scope is "fleet" when the fleet's metric moved, "group" when only the named value's did
	// (Config.GroupMinZ); Factor is the fleet's either way.
	Scope string `json:"scope"`
	// Factor is the fleet metric now over its baseline level.
	Factor float64 `json:"factor"`
	// Dimension and Value name the cause; both empty when no single value explains the move.
	Dimension string `json:"dimension,omitempty"`
	Value     string `json:"value,omitempty"`
	// Share is the part of the fleet's excess the group accounts for (clamped to 0–1).
	Share float64 `json:"share"`
	// GroupFactor is the group's metric now over the rest of the fleet's now.
	GroupFactor float64 `json:"group_factor"`
	// OwnFactor is the group's metric now over its own baseline level.
	OwnFactor float64 `json:"own_factor"`
	// RestNormal says the rest of the fleet did not move: the group alone explains it.
	RestNormal bool     `json:"rest_normal"`
	Evidence   Evidence `json:"evidence"`
	// Text says it in one line: "drops per device-hour up 4.1×, explained by firmware=2.1.0
	// (92 % of the excess)".
	Text string `json:"text"`
}

// Key returns the finding's cause.
func (f Finding) Key() Key { return Key{Dimension: f.Dimension, Value: f.Value} }

// minBaselineWindows is how many baseline windows with exposure (and not outliers) the fleet
// must have before a move is called: a median and a MAD of fewer say nothing.
const minBaselineWindows = 3

// tieFactor is how close to the best lower-bound factor another candidate's must be to count
// as rising as far (see Analyze).
const tieFactor = 0.9

// A group finding (the fleet did not move) needs its value at least this many times its own
// baseline and the rest of the fleet, and, for counts, at least this many events now.
const (
	groupMinFactor = 2
	groupMinEvents = 10
)

// candidate is a dimension value under consideration.
type candidate struct {
	key                  Key
	s                    Series
	share                float64
	ownFactor, ownZ      float64
	vsRest, vsRestZ      float64
	restFactor, restZ    float64
	restNormal           bool
	groupBase, restLevel float64
	restNow              float64
	// lowFactor is the lower bound of ownFactor: the group's count less two standard
	// deviations, over what its own baseline predicts.
	lowFactor float64
}

// Analyze decides whether in's fleet metric moved up and, if it did, which dimension value
// explains it. It returns nil when nothing moved.
//
// The fleet moved when its count now is at least cfg.MinZ standard deviations and
// cfg.MinFactor times above its baseline (estimateBaseline). A dimension value is a candidate
// when it has at least cfg.MinDevices devices, moved against its own baseline (MinZ,
// MinFactor), stands above the rest of the fleet now (MinZ, MinFactor), and accounts for at
// least cfg.MinShare of the fleet's excess (its count now minus its own baseline's
// expectation, over the fleet's). Of the candidates, those whose rest of the fleet did not
// move (rest normal) are preferred, and of them the one that rose furthest above its own
// baseline (by the lower bound of that factor): when firmware=2.1.0 runs only on model=gw-200,
// both account for the excess and both rests are normal, but the model's other firmware is
// fine and dilutes its rise, so the firmware is named, the more specific explanation. A value whose rest also moved explains only part of the move and is
// named only when no value with a normal rest exists.
func Analyze(in Input, cfg Config) *Finding {
	k := in.Metric.Kind()
	fb := estimateBaseline(k, in.Fleet.Baseline)
	if fb.Kept < minBaselineWindows {
		return nil // too little history: just after a start, or a fleet just set up
	}
	factor, z := fb.test(in.Fleet.Now)
	if in.Fleet.Now.Den <= 0 {
		return nil
	}
	// A fleet that did not move may still hold a group that did, strongly: then the group
	// alone is the finding (Scope "group"), under stricter tests, since every value is tried.
	groupOnly := z < cfg.MinZ || factor < cfg.MinFactor
	if groupOnly && cfg.GroupMinZ <= 0 {
		return nil
	}
	fleetExcess := in.Fleet.Now.Num - fb.Level*in.Fleet.Now.Den
	f := &Finding{
		Metric: in.Metric,
		Scope:  "fleet",
		Factor: factor,
		Evidence: Evidence{
			FleetNow:      in.Fleet.Now.Num / in.Fleet.Now.Den,
			FleetBaseline: fb.Level,
			FleetZ:        z,
		},
	}
	var cands []candidate
	for key, s := range in.Slices {
		if s.Devices < cfg.MinDevices || s.Now.Den <= 0 {
			continue
		}
		c := candidate{key: key, s: s}
		gb := estimateBaseline(k, s.Baseline)
		c.groupBase = gb.Level
		c.ownFactor, c.ownZ = gb.test(s.Now)
		excess := s.Now.Num - gb.Level*s.Now.Den
		c.share = excess / fleetExcess
		if groupOnly {
			c.share = excess / math.Max(fleetExcess, excess)
		}
		rest := Series{Now: in.Fleet.Now.sub(s.Now)}
		for i, w := range in.Fleet.Baseline {
			if i < len(s.Baseline) {
				w = w.sub(s.Baseline[i])
			}
			rest.Baseline = append(rest.Baseline, w)
		}
		if rest.Now.Den <= 0 {
			continue // the group is the whole fleet: it explains nothing
		}
		rb := estimateBaseline(k, rest.Baseline)
		c.restLevel = rb.Level
		c.restNow = rest.Now.Num / rest.Now.Den
		c.restFactor, c.restZ = rb.test(rest.Now)
		c.restNormal = c.restZ < cfg.MinZ || c.restFactor < cfg.MinFactor
		unit := math.Max(gb.UnitVar, rb.UnitVar)
		c.vsRest, c.vsRestZ = compare(s.Now, rest.Now, unit)
		if gb.Level > 0 && gb.Exposure > 0 {
			sd := math.Sqrt(gb.UnitVar * s.Now.Den * (1 + s.Now.Den/gb.Exposure))
			c.lowFactor = (s.Now.Num - 2*sd) / s.Now.Den / gb.Level
		}
		if c.ownZ < cfg.MinZ || c.ownFactor < cfg.MinFactor || c.vsRestZ < cfg.MinZ ||
			c.vsRest < cfg.MinFactor || c.share < cfg.MinShare || s.Now.Num/s.Now.Den-gb.Level < in.Metric.MinDelta() {
			continue
		}
		if groupOnly && (c.ownZ < cfg.GroupMinZ || c.ownFactor < groupMinFactor || c.vsRest < groupMinFactor ||
			!c.restNormal || (k == KindRate && s.Now.Num < groupMinEvents)) {
			continue
		}
		cands = append(cands, c)
	}
	f.Evidence.Candidates = len(cands)
	if len(cands) == 0 && (groupOnly || f.Evidence.FleetNow-f.Evidence.FleetBaseline < in.Metric.MinDelta()) {
		return nil // no group moved alone, or a fleet move too small to act on and no group that rose by enough
	}
	if len(cands) == 0 {
		f.Text = fmt.Sprintf("%s up %.1f×, not explained by any single %s", in.Metric.Title(), factor, strings.Join(Dimensions, ", "))
		return f
	}
	// Among candidates with a normal rest, the one that rose furthest above its own baseline
	// (by the lower bound of that factor) is the most specific: a superset of the faulty group
	// is diluted by its healthy devices, and its share of the excess is inflated by their
	// noise; a subset has faulty devices in its rest, so its rest is not normal (or, if those
	// are few, it is as pure as the group, and the lower bound, which favours the larger
	// count, prefers the group). Against its own baseline, not the rest of the fleet: a model
	// that always drops more is no more specific for it.
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.restNormal != b.restNormal {
			if a.restNormal {
				return -1
			}
			return 1
		}
		if a.restNormal {
			if c := cmp.Compare(b.lowFactor, a.lowFactor); c != 0 {
				return c
			}
		}
		if c := cmp.Compare(b.share, a.share); c != 0 {
			return c
		}
		return cmp.Compare(a.key.String(), b.key.String())
	})
	c := cands[0]
	// A candidate that rose nearly as far (within tieFactor) and accounts for more of the
	// excess is the same explanation told better: a production line holding most of a faulty
	// model rises as far as the model, by noise sometimes a little further.
	if c.restNormal {
		for _, o := range cands[1:] {
			if o.restNormal && o.lowFactor >= tieFactor*cands[0].lowFactor && o.share > c.share {
				c = o
			}
		}
	}
	f.Dimension, f.Value = c.key.Dimension, c.key.Value
	f.Share = math.Min(math.Max(c.share, 0), 1)
	f.GroupFactor = c.vsRest
	f.OwnFactor = c.ownFactor
	f.RestNormal = c.restNormal
	f.Evidence.GroupNow = c.s.Now.Num / c.s.Now.Den
	f.Evidence.GroupBaseline = c.groupBase
	f.Evidence.GroupZ = c.ownZ
	f.Evidence.GroupDevices = c.s.Devices
	f.Evidence.GroupCounts = c.s.Now
	f.Evidence.RestNow = c.restNow
	f.Evidence.RestBaseline = c.restLevel
	f.Evidence.RestZ = c.restZ
	f.Text = fmt.Sprintf("%s up %.1f×, explained by %s (%.0f %% of the excess)", in.Metric.Title(), factor, c.key, 100*f.Share)
	if groupOnly {
		f.Scope = "group"
		f.Text = fmt.Sprintf("%s on %s up %.1f× (%.1f× the rest of the fleet; fleet-wide %.2f×)", in.Metric.Title(), c.key, c.ownFactor, c.vsRest, factor)
	}
	if !c.restNormal {
		f.Text += "; the rest of the fleet moved too"
	}
	return f
}
