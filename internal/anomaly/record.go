package anomaly

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// The series the finder records for trends (docs/monitoring.md, "Anomaly series"): per metric,
// for the fleet (no dimension and value labels) and for every dimension value, the numerator
// and the denominator of each whole window, written at the window's end. A trend over 90 days
// then reads one sample per window and value instead of every device's every sample.
const (
	WindowNumSeries = "millwright_anomaly_window_num"
	WindowDenSeries = "millwright_anomaly_window_den"
)

// record writes the counts of the last whole window — the windows are aligned to multiples of
// Options.Window since the Unix epoch — once, at the first run after it ends. Windows that
// ended while the finder did not run are not recorded afterwards.
func (f *Finder) record(ctx context.Context, now time.Time, fs *facts) error {
	end := time.UnixMilli(now.UnixMilli() - now.UnixMilli()%f.opts.Window.Milliseconds())
	f.mu.Lock()
	last := f.recorded
	f.mu.Unlock()
	if !end.After(last) || len(fs.keys) == 0 {
		return nil
	}
	if last.IsZero() {
		// After a restart the window may be recorded already: writing it again would be a
		// duplicate sample (refused when the counts differ).
		v, err := instant(ctx, f.st, fmt.Sprintf(`count_over_time(%s{metric=%q,dimension=""}[1s])`, WindowDenSeries, string(Metrics[0])), end)
		if err != nil {
			return fmt.Errorf("record window counts: %w", err)
		}
		if len(v) > 0 {
			f.mu.Lock()
			f.recorded = end
			f.mu.Unlock()
			return nil
		}
	}
	app, err := f.st.Appender(ctx)
	if err != nil {
		return fmt.Errorf("record window counts: %w", err)
	}
	ts := end.UnixMilli()
	var errs []error
	put := func(m Metric, k Key, c Counts) {
		for _, s := range []struct {
			name string
			v    float64
		}{{WindowNumSeries, c.Num}, {WindowDenSeries, c.Den}} {
			b := labels.NewScratchBuilder(4)
			b.Add(labels.MetricName, s.name)
			b.Add("metric", string(m))
			if k.Dimension != "" {
				b.Add("dimension", k.Dimension)
				b.Add("value", k.Value)
			}
			b.Sort()
			if _, err := app.Append(0, b.Labels(), ts, s.v); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, m := range Metrics {
		in, err := collect(ctx, f.st, fs, m, end, f.opts.Window, 0, nil)
		if err != nil {
			return errors.Join(fmt.Errorf("record window counts: %w", err), app.Rollback())
		}
		put(m, Key{}, in.Fleet.Now)
		for k, s := range in.Slices {
			put(m, k, s.Now)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(fmt.Errorf("record window counts: %w", err), app.Rollback())
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("record window counts: %w", err)
	}
	f.mu.Lock()
	f.recorded = end
	f.mu.Unlock()
	return nil
}
