package anomaly

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// TrendQuery asks for the trend of a metric per value of a dimension.
type TrendQuery struct {
	Metric    Metric
	Dimension string
	// Range is how far back from End the series go; Step the length of each point's window
	// (a weekly drop rate: Step 1w).
	Range, Step time.Duration
	// End is the last point's time; zero means now.
	End time.Time
}

// TrendSeries is one dimension value's series and its trend.
type TrendSeries struct {
	Dimension string  `json:"dimension"`
	Value     string  `json:"value"`
	Devices   int     `json:"devices"`
	Points    []Point `json:"points"`
	TrendResult
	// Q is P adjusted for the number of values in the report (Benjamini–Hochberg);
	// Significant and Direction follow it.
	Q float64 `json:"q"`
}

// TrendReport answers a TrendQuery.
type TrendReport struct {
	Metric    Metric        `json:"metric"`
	Dimension string        `json:"dimension"`
	Start     time.Time     `json:"start"`
	End       time.Time     `json:"end"`
	Step      time.Duration `json:"step"`
	Series    []TrendSeries `json:"series"`
	// DroppedValues counts the dimension's values not considered (Options.MaxValues).
	DroppedValues int `json:"dropped_values,omitempty"`
}

// ParseTrendQuery checks the parameters of a trend query as the API takes them: a metric
// name, a dimension, a range and a step in Prometheus' duration syntax ("90d", "1w").
func ParseTrendQuery(metric, dimension, rng, step string) (TrendQuery, error) {
	q := TrendQuery{Metric: Metric(metric), Dimension: dimension}
	if !slices.Contains(Metrics, q.Metric) {
		return q, fmt.Errorf("unknown metric %q (want one of %v)", metric, Metrics)
	}
	if !slices.Contains(Dimensions, dimension) {
		return q, fmt.Errorf("unknown dimension %q (want one of %v)", dimension, Dimensions)
	}
	var err error
	if q.Range, err = modelDuration(rng); err != nil {
		return q, fmt.Errorf("bad range: %w", err)
	}
	if q.Step, err = modelDuration(step); err != nil {
		return q, fmt.Errorf("bad step: %w", err)
	}
	return q, q.check()
}

func (q TrendQuery) check() error {
	if q.Step < time.Minute || q.Step%time.Second != 0 {
		return fmt.Errorf("step %s: must be a whole number of seconds, at least 1m", q.Step)
	}
	if q.Range < 3*q.Step {
		return fmt.Errorf("range %s: must hold at least 3 steps of %s", q.Range, q.Step)
	}
	if n := q.Range / q.Step; n > MaxTrendPoints {
		return fmt.Errorf("range %s / step %s = %d points: %w (at most %d)", q.Range, q.Step, n, ErrTooManyPoints, MaxTrendPoints)
	}
	return nil
}

// Trends computes, for each value of q.Dimension, the metric at every step of the range
// (each point the metric over the step before it), and its trend. The devices and their
// values are those of now (as in the anomaly finder): a device that moved to firmware 2.1.0
// last week counts as 2.1.0 over the whole range, so its own history is the comparison.
func (f *Finder) Trends(ctx context.Context, q TrendQuery) (*TrendReport, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	if !slices.Contains(Dimensions, q.Dimension) || !slices.Contains(Metrics, q.Metric) {
		return nil, fmt.Errorf("unknown metric %q or dimension %q", q.Metric, q.Dimension)
	}
	end := q.End
	if end.IsZero() {
		end = f.clk.Now()
	}
	end = end.Truncate(time.Second)
	n := int(q.Range / q.Step)
	start := end.Add(-time.Duration(n-1) * q.Step)
	ctx, cancel := context.WithTimeout(ctx, f.opts.QueryTimeout)
	defer cancel()
	fs, err := loadFacts(ctx, f.st, end, f.opts.MaxValues)
	if err != nil {
		return nil, fmt.Errorf("read device facts: %w", err)
	}
	rep := &TrendReport{Metric: q.Metric, Dimension: q.Dimension, Start: start, End: end, Step: q.Step, Series: []TrendSeries{}, DroppedValues: fs.dropped[q.Dimension]}
	in, err := collect(ctx, f.st, fs, q.Metric, end, q.Step, n-1, nil)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", q.Metric, err)
	}
	for k, s := range in.Slices {
		if k.Dimension != q.Dimension {
			continue
		}
		ts := TrendSeries{Dimension: k.Dimension, Value: k.Value, Devices: s.Devices, Points: []Point{}}
		for i, c := range append(slices.Clone(s.Baseline), s.Now) {
			v := math.NaN()
			if c.Den > 0 {
				v = c.Num / c.Den
			}
			if !math.IsNaN(v) {
				ts.Points = append(ts.Points, Point{T: start.Add(time.Duration(i) * q.Step), V: v})
			}
		}
		ts.TrendResult = Trend(ts.Points)
		rep.Series = append(rep.Series, ts)
	}
	slices.SortFunc(rep.Series, func(a, b TrendSeries) int { return compareStr(a.Value, b.Value) })
	adjustSignificance(rep.Series)
	return rep, nil
}

// adjustSignificance controls the false discovery rate over the values of one report
// (Benjamini–Hochberg): with 20 firmware versions and no trend at all, a test at 5 % each
// would call one of them significant on average. Each series' Q is its adjusted p-value, and
// Significant (and Direction) follow Q < TrendAlpha instead of P.
func adjustSignificance(ss []TrendSeries) {
	order := make([]int, len(ss))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case ss[a].P < ss[b].P:
			return -1
		case ss[a].P > ss[b].P:
			return 1
		}
		return 0
	})
	m := float64(len(ss))
	q := 1.0
	for r := len(order) - 1; r >= 0; r-- {
		i := order[r]
		q = math.Min(q, ss[i].P*m/float64(r+1))
		ss[i].Q = q
		ss[i].Significant = ss[i].TrendResult.Points >= 4 && q < TrendAlpha
		if !ss[i].Significant {
			ss[i].Direction = "flat"
		}
	}
}
