package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	require.Equal(t, 50*time.Millisecond, percentile(d, 50))
	require.Equal(t, 99*time.Millisecond, percentile(d, 99))
	require.Equal(t, 100*time.Millisecond, percentile(d, 100))
	require.Equal(t, time.Millisecond, percentile(d, 0))
	require.Equal(t, time.Duration(0), percentile(nil, 50))
	require.Equal(t, 7*time.Second, percentile([]time.Duration{7 * time.Second}, 99))
}

func TestSummariseStorm(t *testing.T) {
	// Nothing for the first 2 s (the server starting), then 10, 30 and 10 devices in the next
	// three seconds; 50 of 50 back.
	var back []time.Duration
	for i := range 10 {
		back = append(back, 2*time.Second+time.Duration(i)*time.Millisecond)
	}
	for i := range 30 {
		back = append(back, 3*time.Second+time.Duration(i)*10*time.Millisecond)
	}
	for i := range 10 {
		back = append(back, 4*time.Second+time.Duration(i)*50*time.Millisecond)
	}
	s := summariseStorm(back, 50)
	require.Equal(t, 50, s.back)
	require.Equal(t, []int{0, 0, 10, 30, 10}, s.perSecond)
	require.Equal(t, 30, s.peak)
	require.InDelta(t, 50.0/3, s.mean, 1e-9)
	require.Equal(t, 4*time.Second+7*50*time.Millisecond, s.to95, "the 48th of 50")
	require.Equal(t, 4*time.Second+9*50*time.Millisecond, s.to100)

	partial := summariseStorm(back[:40], 50)
	require.Equal(t, time.Duration(-1), partial.to95)
	require.Equal(t, time.Duration(-1), partial.to100)
	require.Equal(t, 40, partial.back)

	none := summariseStorm(nil, 10)
	require.Equal(t, 0, none.back)
	require.Equal(t, time.Duration(-1), none.to100)
}
