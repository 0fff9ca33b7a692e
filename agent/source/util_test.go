package source

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// lateClock is a fake clock whose timers deliver their firing time late by
// a fixed amount, as a loaded device's timers do.
type lateClock struct {
	*clock.Fake
	late time.Duration
	done chan struct{}
}

func (c lateClock) NewTimer(d time.Duration) clock.Timer {
	inner := c.Fake.NewTimer(d)
	ch := make(chan time.Time, 1)
	go func() {
		for {
			select {
			case t := <-inner.C():
				ch <- t.Add(c.late)
			case <-c.done:
				return
			}
		}
	}()
	return lateTimer{inner, ch}
}

type lateTimer struct {
	clock.Timer
	ch chan time.Time
}

func (t lateTimer) C() <-chan time.Time { return t.ch }

// TestEveryOnTime checks the times every hands its function: the tick's own
// time when the timer fired within the tolerance, the firing time when later.
func TestEveryOnTime(t *testing.T) {
	start := time.Date(2026, 12, 1, 8, 0, 0, 123_456_789, time.UTC)
	for _, tc := range []struct {
		name     string
		interval time.Duration
		late     time.Duration
		snapped  bool
	}{
		{"3 ms late in 10 s", 10 * time.Second, 3 * time.Millisecond, true},
		{"5 ms late in 10 s", 10 * time.Second, 5 * time.Millisecond, true},
		{"20 ms late in 10 s", 10 * time.Second, 20 * time.Millisecond, false},
		{"1 ms late in 10 ms", 10 * time.Millisecond, time.Millisecond, false},
		{"on time", time.Second, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := clock.NewFake(start)
			clk := lateClock{Fake: fake, late: tc.late, done: make(chan struct{})}
			defer close(clk.done)
			got := make(chan time.Time, 16)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go every(ctx, clk, tc.interval, func(_ context.Context, now time.Time) { got <- now })

			first := <-got
			require.Equal(t, start.Truncate(time.Millisecond), first, "the schedule starts on a whole millisecond")
			for k := 1; k <= 3; k++ {
				fake.BlockUntil(1)
				fake.Advance(tc.interval)
				tick := first.Add(time.Duration(k) * tc.interval)
				want := tick.Add(tc.late)
				if tc.snapped {
					want = tick
				}
				require.Equal(t, want, <-got, "tick %d", k)
			}
		})
	}
	require.Equal(t, 5*time.Millisecond, onTime(time.Minute))
	require.Equal(t, 100*time.Microsecond, onTime(10*time.Millisecond))
}
