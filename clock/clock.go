// Package clock is the time source that every time-dependent part of
// Millwright takes instead of calling the time package directly.
//
// Production code receives [Real]; tests receive a [Fake] and move time by
// hand with [Fake.Advance], so behaviour that spans hours or weeks (sync
// intervals, retry backoff, rollout phases) runs in milliseconds and
// deterministically. The interface is deliberately small: Now, timers and
// AfterFunc are enough to build tickers, deadlines and sleeps.
package clock

import (
	"context"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that sends the time on its channel once d has
	// elapsed. A d of zero or less fires at once.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f once d has elapsed and returns a timer that can stop
	// it. The returned timer's C is nil.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a single-shot timer, the subset of [time.Timer] that both clocks
// can provide. Like time.Timer since Go 1.23, no stale value is received
// from C after Stop or Reset returns.
type Timer interface {
	// C is the channel the firing time is sent on; nil for AfterFunc timers.
	C() <-chan time.Time
	// Stop prevents the timer from firing. It reports whether the call
	// stopped the timer, false if it had already fired or been stopped.
	Stop() bool
	// Reset changes the timer to fire after d. It reports whether the timer
	// had been active.
	Reset(d time.Duration) bool
}

// Since returns the time elapsed since t according to c.
func Since(c Clock, t time.Time) time.Duration { return c.Now().Sub(t) }

// Sleep waits d on c; it reports false when ctx ended first (or had ended already).
func Sleep(ctx context.Context, c Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}
