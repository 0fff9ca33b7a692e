package api

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseTimeAndDuration(t *testing.T) {
	tm, err := parseTime("1700000000.5")
	require.NoError(t, err)
	require.Equal(t, time.UnixMilli(1700000000500).UTC(), tm)
	tm, err = parseTime("2026-11-24T10:00:00Z")
	require.NoError(t, err)
	require.Equal(t, time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC), tm)
	_, err = parseTime("yesterday")
	require.ErrorContains(t, err, `cannot parse "yesterday"`)

	for in, want := range map[string]time.Duration{"15": 15 * time.Second, "0.5": 500 * time.Millisecond, "5m": 5 * time.Minute, "1d": 24 * time.Hour} {
		d, err := parseDuration(in)
		require.NoError(t, err, in)
		require.Equal(t, want, d, in)
	}
	_, err = parseDuration("1e300")
	require.ErrorContains(t, err, "overflows")
	_, err = parseDuration("soon")
	require.Error(t, err)
}

// FuzzParseParams feeds arbitrary query parameters to the time and duration parsers: they
// return a value or an error, never panic.
func FuzzParseParams(f *testing.F) {
	for _, s := range []string{"1700000000.5", "2026-11-24T10:00:00Z", "5m", "1e300", "-1", "NaN", "Inf", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseTime(s)
		_, _ = parseDuration(s)
	})
}
