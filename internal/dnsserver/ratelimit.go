package dnsserver

import (
	"net/netip"
	"sync"
	"time"
)

// rateLimiter is a token bucket per source prefix (IPv4 /24, IPv6 /56), the way response rate
// limiting in authoritative servers groups sources: a flood with spoofed neighbours' addresses
// is one source.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	max   int // sources tracked at once

	mu      sync.Mutex
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
	denied uint64 // queries refused since the bucket was made, for the slip
}

func newRateLimiter(rate float64, burst, maxSources int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), max: maxSources, buckets: map[netip.Prefix]*bucket{}}
}

// sourcePrefix groups an address with its neighbours.
func sourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 24
	if a.Is6() {
		bits = 56
	}
	p, _ := a.Prefix(bits)
	return p
}

// allow takes a token for src at now. When there is none it returns false and the number of
// queries from src refused so far (1 for the first), for the slip.
func (l *rateLimiter) allow(src netip.Addr, now time.Time) (bool, uint64) {
	p := sourcePrefix(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[p]
	if b == nil {
		if len(l.buckets) >= l.max {
			// Forget everyone rather than refuse sources we have no room for: a flood of
			// spoofed sources must not lock out real resolvers.
			clear(l.buckets)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[p] = b
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+d.Seconds()*l.rate)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	b.denied++
	return false, b.denied
}
