package main

import (
	"math"
	"time"
)

// percentile of sorted durations (nearest rank); zero for none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// storm summarises a reconnect storm: how many devices came back, when, and how fast.
type storm struct {
	total     int           // devices expected back
	back      int           // devices that came back
	to95      time.Duration // until 95 % were back; -1 when never
	to100     time.Duration // until all were back; -1 when never
	perSecond []int         // connects in each second after the restart
	peak      int           // the busiest second
	mean      float64       // connects per second from the first second with a connect to the last
}

// summariseSeconds summarises a storm from connects per second (second i covers (i, i+1] s
// after the restart): a device counts as back at the end of its second.
func summariseSeconds(per []int, total int) storm {
	s := storm{total: total, to95: -1, to100: -1, perSecond: per}
	k95 := int(math.Ceil(0.95 * float64(total)))
	first, last := -1, -1
	for i, n := range per {
		if n == 0 {
			continue
		}
		if first < 0 {
			first = i
		}
		last = i
		s.back += n
		s.peak = max(s.peak, n)
		if s.to95 < 0 && s.back >= k95 {
			s.to95 = time.Duration(i+1) * time.Second
		}
		if s.to100 < 0 && s.back >= total {
			s.to100 = time.Duration(i+1) * time.Second
		}
	}
	if last >= 0 {
		s.mean = float64(s.back) / float64(last-first+1)
	}
	return s
}

// gaugeSample is a reading of the server's connected-clients gauge, at an offset from the kill.
type gaugeSample struct {
	at time.Duration
	n  int
}

// gaugePerSecond turns readings of a connected count into its growth per second (second i
// covers (i, i+1] s): each reading's increase over the one before counts in the second the
// reading fell in; decreases count as nothing.
func gaugePerSecond(samples []gaugeSample) []int {
	var per []int
	prev := 0
	for _, s := range samples {
		if s.n > prev && s.at > 0 {
			i := int((s.at - 1) / time.Second)
			for len(per) <= i {
				per = append(per, 0)
			}
			per[i] += s.n - prev
		}
		prev = s.n
	}
	return per
}
