package main

import (
	"math"
	"slices"
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

// storm summarises a reconnect storm from the times devices came back, measured from the
// moment the restarted server was started.
type storm struct {
	total     int           // devices expected back
	back      int           // devices that came back
	to95      time.Duration // until 95 % were back; -1 when never
	to100     time.Duration // until all were back; -1 when never
	perSecond []int         // connects in each second after the restart
	peak      int           // the busiest second
	mean      float64       // connects per second from the restart to the last connect
}

func summariseStorm(backAt []time.Duration, total int) storm {
	s := storm{total: total, back: len(backAt), to95: -1, to100: -1}
	if len(backAt) == 0 {
		return s
	}
	sorted := slices.Clone(backAt)
	slices.Sort(sorted)
	if k := int(math.Ceil(0.95 * float64(total))); len(sorted) >= k {
		s.to95 = sorted[k-1]
	}
	if len(sorted) >= total {
		s.to100 = sorted[total-1]
	}
	last := sorted[len(sorted)-1]
	s.perSecond = make([]int, int(last/time.Second)+1)
	for _, t := range sorted {
		s.perSecond[int(max(t, 0)/time.Second)]++
	}
	s.peak = slices.Max(s.perSecond)
	// The mean runs over the seconds in which devices could come back: from the first second
	// with a connect to the last.
	first := int(max(sorted[0], 0) / time.Second)
	s.mean = float64(len(sorted)) / float64(len(s.perSecond)-first)
	return s
}
