package aggregate

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/source"
)

func TestMatchGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		match         bool
	}{
		{"temp", "temp", true},
		{"temp", "temp2", false},
		{"*", "anything/at:all", true},
		{"line1_*", "line1_oven_temp", true},
		{"line1_*", "line2_oven_temp", false},
		{"*_temp", "oven_temp", true},
		{"*_temp", "oven_temp_2", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "acb", false},
		{"**", "", true},
	} {
		require.Equal(t, tc.match, source.MatchGlob(tc.pattern, tc.name), "%q %q", tc.pattern, tc.name)
	}
}

func TestWindowArithmetic(t *testing.T) {
	require.Equal(t, int64(-1), floorDiv(-1, 10))
	require.Equal(t, int64(0), floorDiv(9, 10))
	require.Equal(t, int64(1), floorDiv(10, 10))
	now := time.UnixMilli(1_740_000_000_000)
	require.Equal(t, int64(1_740_000_000_000-5000), recordMillis(-5, now), "a relative time counts from now")
	require.Equal(t, int64(1_740_000_000_001), recordMillis(1_740_000_000.0012, now))
	require.Equal(t, 500*time.Millisecond, grace(5*time.Second))
	require.Equal(t, 5*time.Second, grace(time.Hour))
}
