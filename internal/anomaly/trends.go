package anomaly

import (
	"cmp"
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
	// Source is where the points come from: SourceRecorded, SourceRaw, or "" to take the
	// recorded window counts when they reach back to the first point, the raw series if not.
	Source string
}

// Trend sources.
const (
	// SourceRecorded reads the window counts the finder recorded (WindowNumSeries and
	// WindowDenSeries): one sample per window and value, cheap over months; the devices and
	// values are those of each window's time.
	SourceRecorded = "recorded"
	// SourceRaw reads every device's series over the range: exact for any range, with the
	// facts of now, but it reads every sample (docs/monitoring.md has the cost).
	SourceRaw = "raw"
)

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
	// Source is where the points came from: SourceRecorded or SourceRaw.
	Source string        `json:"source"`
	Series []TrendSeries `json:"series"`
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

// ParseTrendSource checks a source parameter: "", "auto", SourceRecorded or SourceRaw.
func ParseTrendSource(s string) (string, error) {
	switch s {
	case "", "auto":
		return "", nil
	case SourceRecorded, SourceRaw:
		return s, nil
	}
	return "", fmt.Errorf("unknown source %q (want auto, %s or %s)", s, SourceRecorded, SourceRaw)
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
// (each point the metric over the step before it), and its trend.
//
// From the raw series, the devices and their values are those of now (as in the anomaly
// finder): a device that moved to firmware 2.1.0 last week counts as 2.1.0 over the whole
// range, so its own history is the comparison. From the recorded window counts, each window
// counts the devices as they were then — the only way a trend over months stays cheap.
func (f *Finder) Trends(ctx context.Context, q TrendQuery) (*TrendReport, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	if !slices.Contains(Dimensions, q.Dimension) || !slices.Contains(Metrics, q.Metric) {
		return nil, fmt.Errorf("unknown metric %q or dimension %q", q.Metric, q.Dimension)
	}
	if _, err := ParseTrendSource(q.Source); err != nil {
		return nil, err
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
	rep.Source = q.Source
	if rep.Source == "" {
		rep.Source = SourceRaw
		if ok, err := recordedFrom(ctx, f.st, q, start); err != nil {
			return nil, err
		} else if ok {
			rep.Source = SourceRecorded
		}
	}
	var counts map[Key][]Counts
	if rep.Source == SourceRecorded {
		counts, err = recordedCounts(ctx, f.st, q, start, n)
	} else {
		counts, err = rawCounts(ctx, f.st, fs, q, end, n)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", q.Metric, err)
	}
	for k, cs := range counts {
		ts := TrendSeries{Dimension: k.Dimension, Value: k.Value, Devices: fs.values[k], Points: []Point{}}
		for i, c := range cs {
			if c.Den > 0 {
				ts.Points = append(ts.Points, Point{T: start.Add(time.Duration(i) * q.Step), V: c.Num / c.Den})
			}
		}
		ts.TrendResult = Trend(ts.Points)
		rep.Series = append(rep.Series, ts)
	}
	slices.SortFunc(rep.Series, func(a, b TrendSeries) int { return cmp.Compare(a.Value, b.Value) })
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

// rawCounts reads each value's counts at the n steps ending at end from every device's series.
func rawCounts(ctx context.Context, st Store, fs *facts, q TrendQuery, end time.Time, n int) (map[Key][]Counts, error) {
	in, err := collect(ctx, st, fs, q.Metric, end, q.Step, n-1, nil)
	if err != nil {
		return nil, err
	}
	out := map[Key][]Counts{}
	for k, s := range in.Slices {
		if k.Dimension == q.Dimension {
			out[k] = append(slices.Clone(s.Baseline), s.Now)
		}
	}
	return out, nil
}

// recordedSelector selects the recorded window counts of q's metric and dimension.
func recordedSelector(name string, q TrendQuery) string {
	return fmt.Sprintf(`%s{metric=%q,dimension=%q}`, name, string(q.Metric), q.Dimension)
}

// recordedFrom reports whether the fleet's recorded window counts of q's metric reach back
// to the first point's step.
func recordedFrom(ctx context.Context, st Store, q TrendQuery, start time.Time) (bool, error) {
	v, err := instant(ctx, st, fmt.Sprintf(`count_over_time(%s{metric=%q,dimension=""}[%s])`,
		WindowDenSeries, string(q.Metric), promDuration(q.Step)), start)
	if err != nil {
		return false, err
	}
	return len(v) > 0 && v[0].F > 0, nil
}

// recordedCounts reads each value's counts at the n steps from start from the recorded window
// counts: the sums of the windows that ended within each step.
func recordedCounts(ctx context.Context, st Store, q TrendQuery, start time.Time, n int) (map[Key][]Counts, error) {
	out := map[Key][]Counts{}
	for i, name := range []string{WindowNumSeries, WindowDenSeries} {
		qs := fmt.Sprintf(`sum by (value) (sum_over_time(%s[%s]))`, recordedSelector(name, q), promDuration(q.Step))
		end := start.Add(time.Duration(n-1) * q.Step)
		rq, err := st.Engine().NewRangeQuery(ctx, st.Queryable(), nil, qs, start, end, q.Step)
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", qs, err)
		}
		res := rq.Exec(ctx)
		m, err := res.Matrix()
		if res.Err != nil {
			err = res.Err
		}
		if err != nil {
			rq.Close()
			return nil, fmt.Errorf("query %s: %w", qs, err)
		}
		for _, s := range m {
			k := Key{Dimension: q.Dimension, Value: s.Metric.Get("value")}
			cs := out[k]
			if cs == nil {
				cs = make([]Counts, n)
				out[k] = cs
			}
			for _, p := range s.Floats {
				j := int((p.T - start.UnixMilli()) / q.Step.Milliseconds())
				if j < 0 || j >= n {
					continue
				}
				if i == 0 {
					cs[j].Num = p.F
				} else {
					cs[j].Den = p.F
				}
			}
		}
		rq.Close()
	}
	return out, nil
}
