package anomaly

import (
	"fmt"
	"math"
)

// Outlier is a dimension value whose metric stands well above the rest of the fleet's now,
// whether or not anything moved in time.
//
// Analyze finds moves: a fault present since before the baseline (a fleet that started with
// a bad firmware, a model that always drops more) is no move, and Analyze is silent about it.
// FindOutlier is the cross-sectional look that catches those: the report lists its result
// beside the findings, but no series is written for it (the rule MillwrightGroupDropRateHigh
// alerts on the same comparison).
type Outlier struct {
	Metric    Metric `json:"metric"`
	Dimension string `json:"dimension"`
	Value     string `json:"value"`
	// Factor is the value's metric now over the rest of the fleet's now; FactorLow its lower
	// bound (the value's numerator less two standard deviations), by which outliers are
	// ranked, so that a small group's noise does not outrank a large group's fault.
	Factor    float64 `json:"factor"`
	FactorLow float64 `json:"factor_low"`
	// Z is the value's excess over the rest's rate in standard deviations.
	Z float64 `json:"z"`
	// Share is the value's excess over the rest's rate as a share of the fleet's numerator
	// (of all drops, of all delay seconds).
	Share   float64 `json:"share"`
	Devices int     `json:"devices"`
	Now     float64 `json:"now"`
	RestNow float64 `json:"rest_now"`
	Text    string  `json:"text"`
}

// FindOutlier returns the dimension value of in whose metric now stands highest above the rest
// of the fleet's (by the lower bound of the factor): at least cfg.MinDevices devices, z of at
// least cfg.MinZ, a lower bound of at least cfg.MinOutlierFactor, and a difference from the
// rest of at least the metric's MinDelta (3× of 0.1 s of delay is nothing to act on). It looks only at rates
// and means (drops, ingest delay): a group of devices all offline is usually a site switched
// off, not a fault to name. It returns nil when no value stands out.
//
// The largest lower-bound factor names the most specific group: when firmware 2.1.0 (all on
// model gw-200) drops five times as often, gw-200's rate is diluted by its other firmware and
// a subset of the 2.1.0 devices has some of the faulty devices in its rest, so both stand
// less far above their rests than 2.1.0 does.
func FindOutlier(in Input, cfg Config) *Outlier {
	k := in.Metric.Kind()
	if k == KindRatio || cfg.MinOutlierFactor <= 0 {
		return nil
	}
	var best *Outlier
	for key, s := range in.Slices {
		if s.Devices < cfg.MinDevices || s.Now.Den <= 0 || s.Now.Num <= 0 {
			continue
		}
		rest := in.Fleet.Now.sub(s.Now)
		if rest.Den <= 0 {
			continue
		}
		// A rest without a single event has, still, a rate below half an event.
		rr := math.Max(rest.Num, 0.5) / rest.Den
		// The unit variance: Poisson at the rest's rate for counts; for a mean, the spread of
		// the fleet's baseline windows (and at least meanFloor of the mean).
		unit := rr
		if k == KindMean {
			unit = math.Pow(meanFloor*rr, 2)
			if b := estimateBaseline(k, in.Fleet.Baseline); b.UnitVar > unit {
				unit = b.UnitVar
			}
		}
		factor, z := compare(s.Now, Counts{Num: rr * rest.Den, Den: rest.Den}, unit)
		// Two standard deviations below the value's numerator: √num for a count, the unit
		// spread over the exposure for a mean.
		sd := math.Sqrt(unit * s.Now.Den)
		if k == KindRate {
			sd = math.Sqrt(s.Now.Num)
		}
		low := (s.Now.Num - 2*sd) / s.Now.Den / rr
		if z < cfg.MinZ || low < cfg.MinOutlierFactor || s.Now.Num/s.Now.Den-rr < in.Metric.MinDelta() {
			continue // not far enough above the rest, or by too little to act on
		}
		if best != nil && (low < best.FactorLow || low == best.FactorLow && key.String() > best.Dimension+"="+best.Value) {
			continue
		}
		best = &Outlier{
			Metric: in.Metric, Dimension: key.Dimension, Value: key.Value,
			Factor: factor, FactorLow: low, Z: z,
			Share:   (s.Now.Num - rr*s.Now.Den) / in.Fleet.Now.Num,
			Devices: s.Devices, Now: s.Now.Num / s.Now.Den, RestNow: rr,
		}
	}
	if best != nil {
		best.Text = fmt.Sprintf("%s on %s=%s is %.1f× the rest of the fleet's (%d devices; %.0f %% of the fleet's %s)",
			in.Metric.Title(), best.Dimension, best.Value, best.Factor, best.Devices, 100*best.Share, in.Metric.numeratorName())
	}
	return best
}

// numeratorName names what the metric's numerator counts, for texts.
func (m Metric) numeratorName() string {
	switch m {
	case DropsPerDeviceHour:
		return "drops"
	case IngestDelaySeconds:
		return "delay"
	}
	return "offline devices"
}
