package anomaly_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/anomaly"
	"github.com/millwright/millwright/internal/optcheck"
	"github.com/millwright/millwright/internal/tsdb"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// device is one synthetic device and its counters.
type device struct {
	id, firmware, model, operator, group string
	drops, delaySum, delayCount          float64
}

// fleet writes the monitor's series (docs/monitoring.md) for its devices into a real store,
// a sample a minute, with Poisson drops and ingest delays.
type fleet struct {
	t    testing.TB
	st   *tsdb.Store
	r    *rand.Rand
	devs []*device
	now  time.Time     // the next time to write
	step time.Duration // between samples; default a minute
}

func newFleet(t testing.TB, n int) *fleet {
	st, err := tsdb.Open(t.TempDir(), tsdb.DefaultOptions(), nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, st.Close()) })
	f := &fleet{t: t, st: st, r: rand.New(rand.NewPCG(1, 2)), now: t0, step: time.Minute}
	for i := range n {
		d := &device{
			id:       fmt.Sprintf("dev-%04d", i),
			firmware: []string{"2.0.0", "2.0.0", "2.1.0", "1.9.0"}[i%4],
			model:    []string{"gw-100", "gw-200"}[i%2],
			operator: []string{"op-a", "op-b", "op-c"}[i%3],
			group:    fmt.Sprintf("line-%d", i%5),
		}
		f.devs = append(f.devs, d)
	}
	return f
}

func poisson(r *rand.Rand, l float64) float64 {
	limit, k, p := math.Exp(-l), 0.0, r.Float64()
	for p > limit {
		k++
		p *= r.Float64()
	}
	return k
}

// run writes steps of samples (minutes by default); drops(d) is a device's drops per hour, delay(d) its mean
// ingest delay in seconds (one batch a minute), online(d) whether it is online.
func (f *fleet) run(minutes int, drops, delay func(*device) float64, online func(*device) bool) {
	app, err := f.st.Appender(context.Background())
	require.NoError(f.t, err)
	add := func(l labels.Labels, ts int64, v float64) {
		_, err := app.Append(0, l, ts, v)
		require.NoError(f.t, err)
	}
	perHour := float64(time.Hour / f.step)
	for range minutes {
		ts := f.now.UnixMilli()
		for _, d := range f.devs {
			d.drops += poisson(f.r, drops(d)/perHour)
			d.delaySum += delay(d) * f.r.ExpFloat64()
			d.delayCount++
			add(labels.FromStrings("__name__", "millwright_device_info", "device", d.id, "firmware", d.firmware, "model", d.model, "operator", d.operator), ts, 1)
			add(labels.FromStrings("__name__", "millwright_device_group", "device", d.id, "group", d.group), ts, 1)
			add(labels.FromStrings("__name__", "millwright_device_disconnects_total", "device", d.id, "cause", "reset"), ts, d.drops)
			add(labels.FromStrings("__name__", "millwright_device_disconnects_total", "device", d.id, "cause", "clean"), ts, 0)
			add(labels.FromStrings("__name__", "millwright_device_ingest_delay_seconds_sum", "device", d.id), ts, d.delaySum)
			add(labels.FromStrings("__name__", "millwright_device_ingest_delay_seconds_count", "device", d.id), ts, d.delayCount)
			on := 0.0
			if online(d) {
				on = 1
			}
			add(labels.FromStrings("__name__", "millwright_device_online", "device", d.id), ts, on)
		}
		f.now = f.now.Add(f.step)
	}
	require.NoError(f.t, app.Commit())
}

func baseDrops(*device) float64 { return 1 }
func baseDelay(*device) float64 { return 2 }
func allOnline(*device) bool    { return true }

// finder returns a finder over f's store on a fake clock standing at the last minute written.
func (f *fleet) finder(opts anomaly.Options) (*anomaly.Finder, *clock.Fake) {
	clk := clock.NewFake(f.now.Add(-f.step))
	fd, err := anomaly.New(f.st, opts, clk, nil)
	require.NoError(f.t, err)
	return fd, clk
}

func (f *fleet) query(qs string, ts time.Time) []float64 {
	q, err := f.st.Engine().NewInstantQuery(context.Background(), f.st.Queryable(), nil, qs, ts)
	require.NoError(f.t, err)
	defer q.Close()
	v, err := q.Exec(context.Background()).Vector()
	require.NoError(f.t, err)
	var out []float64
	for _, s := range v {
		out = append(out, s.F)
	}
	return out
}

func TestFinderNamesFirmwareAndEnds(t *testing.T) {
	f := newFleet(t, 400)
	f.run(150, baseDrops, baseDelay, allOnline)
	f.run(15, func(d *device) float64 {
		if d.firmware == "2.1.0" {
			return 5
		}
		return 1
	}, baseDelay, allOnline)
	fd, clk := f.finder(anomaly.Options{})
	require.Nil(t, fd.Latest())
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 400, rep.Devices)
	require.Len(t, rep.Findings, 1, "%+v", rep.Findings)
	got := rep.Findings[0]
	require.Equal(t, anomaly.DropsPerDeviceHour, got.Metric)
	require.Equal(t, anomaly.Key{Dimension: "firmware", Value: "2.1.0"}, got.Key(), got.Text)
	require.True(t, got.RestNormal)
	require.Greater(t, got.Share, 0.8)
	require.InDelta(t, 2, got.Factor, 0.6) // a quarter of the fleet at 5×: 2× the fleet
	require.Contains(t, got.Text, "drops per device-hour up ")
	require.Contains(t, got.Text, "explained by firmware=2.1.0 (")
	require.Same(t, rep, fd.Latest())

	sel := `{metric="drops_per_device_hour",dimension="firmware",value="2.1.0"}`
	require.Equal(t, []float64{got.Factor}, f.query("millwright_anomaly_factor"+sel, rep.Time))
	require.Equal(t, []float64{got.Share}, f.query("millwright_anomaly_share"+sel, rep.Time))

	// The fault ends: after a window of normal drops, nothing is reported and the series end
	// at once (a stale marker), not after the 5-minute lookback.
	f.run(20, baseDrops, baseDelay, allOnline)
	clk.Set(f.now.Add(-time.Minute))
	rep, err = fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Empty(t, rep.Findings)
	require.Empty(t, f.query("millwright_anomaly_factor", rep.Time))
	require.Empty(t, f.query("millwright_anomaly_share", rep.Time))
}

func TestFinderNothingMoved(t *testing.T) {
	f := newFleet(t, 300)
	f.run(165, baseDrops, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Empty(t, rep.Findings)
	require.Empty(t, f.query("millwright_anomaly_factor", rep.Time))
}

func TestFinderNamesOperatorLatencyAndOffline(t *testing.T) {
	f := newFleet(t, 300)
	f.run(150, baseDrops, baseDelay, allOnline)
	f.run(15, baseDrops, func(d *device) float64 {
		if d.operator == "op-b" {
			return 10
		}
		return 2
	}, func(d *device) bool { return d.model != "gw-200" || d.group != "line-3" })
	fd, _ := f.finder(anomaly.Options{})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	byMetric := map[anomaly.Metric]anomaly.Finding{}
	for _, x := range rep.Findings {
		byMetric[x.Metric] = x
	}
	require.Len(t, byMetric, 2, "%+v", rep.Findings)
	require.Equal(t, anomaly.Key{Dimension: "operator", Value: "op-b"}, byMetric[anomaly.IngestDelaySeconds].Key())
	// The offline devices (gw-200 in line-3) are half of line-3 and a fifth of gw-200; both
	// account for all of the excess and both rests are normal: the smaller, line-3, is named.
	require.Equal(t, anomaly.Key{Dimension: "group", Value: "line-3"}, byMetric[anomaly.OfflineRatio].Key(), byMetric[anomaly.OfflineRatio].Text)
}

func TestFinderMinDevices(t *testing.T) {
	f := newFleet(t, 200)
	f.devs[0].group = "tiny"
	f.devs[5].group = "tiny"
	f.devs[10].group = "tiny"
	f.run(150, baseDrops, baseDelay, allOnline)
	f.run(15, func(d *device) float64 {
		if d.group == "tiny" {
			return 200
		}
		return 1
	}, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{MinDevices: 5})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	for _, x := range rep.Findings {
		require.NotEqual(t, "tiny", x.Value, x.Text)
	}
	fd, _ = f.finder(anomaly.Options{MinDevices: 3})
	rep, err = fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Len(t, rep.Findings, 1)
	require.Equal(t, anomaly.Key{Dimension: "group", Value: "tiny"}, rep.Findings[0].Key(), rep.Findings[0].Text)
}

func TestFinderMaxValues(t *testing.T) {
	f := newFleet(t, 100)
	f.run(20, baseDrops, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{MaxValues: 2})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	// 3 firmware versions, 3 operators, 5 groups; 2 models.
	require.Equal(t, map[string]int{"firmware": 1, "operator": 1, "group": 3}, rep.DroppedValues)
}

func TestFinderQueryTimeout(t *testing.T) {
	f := newFleet(t, 50)
	f.run(20, baseDrops, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{QueryTimeout: time.Nanosecond})
	_, err := fd.RunOnce(context.Background())
	require.ErrorContains(t, err, "timed out")
	require.Nil(t, fd.Latest())
}

func TestFinderRunsEveryInterval(t *testing.T) {
	f := newFleet(t, 50)
	f.run(20, baseDrops, baseDelay, allOnline)
	fd, clk := f.finder(anomaly.Options{Interval: 30 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- fd.Run(ctx) }()
	for i := range 2 {
		clk.BlockUntil(1) // Run waits on its interval's timer
		if i == 0 {
			require.Nil(t, fd.Latest(), "a run before its time")
		}
		want := clk.Now().Add(30 * time.Second).Truncate(time.Second)
		clk.Advance(30 * time.Second)
		require.Eventually(t, func() bool { r := fd.Latest(); return r != nil && r.Time.Equal(want) }, 10*time.Second, time.Millisecond)
	}
	cancel()
	require.NoError(t, <-done)
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, anomaly.DefaultOptions().Validate())
	for _, tc := range []struct {
		mod func(*anomaly.Options)
		key string
	}{
		{func(o *anomaly.Options) { o.Interval = 0 }, "interval"},
		{func(o *anomaly.Options) { o.Window = -time.Minute }, "window"},
		{func(o *anomaly.Options) { o.Window = 5 * time.Second }, "window"},
		{func(o *anomaly.Options) { o.Window = time.Minute + time.Millisecond }, "window"},
		{func(o *anomaly.Options) { o.BaselineWindows = 2 }, "baseline_windows"},
		{func(o *anomaly.Options) { o.MinDevices = 0 }, "min_devices"},
		{func(o *anomaly.Options) { o.MaxValues = -1 }, "max_values"},
		{func(o *anomaly.Options) { o.QueryTimeout = 0 }, "query_timeout"},
		{func(o *anomaly.Options) { o.MinZ = 0 }, "min_z"},
		{func(o *anomaly.Options) { o.GroupMinZ = -1 }, "group_min_z"},
		{func(o *anomaly.Options) { o.MinFactor = 1 }, "min_factor"},
		{func(o *anomaly.Options) { o.MinShare = 1.5 }, "min_share"},
	} {
		o := anomaly.DefaultOptions()
		tc.mod(&o)
		var e *optcheck.Error
		require.ErrorAs(t, o.Validate(), &e, tc.key)
		require.Equal(t, tc.key, e.Key)
	}
	_, err := anomaly.New(nil, anomaly.Options{BaselineWindows: 1}, nil, nil)
	require.Error(t, err)
}

var _ anomaly.Store = (*tsdb.Store)(nil)
var _ storage.Queryable = (*tsdb.Store)(nil)

// TestFinderFleetGrowth: devices added during the last window (a new firmware with them)
// drop as often as the rest; they had no exposure before they came, so nothing moved.
func TestFinderFleetGrowth(t *testing.T) {
	f := newFleet(t, 300)
	f.run(150, baseDrops, baseDelay, allOnline)
	for i := range 100 {
		f.devs = append(f.devs, &device{id: fmt.Sprintf("new-%03d", i), firmware: "3.0.0", model: "gw-300", operator: "op-a", group: "line-9"})
	}
	f.run(15, baseDrops, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Equal(t, 400, rep.Devices)
	require.Empty(t, rep.Findings)
}

// TestFinderStandingFault: firmware 2.1.0 has dropped five times as often from the start (a
// simulator's faulty firmware): nothing moved, no series, but the report names it as an
// outlier.
func TestFinderStandingFault(t *testing.T) {
	f := newFleet(t, 400)
	faulty := func(d *device) float64 {
		if d.firmware == "2.1.0" {
			return 5
		}
		return 1
	}
	f.run(165, faulty, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Empty(t, rep.Findings)
	require.Len(t, rep.Outliers, 1, "%+v", rep.Outliers)
	o := rep.Outliers[0]
	require.Equal(t, anomaly.DropsPerDeviceHour, o.Metric)
	require.Equal(t, "firmware", o.Dimension)
	require.Equal(t, "2.1.0", o.Value)
	require.InDelta(t, 5, o.Factor, 1.5)
	require.Empty(t, f.query("millwright_anomaly_factor", rep.Time))
}

// TestFinderTrends: over 4 hours, firmware 2.1.0's drop rate climbs from 1 to 6 per
// device-hour while the others stay at 1: its trend is up and significant, the others' flat.
func TestFinderTrends(t *testing.T) {
	f := newFleet(t, 300)
	for step := range 16 {
		f.run(15, func(d *device) float64 {
			if d.firmware == "2.1.0" {
				return 1 + float64(step)/3
			}
			return 1
		}, baseDelay, allOnline)
	}
	fd, _ := f.finder(anomaly.Options{})
	q, err := anomaly.ParseTrendQuery("drops_per_device_hour", "firmware", "4h", "15m")
	require.NoError(t, err)
	rep, err := fd.Trends(context.Background(), q)
	require.NoError(t, err)
	require.Len(t, rep.Series, 3)
	byValue := map[string]anomaly.TrendSeries{}
	for _, s := range rep.Series {
		byValue[s.Value] = s
		require.Len(t, s.Points, 16, s.Value)
	}
	up := byValue["2.1.0"]
	require.True(t, up.Significant, "%+v", up.TrendResult)
	require.Equal(t, "up", up.Direction)
	// 5 drops per device-hour more over 3 h 45 min: 32 a day.
	require.InDelta(t, 32, up.SlopePerDay, 10)
	for _, v := range []string{"2.0.0", "1.9.0"} {
		require.False(t, byValue[v].Significant, "%s: %+v", v, byValue[v].TrendResult)
	}

	_, err = fd.Trends(context.Background(), anomaly.TrendQuery{Metric: anomaly.DropsPerDeviceHour, Dimension: "firmware", Range: time.Hour, Step: time.Hour})
	require.ErrorContains(t, err, "at least 3 steps")
}

// TestFinderTrendsRecorded: a finder that ran through the 4 hours recorded each 15-minute
// window's counts; the trend read from them (one sample per window and value) agrees with the
// one read from every device's series.
func TestFinderTrendsRecorded(t *testing.T) {
	f := newFleet(t, 300)
	fd, clk := f.finder(anomaly.Options{})
	for step := range 16 {
		f.run(15, func(d *device) float64 {
			if d.firmware == "2.1.0" {
				return 1 + float64(step)/3
			}
			return 1
		}, baseDelay, allOnline)
		clk.Set(f.now)
		_, err := fd.RunOnce(context.Background())
		require.NoError(t, err)
	}
	// Every window recorded once, for the fleet and each of the 3+2+3+5 values, 3 metrics.
	require.Equal(t, []float64{16 * 3 * 14}, f.query(`sum(count_over_time(millwright_anomaly_window_num[5h]))`, f.now))

	q, err := anomaly.ParseTrendQuery("drops_per_device_hour", "firmware", "3h", "15m")
	require.NoError(t, err)
	rec, err := fd.Trends(context.Background(), q)
	require.NoError(t, err)
	require.Equal(t, anomaly.SourceRecorded, rec.Source)
	q.Source = anomaly.SourceRaw
	raw, err := fd.Trends(context.Background(), q)
	require.NoError(t, err)
	require.Equal(t, anomaly.SourceRaw, raw.Source)
	require.Len(t, rec.Series, 3)
	for i, s := range rec.Series {
		r := raw.Series[i]
		require.Equal(t, r.Value, s.Value)
		require.Len(t, s.Points, len(r.Points), s.Value)
		require.Equal(t, r.Significant, s.Significant, s.Value)
		require.Equal(t, r.Direction, s.Direction, s.Value)
		// Noise aside (a flat rate of 24 drops a device-day), the slopes agree.
		require.InDelta(t, r.SlopePerDay, s.SlopePerDay, max(0.1*math.Abs(r.SlopePerDay), 3), s.Value)
	}
	require.Equal(t, "up", rec.Series[2].Direction, rec.Series[2].Value) // 2.1.0, after 1.9.0 and 2.0.0

	// Before the finder recorded anything, auto reads the raw series.
	q.Source, q.Range, q.End = "", 3*time.Hour, t0.Add(2*time.Hour)
	early, err := fd.Trends(context.Background(), q)
	require.NoError(t, err)
	require.Equal(t, anomaly.SourceRaw, early.Source)
	q.Source = "sometimes"
	_, err = fd.Trends(context.Background(), q)
	require.ErrorContains(t, err, `unknown source "sometimes"`)
}

// TestFinderRecordsOnceAcrossRestart: a new finder (a restarted server) does not write the
// window its predecessor recorded again — a minute of data later, the counts differ and the
// store would refuse the duplicate.
func TestFinderRecordsOnceAcrossRestart(t *testing.T) {
	f := newFleet(t, 50)
	f.run(30, baseDrops, baseDelay, allOnline)
	var logs strings.Builder
	for range 2 {
		clk := clock.NewFake(f.now)
		fd, err := anomaly.New(f.st, anomaly.Options{}, clk, slog.New(slog.NewTextHandler(&logs, nil)))
		require.NoError(t, err)
		_, err = fd.RunOnce(context.Background())
		require.NoError(t, err)
		f.run(1, func(*device) float64 { return 30 }, baseDelay, allOnline)
	}
	require.NotContains(t, logs.String(), "not recorded")
	require.Equal(t, []float64{1}, f.query(`count_over_time(millwright_anomaly_window_den{metric="drops_per_device_hour",dimension=""}[1h])`, f.now))
}

// TestFinderGroupMove: 16 of 1,600 devices (a production line, all on model gw-100) start
// dropping ten times as often; the fleet moves too little to be called, the line alone is the
// finding, with scope "group" — not gw-100, which holds it, and whose other devices' noise
// can make it seem to account for more of the excess.
func TestFinderGroupMove(t *testing.T) {
	f := newFleet(t, 1600)
	for i, d := range f.devs {
		if i%100 == 0 {
			d.group = "line-x"
		}
	}
	f.run(150, baseDrops, baseDelay, allOnline)
	f.run(15, func(d *device) float64 {
		if d.group == "line-x" {
			return 10
		}
		return 1
	}, baseDelay, allOnline)
	fd, _ := f.finder(anomaly.Options{})
	rep, err := fd.RunOnce(context.Background())
	require.NoError(t, err)
	require.Len(t, rep.Findings, 1, "%+v", rep.Findings)
	got := rep.Findings[0]
	require.Equal(t, "group", got.Scope, got.Text)
	require.Equal(t, anomaly.Key{Dimension: "group", Value: "line-x"}, got.Key(), got.Text)
	require.Less(t, got.Factor, 1.25)
	require.Contains(t, got.Text, "drops per device-hour on group=line-x up ")
}
