package clock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func fired(t clock.Timer) (time.Time, bool) {
	select {
	case v := <-t.C():
		return v, true
	default:
		return time.Time{}, false
	}
}

func TestFakeNowAdvanceSet(t *testing.T) {
	f := clock.NewFake(epoch)
	require.Equal(t, epoch, f.Now())
	f.Advance(time.Second)
	require.Equal(t, epoch.Add(time.Second), f.Now())
	f.Advance(-time.Hour) // ignored
	require.Equal(t, epoch.Add(time.Second), f.Now())
	f.Set(epoch.Add(time.Hour))
	require.Equal(t, epoch.Add(time.Hour), f.Now())
	f.Set(epoch) // backwards is allowed
	require.Equal(t, epoch, f.Now())
	require.Equal(t, time.Minute, clock.Since(f, epoch.Add(-time.Minute)))
}

func TestFakeTimerFiring(t *testing.T) {
	tests := []struct {
		name    string
		d       time.Duration
		advance []time.Duration
		fire    bool
		at      time.Duration // expected value received, relative to epoch
	}{
		{name: "not yet due", d: time.Second, advance: []time.Duration{999 * time.Millisecond}},
		{name: "exactly due", d: time.Second, advance: []time.Duration{time.Second}, fire: true, at: time.Second},
		{name: "overshoot sees due time", d: time.Second, advance: []time.Duration{time.Hour}, fire: true, at: time.Second},
		{name: "two steps", d: time.Second, advance: []time.Duration{500 * time.Millisecond, 500 * time.Millisecond}, fire: true, at: time.Second},
		{name: "zero fires at once", d: 0, fire: true, at: 0},
		{name: "negative fires at once", d: -time.Second, fire: true, at: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := clock.NewFake(epoch)
			tm := f.NewTimer(tc.d)
			for _, a := range tc.advance {
				f.Advance(a)
			}
			v, ok := fired(tm)
			require.Equal(t, tc.fire, ok)
			if tc.fire {
				require.Equal(t, epoch.Add(tc.at), v)
				require.Zero(t, f.Pending())
			}
		})
	}
}

func TestFakeFiresInDueOrder(t *testing.T) {
	f := clock.NewFake(epoch)
	var order []int
	var seen []time.Time
	for i, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second, time.Second} {
		f.AfterFunc(d, func() {
			order = append(order, i)
			seen = append(seen, f.Now())
		})
	}
	require.Equal(t, 4, f.Pending())
	f.Advance(10 * time.Second)
	// Equal due times fire in creation order; each sees Now == its due time.
	require.Equal(t, []int{1, 3, 2, 0}, order)
	require.Equal(t, []time.Time{epoch.Add(time.Second), epoch.Add(time.Second), epoch.Add(2 * time.Second), epoch.Add(3 * time.Second)}, seen)
	require.Equal(t, epoch.Add(10*time.Second), f.Now())
}

func TestFakeAfterFuncCanRearm(t *testing.T) {
	// A ticker built from AfterFunc re-arming itself fires once per period.
	f := clock.NewFake(epoch)
	var n int
	var tm clock.Timer
	tm = f.AfterFunc(time.Second, func() {
		n++
		tm.Reset(time.Second)
	})
	f.Advance(5 * time.Second)
	require.Equal(t, 5, n)
	require.True(t, tm.Stop())
	f.Advance(5 * time.Second)
	require.Equal(t, 5, n)
}

func TestFakeStopReset(t *testing.T) {
	f := clock.NewFake(epoch)
	tm := f.NewTimer(time.Second)
	require.True(t, tm.Stop())
	require.False(t, tm.Stop())
	f.Advance(time.Hour)
	_, ok := fired(tm)
	require.False(t, ok, "stopped timer fired")

	require.False(t, tm.Reset(time.Second), "reset of a stopped timer reports inactive")
	require.True(t, tm.Reset(2*time.Second))
	f.Advance(time.Second)
	_, ok = fired(tm)
	require.False(t, ok)
	f.Advance(time.Second)
	v, ok := fired(tm)
	require.True(t, ok)
	require.Equal(t, epoch.Add(time.Hour+2*time.Second), v)

	// A fired but unread value is discarded by Reset: no stale receive.
	tm.Reset(time.Second)
	f.Advance(time.Second)
	require.False(t, tm.Reset(time.Minute))
	_, ok = fired(tm)
	require.False(t, ok, "stale value after Reset")
}

func TestFakeAfterFuncStop(t *testing.T) {
	f := clock.NewFake(epoch)
	var called atomic.Bool
	tm := f.AfterFunc(time.Second, func() { called.Store(true) })
	require.Nil(t, tm.C())
	require.True(t, tm.Stop())
	f.Advance(time.Minute)
	require.False(t, called.Load())
}

func TestFakeAfterFuncZeroRunsAsync(t *testing.T) {
	f := clock.NewFake(epoch)
	done := make(chan struct{})
	f.AfterFunc(0, func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("AfterFunc(0) did not run")
	}
}

func TestFakeBlockUntil(t *testing.T) {
	f := clock.NewFake(epoch)
	got := make(chan time.Time)
	go func() {
		tm := f.NewTimer(time.Minute)
		got <- <-tm.C()
	}()
	f.BlockUntil(1)
	f.Advance(time.Minute)
	select {
	case v := <-got:
		require.Equal(t, epoch.Add(time.Minute), v)
	case <-time.After(5 * time.Second):
		t.Fatal("timer did not fire")
	}
}

func TestFakeConcurrentUse(t *testing.T) {
	f := clock.NewFake(epoch)
	var wg sync.WaitGroup
	var fires atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 100 {
				tm := f.NewTimer(time.Millisecond)
				f.AfterFunc(time.Millisecond, func() { fires.Add(1) })
				f.Advance(time.Millisecond)
				tm.Stop()
				_ = f.Now()
			}
		})
	}
	wg.Wait()
	f.Advance(time.Second)
	require.Equal(t, int64(800), fires.Load())
	require.Zero(t, f.Pending())
}

func TestRealClock(t *testing.T) {
	c := clock.Real()
	before := time.Now()
	require.False(t, c.Now().Before(before))
	tm := c.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("real timer did not fire")
	}
	done := make(chan struct{})
	af := c.AfterFunc(time.Millisecond, func() { close(done) })
	<-done
	require.False(t, af.Stop())
	require.Nil(t, af.C())
	tm2 := c.NewTimer(time.Hour)
	require.True(t, tm2.Stop())
	require.False(t, tm2.Reset(time.Hour))
	tm2.Stop()
}

func TestSleep(t *testing.T) {
	f := clock.NewFake(epoch)
	done := make(chan bool)
	go func() { done <- clock.Sleep(context.Background(), f, time.Minute) }()
	f.BlockUntil(1)
	f.Advance(59 * time.Second)
	select {
	case <-done:
		t.Fatal("woke before its minute")
	default:
	}
	f.Advance(time.Second)
	require.True(t, <-done, "a full wait")

	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- clock.Sleep(ctx, f, time.Hour) }()
	f.BlockUntil(1)
	cancel()
	require.False(t, <-done, "the context ended first")
	require.Zero(t, f.Pending(), "no timer left behind")
	require.False(t, clock.Sleep(ctx, f, 0), "a zero wait on an ended context")
	require.True(t, clock.Sleep(context.Background(), f, -time.Second), "a negative wait")
}
