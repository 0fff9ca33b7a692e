package gcpace

import (
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		base                  int
		live, stacks, globals uint64
		want                  int
	}{
		{100, 0, 0, 0, 100},                   // no collection yet
		{100, 1000, 0, 0, 100},                // heap only: GOGC as given
		{100, 1000, 1000, 0, 50},              // as much stack as heap: half
		{100, 13 << 10, 8 << 10, 1 << 10, 59}, // an idle device connection's share
		{100, 1000, 100_000, 0, 25},           // at most a quarter of base
		{50, 3000, 1000, 0, 38},               // GOGC=50: 37.5 rounded
		{2, 1, 1000, 0, 1},                    // never 0
		{-1, 1000, 1000, 0, -1},               // GOGC=off
	} {
		require.Equal(t, c.want, Percent(c.base, c.live, c.stacks, c.globals), "%+v", c)
	}
}

// hold starts n goroutines that each keep about depth KiB of stack in use until release is
// closed, and returns once all of them wait.
func hold(n, depth int, release <-chan struct{}) *sync.WaitGroup {
	var wg, ready sync.WaitGroup
	ready.Add(n)
	for range n {
		wg.Go(func() { recurse(depth, &ready, release) })
	}
	ready.Wait()
	return &wg
}

//go:noinline
func recurse(n int, ready *sync.WaitGroup, release <-chan struct{}) byte {
	var pad [1000]byte // about 1 KiB of frame per level
	if n == 0 {
		ready.Done()
		<-release
		return pad[0]
	}
	pad[n%len(pad)] = byte(n)
	return recurse(n-1, ready, release) + pad[(n+1)%len(pad)]
}

func readLive() (live, stacks, globals uint64) {
	s := []metrics.Sample{{Name: sampleNames[0]}, {Name: sampleNames[1]}, {Name: sampleNames[2]}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
}

// TestPacerFollowsStacks runs the real collector: goroutines with deep stacks and little heap
// bring the percent down, and it returns to the base once they end.
func TestPacerFollowsStacks(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	reg := prometheus.NewRegistry()
	p := newPacer(100, true, clock.Real(), reg)

	release := make(chan struct{})
	wg := hold(2000, 16, release)
	runtime.GC()
	low := p.Step()
	live, stacks, globals := readLive()
	require.Greater(t, stacks, uint64(2000*16<<10), "the goroutines' stacks are in use")
	require.Equal(t, Percent(100, live, stacks, globals), low)
	require.Less(t, low, 100)
	require.Equal(t, low, debug.SetGCPercent(low), "the percent in force")
	require.InDelta(t, float64(low), testutil.ToFloat64(p.gauge), 0)

	close(release)
	wg.Wait()
	runtime.GC()
	high := p.Step()
	live, stacks, globals = readLive()
	require.Equal(t, Percent(100, live, stacks, globals), high)
	require.Greater(t, high, low)
}

// TestPacerRun steps on its interval and restores the base when it stops.
func TestPacerRun(t *testing.T) {
	old := debug.SetGCPercent(80)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	clk := clock.NewFake(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	p := newPacer(80, true, clk, prometheus.NewRegistry())

	release := make(chan struct{})
	wg := hold(2000, 16, release)
	defer func() { close(release); wg.Wait() }()
	runtime.GC()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	clk.BlockUntil(1)
	require.Equal(t, 80, debug.SetGCPercent(80), "nothing changes before the interval")
	clk.Advance(Interval)
	require.Eventually(t, func() bool { return testutil.ToFloat64(p.gauge) < 80 }, 5*time.Second, time.Millisecond)
	cancel()
	<-done
	require.Equal(t, 80, debug.SetGCPercent(80), "the base is restored")
}

// TestNewTakesTheProcessBase: New reads the percent the process runs with, once, and a GOGC
// in the environment turns pacing off.
func TestNewTakesTheProcessBase(t *testing.T) {
	want := debug.SetGCPercent(100)
	debug.SetGCPercent(want)
	p := New(clock.Real(), prometheus.NewRegistry())
	require.Equal(t, want, p.base)
	require.Equal(t, os.Getenv("GOGC") == "", p.pace, "a GOGC in the environment turns pacing off")
	old := debug.SetGCPercent(37)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	require.Equal(t, want, New(clock.Real(), prometheus.NewRegistry()).base, "a later pacer takes the same base")
}

// TestPacerOff leaves the operator's percent alone, whatever the stacks.
func TestPacerOff(t *testing.T) {
	old := debug.SetGCPercent(70)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	release := make(chan struct{})
	wg := hold(2000, 16, release)
	defer func() { close(release); wg.Wait() }()
	runtime.GC()
	p := newPacer(70, false, clock.Real(), prometheus.NewRegistry())
	require.Equal(t, 70, p.Step())
	require.InDelta(t, 70, testutil.ToFloat64(p.gauge), 0)
	// Run changes nothing and returns only when its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	select {
	case <-done:
		t.Fatal("Run returned before its context ended")
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	<-done
	require.Equal(t, 70, debug.SetGCPercent(70))
}
