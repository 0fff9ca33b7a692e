package anomaly_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	ptsdb "github.com/prometheus/prometheus/tsdb"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/anomaly"
)

var (
	benchDevices = flag.Int("bench-devices", 2000, "devices BenchmarkRunOnce writes series for")
	benchEvery   = flag.Duration("bench-every", time.Minute, "sample interval of BenchmarkRunOnce's series (the monitor writes every 15s)")
)

// BenchmarkRunOnce measures one anomaly run over the default window and baseline (2 h 15 min)
// of the monitor's series for -bench-devices devices sampled every -bench-every:
//
//	go test ./internal/anomaly -run '^$' -bench RunOnce -bench-devices 2000 -bench-every 15s
func BenchmarkRunOnce(b *testing.B) {
	f := newFleet(b, *benchDevices)
	f.step = *benchEvery
	steps := int(165 * time.Minute / *benchEvery)
	start := time.Now()
	// In chunks: one append transaction per 15 minutes of samples.
	for done := 0; done < steps; done += int(15 * time.Minute / f.step) {
		f.run(min(int(15*time.Minute/f.step), steps-done), baseDrops, baseDelay, allOnline)
	}
	b.Logf("wrote %d devices × %d samples of 7 series in %s", *benchDevices, steps, time.Since(start).Round(time.Millisecond))
	fd, _ := f.finder(anomaly.Options{})
	b.ResetTimer()
	for b.Loop() {
		rep, err := fd.RunOnce(context.Background())
		require.NoError(b, err)
		require.Equal(b, *benchDevices, rep.Devices)
	}
}

var benchDays = flag.Int("bench-days", 7, "days of series BenchmarkTrends writes")

// BenchmarkTrends measures one trend answer (weekly drops by firmware... here daily over
// -bench-days days) over the monitor's series for -bench-devices devices sampled every
// -bench-every, and reports the samples it read per second:
//
//	go test ./internal/anomaly -run '^$' -bench Trends -bench-devices 200 -bench-every 1m -bench-days 7
func BenchmarkTrends(b *testing.B) {
	f := newFleet(b, *benchDevices)
	f.step = *benchEvery
	steps := int(time.Duration(*benchDays) * 24 * time.Hour / f.step)
	chunk := int(time.Hour / f.step)
	for done := 0; done < steps; done += chunk {
		f.run(min(chunk, steps-done), baseDrops, baseDelay, allOnline)
	}
	db := f.st.DB()
	require.NoError(b, db.CompactHead(ptsdb.NewRangeHead(db.Head(), t0.UnixMilli(), f.now.UnixMilli())))
	fd, _ := f.finder(anomaly.Options{QueryTimeout: 10 * time.Minute})
	q := anomaly.TrendQuery{Metric: anomaly.DropsPerDeviceHour, Dimension: "firmware", Range: time.Duration(*benchDays) * 24 * time.Hour, Step: 24 * time.Hour}
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		rep, err := fd.Trends(context.Background(), q)
		require.NoError(b, err)
		require.NotEmpty(b, rep.Series)
	}
	// Drops and online series, every sample once per answer.
	read := float64(2 * *benchDevices * steps * b.N)
	b.ReportMetric(read/time.Since(start).Seconds()/1e6, "Msamples/s")
}

var benchValues = flag.Int("bench-values", 20, "firmware values BenchmarkTrendsRecorded records window counts for")

// BenchmarkTrendsRecorded measures a 90-day weekly trend by firmware read from the recorded
// window counts (15-minute windows, -bench-values values), the source a large fleet's trends
// come from:
//
//	go test ./internal/anomaly -run '^$' -bench TrendsRecorded -bench-values 20
func BenchmarkTrendsRecorded(b *testing.B) {
	f := newFleet(b, 20)
	f.run(1, baseDrops, baseDelay, allOnline) // devices with facts, at t0
	end := t0.Add(90 * 24 * time.Hour)
	app, err := f.st.Appender(context.Background())
	require.NoError(b, err)
	for w := t0.Add(15 * time.Minute); !w.After(end); w = w.Add(15 * time.Minute) {
		for v := range *benchValues {
			for _, s := range []struct {
				name string
				x    float64
			}{{anomaly.WindowNumSeries, float64(v % 7)}, {anomaly.WindowDenSeries, 25}} {
				_, err := app.Append(0, labels.FromStrings("__name__", s.name, "metric", "drops_per_device_hour", "dimension", "firmware", "value", fmt.Sprintf("2.%d.0", v)), w.UnixMilli(), s.x)
				require.NoError(b, err)
			}
		}
		for _, s := range []string{anomaly.WindowNumSeries, anomaly.WindowDenSeries} {
			_, err := app.Append(0, labels.FromStrings("__name__", s, "metric", "drops_per_device_hour"), w.UnixMilli(), 1)
			require.NoError(b, err)
		}
	}
	require.NoError(b, app.Commit())
	// Months old data sits in blocks, not in the head, as it would on a running server.
	db := f.st.DB()
	require.NoError(b, db.CompactHead(ptsdb.NewRangeHead(db.Head(), t0.UnixMilli(), end.UnixMilli())))
	clk := clock.NewFake(end)
	fd, err := anomaly.New(f.st, anomaly.Options{}, clk, nil)
	require.NoError(b, err)
	q := anomaly.TrendQuery{Metric: anomaly.DropsPerDeviceHour, Dimension: "firmware", Range: 90 * 24 * time.Hour, Step: 7 * 24 * time.Hour}
	b.ResetTimer()
	for b.Loop() {
		rep, err := fd.Trends(context.Background(), q)
		require.NoError(b, err)
		require.Equal(b, anomaly.SourceRecorded, rep.Source)
		require.Len(b, rep.Series, *benchValues)
	}
}
