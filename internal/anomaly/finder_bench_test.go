package anomaly_test

import (
	"context"
	"flag"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
