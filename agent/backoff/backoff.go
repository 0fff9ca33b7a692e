// Package backoff is exponential backoff with full jitter, the retry pacing every Millwright
// device uses so that a fleet that lost its server does not come back as one synchronized wave.
//
// The n-th consecutive failure waits a uniformly random time in [0, min(Cap, Base·2ⁿ)) ("full
// jitter"): the expected wait still grows exponentially, but the retries of many devices that
// failed at the same moment spread evenly over the whole window instead of bunching at its edges.
// After a connection has stayed up for Stable, Reset starts again from Base.
//
// Jitter "none" turns the random draw off (the wait is the whole window): plain exponential
// backoff, kept only to demonstrate, in simulations and benchmarks, the synchronized retry waves
// full jitter prevents.
package backoff

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Jitter selects how a wait is drawn from its window.
type Jitter uint8

const (
	// JitterFull (default) waits a uniform random time in [0, window).
	JitterFull Jitter = iota
	// JitterNone waits the whole window: plain exponential backoff. Devices that failed together
	// retry together. For simulations and benchmarks only, never for a fleet.
	JitterNone
)

var jitterNames = [...]string{JitterFull: "full", JitterNone: "none"}

// String returns "full" or "none".
func (j Jitter) String() string {
	if int(j) < len(jitterNames) {
		return jitterNames[j]
	}
	return "jitter(" + strconv.Itoa(int(j)) + ")"
}

// UnmarshalText reads "full" or "none".
func (j *Jitter) UnmarshalText(b []byte) error {
	for i, n := range jitterNames {
		if string(b) == n {
			*j = Jitter(i)
			return nil
		}
	}
	return fmt.Errorf("%q is not a jitter mode; use full or none", b)
}

// MarshalText writes the name.
func (j Jitter) MarshalText() ([]byte, error) { return []byte(j.String()), nil }

// Policy configures a Backoff.
type Policy struct {
	// Base is the first window. Default 1 s.
	Base time.Duration `yaml:"base"`
	// Cap bounds the window. Default 5 min.
	Cap time.Duration `yaml:"cap"`
	// Jitter is full (default: a uniform draw from the window) or none (the whole window).
	Jitter Jitter `yaml:"jitter"`
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
	if b.p.Jitter == JitterNone {
		return w
	}
	return time.Duration(b.rand(int64(w)))
}

// Initial is the wait before the very first attempt: a uniform random time in [0, Base) with
// full jitter, so that devices powered on together do not connect in step; 0 without jitter.
func (b *Backoff) Initial() time.Duration {
	if b.p.Jitter == JitterNone {
		return 0
	}
	return time.Duration(b.rand(int64(b.p.Base)))
}

// Failures is the number of consecutive failures so far.
func (b *Backoff) Failures() int { return b.failures }

// Reset starts again from Base, after a success that lasted.
func (b *Backoff) Reset() { b.failures = 0 }
