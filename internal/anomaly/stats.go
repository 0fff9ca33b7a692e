package anomaly

import (
	"math"
	"slices"
)

// madScale turns a median absolute deviation into a standard deviation for normal data.
const madScale = 1.4826

// outlierSigmas is how far (in robust standard deviations) a baseline window's rate may lie from
// the baseline's median before it is left out of the baseline level: a past incident in one
// baseline window must not raise the level the present is compared with.
const outlierSigmas = 3.5

// median returns the median of xs (0 for none). xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// mad returns the median absolute deviation of xs from m.
func mad(xs []float64, m float64) float64 {
	d := make([]float64, len(xs))
	for i, x := range xs {
		d[i] = math.Abs(x - m)
	}
	return median(d)
}

// baseline is what a slice's trailing windows say about its metric.
type baseline struct {
	// Level is the metric's expected value per unit of exposure (a rate, a mean or a ratio).
	Level float64
	// UnitVar is the variance of one unit of exposure's numerator: the numerator of an
	// exposure e has variance UnitVar·e.
	UnitVar float64
	// Exposure is the baseline windows' total exposure (those kept).
	Exposure float64
	// Kept and Dropped count the baseline windows used and those left out as outliers.
	Kept, Dropped int
}

// estimateBaseline computes the baseline of windows for a metric of kind k.
//
// The level is the pooled rate Σnum/Σden (the maximum-likelihood rate for Poisson counts, and
// unbiased when a window holds only a few counts, where a median of per-window rates is not)
// over the windows whose rate lies within outlierSigmas robust deviations of the median window
// rate. The robust deviation is 1.4826·MAD of the window rates, but never below what the
// kind's own noise model gives a window of that exposure, so windows with few counts are not
// called outliers for being noisy.
//
// The unit variance is the larger of the model's (Poisson: the rate; binomial: p(1−p)) and the
// over-dispersion the windows show (1.4826·MAD of the window rates, squared, times the median
// window exposure): a fleet whose drop rate swings from window to window more than Poisson
// noise (a daily cycle, network weather) needs a larger move to be called an anomaly.
func estimateBaseline(k Kind, windows []Counts) baseline {
	var rates, dens []float64
	var num, den float64
	for _, w := range windows {
		if w.Den <= 0 {
			continue
		}
		rates = append(rates, w.Num/w.Den)
		dens = append(dens, w.Den)
		num += w.Num
		den += w.Den
	}
	if den <= 0 {
		return baseline{}
	}
	pooled := num / den
	med := median(rates)
	spread := madScale * mad(rates, med)
	b := baseline{}
	num, den = 0, 0
	for i, r := range rates {
		sigma := math.Max(spread, math.Sqrt(k.modelVar(pooled)/dens[i]))
		if k == KindMean {
			sigma = math.Max(spread, meanFloor*pooled/math.Sqrt(dens[i]))
		}
		if sigma > 0 && math.Abs(r-med) > outlierSigmas*sigma {
			b.Dropped++
			continue
		}
		b.Kept++
		num += rates[i] * dens[i]
		den += dens[i]
	}
	b.Level = num / den
	b.Exposure = den
	medDen := median(dens)
	over := spread * spread * medDen
	switch k {
	case KindMean:
		// A mean's per-sample spread is unknown (only sums and counts are stored): take it
		// from the windows, and at least meanFloor of the mean.
		b.UnitVar = math.Max(over, math.Pow(meanFloor*b.Level, 2))
	default:
		b.UnitVar = math.Max(over, k.modelVar(b.Level))
	}
	return b
}

// meanFloor is the smallest per-sample standard deviation assumed for a mean, as a fraction of
// the mean: with identical baseline windows the MAD is 0, and without a floor any change at all
// would be significant.
const meanFloor = 0.5

// modelVar is the variance of one unit of exposure's numerator under the kind's noise model.
func (k Kind) modelVar(level float64) float64 {
	switch k {
	case KindRate:
		return level
	case KindRatio:
		p := math.Min(math.Max(level, 0), 1)
		return p * (1 - p)
	}
	return 0
}

// test compares now with a baseline: it returns the factor now/level and z, the excess of the
// numerator over its expectation in standard deviations. The variance counts both the
// present window's noise and the baseline's own uncertainty (a two-sample test):
// UnitVar·den·(1 + den/baselineExposure).
func (b baseline) test(now Counts) (factor, z float64) {
	if now.Den <= 0 || b.Exposure <= 0 {
		return 0, 0
	}
	expected := b.Level * now.Den
	v := b.UnitVar * now.Den * (1 + now.Den/b.Exposure)
	// A baseline of no events at all still has an uncertainty: half an event over its exposure.
	if v <= 0 {
		v = now.Den * (0.5 / b.Exposure) * (1 + now.Den/b.Exposure)
	}
	z = (now.Num - expected) / math.Sqrt(v)
	level := b.Level
	if level <= 0 {
		level = 0.5 / b.Exposure
	}
	return now.Num / now.Den / level, z
}

// compare tests group g against rest r, both now: the factor rate(g)/rate(r) and z of g's
// numerator against what r's rate predicts, with unit variance unitVar (the fleet's baseline's).
func compare(g, r Counts, unitVar float64) (factor, z float64) {
	if g.Den <= 0 || r.Den <= 0 {
		return 0, 0
	}
	rr := r.Num / r.Den
	expected := rr * g.Den
	v := unitVar * g.Den * (1 + g.Den/r.Den)
	if v <= 0 {
		v = g.Den * (0.5 / r.Den)
	}
	z = (g.Num - expected) / math.Sqrt(v)
	if rr <= 0 {
		rr = 0.5 / r.Den
	}
	return g.Num / g.Den / rr, z
}
