package anomaly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	"github.com/millwright/millwright/clock"
)

// The series the finder writes (docs/monitoring.md, "Anomaly series").
const (
	FactorSeries = "millwright_anomaly_factor"
	ShareSeries  = "millwright_anomaly_share"
)

// Report is one run's result.
type Report struct {
	// Time is the end of the current window.
	Time time.Time `json:"time"`
	// Window is the window's length; BaselineWindows how many windows before it are the
	// baseline.
	Window          time.Duration `json:"window"`
	BaselineWindows int           `json:"baseline_windows"`
	// Devices is how many devices the fleet had (with an info series).
	Devices int `json:"devices"`
	// Findings holds one finding per metric that moved; empty when nothing did.
	Findings []Finding `json:"findings"`
	// Outliers holds, per metric (drops, ingest delay), the value that stands furthest above
	// the rest of the fleet now, if one stands out by Options.OutlierFactor: a fault present
	// since before the baseline is no move, but it is an outlier. No series is written for
	// them.
	Outliers []Outlier `json:"outliers"`
	// DroppedValues counts, per dimension, values not considered (Options.MaxValues).
	DroppedValues map[string]int `json:"dropped_values,omitempty"`
	// Took is how long the run took.
	Took time.Duration `json:"took"`
}

// Finder runs Analyze over the store every interval, writes its findings as series and keeps
// the latest report.
type Finder struct {
	st   Store
	opts Options
	clk  clock.Clock
	log  *slog.Logger

	mu       sync.Mutex
	latest   *Report
	written  map[string]labels.Labels // the series of the last run's findings, by their key
	recorded time.Time                // the end of the last window whose counts were recorded
}

// New returns a finder over st. Zero fields of opts take their defaults; opts must pass
// Validate then. A nil clk is the real clock, a nil logger logs nowhere.
func New(st Store, opts Options, clk clock.Clock, logger *slog.Logger) (*Finder, error) {
	opts = opts.withDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if clk == nil {
		clk = clock.Real()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Finder{st: st, opts: opts, clk: clk, log: logger, written: map[string]labels.Labels{}}, nil
}

// Options returns the options in use, defaults filled in.
func (f *Finder) Options() Options { return f.opts }

// Latest returns the latest report, nil before the first run.
func (f *Finder) Latest() *Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.latest
}

// Run runs the finder every interval until ctx ends. A failed run is logged and the next one
// tried at its time.
func (f *Finder) Run(ctx context.Context) error {
	for {
		if !clock.Sleep(ctx, f.clk, f.opts.Interval) {
			return nil
		}
		if _, err := f.RunOnce(ctx); err != nil && ctx.Err() == nil {
			f.log.Warn("anomaly run failed", "err", err)
		}
	}
}

// RunOnce evaluates every metric over the window ending now, writes the findings' series
// (and stale markers for findings that ended) and keeps the report.
func (f *Finder) RunOnce(ctx context.Context) (*Report, error) {
	start := f.clk.Now()
	now := start.Truncate(time.Second)
	ctx, cancel := context.WithTimeout(ctx, f.opts.QueryTimeout)
	defer cancel()
	rep, fs, err := f.evaluate(ctx, now)
	if err != nil {
		return nil, err
	}
	if err := f.write(ctx, rep); err != nil {
		return nil, err
	}
	if err := f.record(ctx, now, fs); err != nil {
		// The report stands; the trend of this window falls back to the raw series.
		f.log.Warn("anomaly: window counts not recorded", "err", err)
	}
	rep.Took = f.clk.Now().Sub(start)
	f.mu.Lock()
	f.latest = rep
	f.mu.Unlock()
	for _, fd := range rep.Findings {
		f.log.Info("anomaly", "text", fd.Text, "factor", fd.Factor, "dimension", fd.Dimension, "value", fd.Value, "share", fd.Share)
	}
	return rep, nil
}

func (f *Finder) evaluate(ctx context.Context, now time.Time) (*Report, *facts, error) {
	fs, err := loadFacts(ctx, f.st, now, f.opts.MaxValues)
	if err != nil {
		return nil, nil, fmt.Errorf("read device facts: %w", err)
	}
	rep := &Report{Time: now, Window: f.opts.Window, BaselineWindows: f.opts.BaselineWindows, Devices: len(fs.keys), Findings: []Finding{}, Outliers: []Outlier{}}
	if len(fs.dropped) > 0 {
		rep.DroppedValues = fs.dropped
		f.log.Warn("anomaly: dimension values over the bound left out", "dropped", fs.dropped, "max_values", f.opts.MaxValues)
	}
	if len(fs.keys) == 0 {
		return rep, fs, nil
	}
	cfg := f.opts.config()
	cache := map[string]perDevice{}
	for _, m := range Metrics {
		in, err := collect(ctx, f.st, fs, m, now, f.opts.Window, f.opts.BaselineWindows, cache)
		if err != nil {
			return nil, nil, fmt.Errorf("read %s: %w", m, err)
		}
		if fd := Analyze(in, cfg); fd != nil {
			rep.Findings = append(rep.Findings, *fd)
		}
		if o := FindOutlier(in, cfg); o != nil {
			rep.Outliers = append(rep.Outliers, *o)
		}
	}
	return rep, fs, nil
}

// seriesLabels are a finding's series labels (dimension and value absent for a move no value
// explains).
func seriesLabels(name string, fd Finding) labels.Labels {
	b := labels.NewScratchBuilder(4)
	b.Add(labels.MetricName, name)
	b.Add("metric", string(fd.Metric))
	if fd.Dimension != "" {
		b.Add("dimension", fd.Dimension)
		b.Add("value", fd.Value)
	}
	b.Sort()
	return b.Labels()
}

// write appends each finding's factor and share at rep.Time, and a stale marker to the series
// of the last run's findings that are gone, so that an alert on them resolves at once.
func (f *Finder) write(ctx context.Context, rep *Report) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	app, err := f.st.Appender(ctx)
	if err != nil {
		return fmt.Errorf("write anomaly series: %w", err)
	}
	ts := rep.Time.UnixMilli()
	now := map[string]labels.Labels{}
	var errs []error
	for _, fd := range rep.Findings {
		for _, s := range []struct {
			name string
			v    float64
		}{{FactorSeries, fd.Factor}, {ShareSeries, fd.Share}} {
			l := seriesLabels(s.name, fd)
			v := s.v
			if math.IsInf(v, 0) || math.IsNaN(v) {
				v = math.MaxFloat64
			}
			if _, err := app.Append(0, l, ts, v); err != nil {
				errs = append(errs, err)
			}
			now[l.String()] = l
		}
	}
	var gone []string
	for k, l := range f.written {
		if _, ok := now[k]; !ok {
			gone = append(gone, k)
			if _, err := app.Append(0, l, ts, math.Float64frombits(value.StaleNaN)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(fmt.Errorf("write anomaly series: %w", err), app.Rollback())
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("write anomaly series: %w", err)
	}
	slices.Sort(gone)
	for _, k := range gone {
		f.log.Info("anomaly ended", "series", k)
	}
	f.written = now
	return nil
}
