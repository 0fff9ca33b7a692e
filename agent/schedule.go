package agent

import (
	"math"
	"time"
)

// Schedule draws the waits of the scattered send schedule. Each cycle waits
// Interval plus a uniform random time in [0, Jitter), drawn afresh every
// cycle, so devices that were started together drift apart instead of
// sending in step. The first send of a spread schedule is drawn from the
// stationary distribution of that cycle (see First), so a fleet started in
// the same second sends at its steady rate from the first cycle on.
type Schedule struct {
	interval, jitter time.Duration
	first            FirstSend
	rnd              func(n int64) int64
}

// NewSchedule returns the schedule of cfg; rnd draws a uniform integer in
// [0, n).
func NewSchedule(cfg ScheduleConfig, rnd func(n int64) int64) *Schedule {
	return &Schedule{interval: cfg.Interval, jitter: cfg.Jitter, first: cfg.FirstSend, rnd: rnd}
}

// Next returns the wait before the next cycle: interval + U[0, jitter).
func (s *Schedule) Next() time.Duration {
	return s.interval + s.uniform(s.jitter)
}

// First returns the wait before the first cycle, a value in
// [0, interval+jitter). With FirstSendImmediate it is 0. Otherwise it is
// drawn from the equilibrium distribution of the cycle length C =
// interval + U[0, jitter): density P(C > x) / E[C]. That is uniform on
// [0, interval) with probability interval/E[C], and on [interval,
// interval+jitter) a density falling linearly to zero. A uniform draw over
// [0, interval+jitter) would leave the rate of a fleet started together
// uneven for several cycles; this one makes it flat from the start.
func (s *Schedule) First() time.Duration {
	if s.first == FirstSendImmediate {
		return 0
	}
	i, j := float64(s.interval), float64(s.jitter)
	if j == 0 {
		return s.uniform(s.interval)
	}
	mean := i + j/2
	if s.float()*mean < i {
		return s.uniform(s.interval)
	}
	// Inverse of the CDF 1-(1-y/j)² of the falling density on [0, j).
	y := j * (1 - math.Sqrt(1-s.float()))
	return s.interval + min(time.Duration(y), s.jitter-1)
}

func (s *Schedule) uniform(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(s.rnd(int64(d)))
}

// float returns a uniform float64 in [0, 1).
func (s *Schedule) float() float64 {
	return float64(s.rnd(1<<53)) / (1 << 53)
}
