// Package backoff is exponential backoff with full jitter, the retry pacing every Millwright
// device uses so that a fleet that lost its server does not come back as one synchronized wave.
//
// The n-th consecutive failure waits a uniformly random time in [0, min(Cap, Base·2ⁿ)) ("full
// jitter"): the expected wait still grows exponentially, but the retries of many devices that
// failed at the same moment spread evenly over the whole window instead of bunching at its edges.
// After a connection has stayed up for Stable, Reset starts again from Base.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy configures a Backoff.
type Policy struct {
	// Base is the first window. Default 1 s.
	Base time.Duration `yaml:"base"`
	// Cap bounds the window. Default 5 min.
	Cap time.Duration `yaml:"cap"`
}

// DefaultPolicy returns the defaults.
func DefaultPolicy() Policy { return Policy{Base: time.Second, Cap: 5 * time.Minute} }

// Backoff counts consecutive failures and draws the next wait. It is not safe for concurrent use.
type Backoff struct {
	p        Policy
	failures int
	rand     func(n int64) int64
}

// New returns a Backoff; rnd draws a uniform integer in [0, n) and may be nil for math/rand/v2.
func New(p Policy, rnd func(n int64) int64) *Backoff {
	d := DefaultPolicy()
	if p.Base <= 0 {
		p.Base = d.Base
	}
	if p.Cap <= 0 {
		p.Cap = d.Cap
	}
	if p.Cap < p.Base {
		p.Cap = p.Base
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	return &Backoff{p: p, rand: rnd}
}

// Window is the upper bound of the next wait.
func (b *Backoff) Window() time.Duration {
	w := b.p.Base
	for i := 0; i < b.failures && w < b.p.Cap; i++ {
		w *= 2
	}
	return min(w, b.p.Cap)
}

// Next records a failure and returns how long to wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	w := b.Window()
	b.failures++
	return time.Duration(b.rand(int64(w)))
}

// Failures is the number of consecutive failures so far.
func (b *Backoff) Failures() int { return b.failures }

// Reset starts again from Base, after a success that lasted.
func (b *Backoff) Reset() { b.failures = 0 }
