package anomaly

import (
	"math"
	"time"
)

// Point is one value of a series at a time.
type Point struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}

// TrendAlpha is the significance level of Trend's Mann–Kendall test.
const TrendAlpha = 0.05

// TrendResult is the trend of one series.
type TrendResult struct {
	// Points is how many finite values the series had.
	Points int `json:"n"`
	// SlopePerDay is the Theil–Sen slope: the median of the slopes between every pair of
	// points, in the metric's unit per day.
	SlopePerDay float64 `json:"slope_per_day"`
	// Start and End are the fitted line's values at the first and last point (the line
	// through the median point with the Theil–Sen slope).
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	// Tau is Kendall's tau between time and value, −1 to 1.
	Tau float64 `json:"tau"`
	// P is the two-sided p-value of the Mann–Kendall test (no trend).
	P float64 `json:"p"`
	// Significant is P < TrendAlpha with at least 4 points.
	Significant bool `json:"significant"`
	// Direction is "up", "down" or "flat" (flat: not significant).
	Direction string `json:"direction"`
}

// Trend measures the trend of pts (in time order; NaN and infinite values are skipped) with
// the Theil–Sen slope and the Mann–Kendall test.
//
// Both are rank methods: a weekly drop rate has outliers (the week of an outage) and is not
// normal, and one bad week moves an OLS slope and its t-test as much as a real trend would;
// Theil–Sen's slope tolerates up to 29 % of points being wild, and Mann–Kendall asks only
// whether later values tend to be larger, with no assumption on their distribution. The
// variance of S is corrected for ties (weeks with zero drops tie often) and a continuity
// correction is applied; with 13 weekly points the normal approximation of S is adequate.
func Trend(pts []Point) TrendResult {
	var t, v []float64
	for _, p := range pts {
		if math.IsNaN(p.V) || math.IsInf(p.V, 0) {
			continue
		}
		t = append(t, float64(p.T.UnixMilli())/float64(24*time.Hour/time.Millisecond))
		v = append(v, p.V)
	}
	n := len(v)
	res := TrendResult{Points: n, Direction: "flat", P: 1}
	if n < 2 {
		return res
	}
	var slopes []float64
	s := 0.0
	for i := range n {
		for j := i + 1; j < n; j++ {
			if t[j] != t[i] {
				slopes = append(slopes, (v[j]-v[i])/(t[j]-t[i]))
			}
			s += sign(v[j] - v[i])
		}
	}
	res.SlopePerDay = median(slopes)
	// Intercept through the medians: b = median(v − slope·t).
	resid := make([]float64, n)
	for i := range v {
		resid[i] = v[i] - res.SlopePerDay*t[i]
	}
	b := median(resid)
	res.Start = b + res.SlopePerDay*t[0]
	res.End = b + res.SlopePerDay*t[n-1]
	pairs := float64(n*(n-1)) / 2
	res.Tau = s / pairs
	// Var(S) with the tie correction: n(n−1)(2n+5) − Σ t_k(t_k−1)(2t_k+5), over 18.
	ties := map[float64]int{}
	for _, x := range v {
		ties[x]++
	}
	vs := float64(n*(n-1)*(2*n+5)) / 18
	for _, c := range ties {
		if c > 1 {
			vs -= float64(c*(c-1)*(2*c+5)) / 18
		}
	}
	if vs <= 0 {
		return res
	}
	var z float64
	switch {
	case s > 0:
		z = (s - 1) / math.Sqrt(vs)
	case s < 0:
		z = (s + 1) / math.Sqrt(vs)
	}
	res.P = math.Erfc(math.Abs(z) / math.Sqrt2)
	res.Significant = n >= 4 && res.P < TrendAlpha
	if res.Significant {
		if s > 0 {
			res.Direction = "up"
		} else {
			res.Direction = "down"
		}
	}
	return res
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
