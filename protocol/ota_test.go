package protocol

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDecodeStateUpdate: a State may carry an update report, checked field by field.
func TestDecodeStateUpdate(t *testing.T) {
	s, err := DecodeState([]byte(`{"firmware_version":"2.1.0","update":{"command":"m-19e-ab","rollout":"r-1","version":"2.1.0","phase":"succeeded"}}`))
	require.NoError(t, err)
	require.Equal(t, &UpdateReport{Command: "m-19e-ab", Rollout: "r-1", Version: "2.1.0", Phase: UpdateSucceeded}, s.Update)
	s, err = DecodeState([]byte(`{"update":{"command":"m-1","version":"2.1.0","phase":"failed","reason":"precheck","detail":"battery at 12 %"}}`))
	require.NoError(t, err)
	require.Equal(t, &UpdateReport{Command: "m-1", Version: "2.1.0", Phase: UpdateFailed, Reason: FailPrecheck, Detail: "battery at 12 %"}, s.Update)
	for _, phase := range UpdatePhases {
		_, err := DecodeState([]byte(`{"update":{"command":"m-1","version":"1","phase":"` + phase + `"}}`))
		require.NoError(t, err, phase)
	}
	for body, want := range map[string]string{
		`{"update":{"command":"M_1","version":"1","phase":"succeeded"}}`:                                           "outside a-z",
		`{"update":{"command":"m-1","version":"1","phase":"confirmed"}}`:                                           `phase "confirmed"`,
		`{"update":{"command":"m-1","version":"1","phase":"restarting"}}`:                                          `phase "restarting"`,
		`{"update":{"command":"m-1","version":"1","phase":"installing","reason":"install"}}`:                       "goes with \"failed\" only",
		`{"update":{"command":"m-1","version":"1","phase":"failed","reason":"` + strings.Repeat("x", 65) + `"}}`:   "reason is 65 bytes",
		`{"update":{"command":"m-1","version":"1","phase":"failed","reason":"a\u0002"}}`:                           "reason has a control character",
		`{"update":{"command":"m-1","version":"1","phase":"done"}}`:                                                `phase "done"`,
		`{"update":{"command":"m-1","version":"1\u0001","phase":"failed"}}`:                                        "control character",
		`{"update":{"command":"m-1","version":"1","phase":"failed","detail":"` + strings.Repeat("x", 4097) + `"}}`: "detail is 4097 bytes",
	} {
		_, err := DecodeState([]byte(body))
		require.ErrorIs(t, err, ErrChannelMessage, body)
		require.ErrorContains(t, err, want, body)
	}
}

// TestStartWithin: the offer's start delay is whole seconds up to a day; what is formatted
// parses back.
func TestStartWithin(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "0": 0, "600": 10 * time.Minute, "86400": MaxStartWithin} {
		got, err := ParseStartWithin(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for in, want := range map[string]string{"86401": "more than 86400", "-1": "not a whole", "1.5": "not a whole", "010": "not a whole", "1e3": "not a whole", "99999999999": "not a whole"} {
		_, err := ParseStartWithin(in)
		require.ErrorContains(t, err, want, in)
	}
	for d, want := range map[time.Duration]string{0: "0", -time.Second: "0", 1500 * time.Millisecond: "2", 10 * time.Minute: "600", 48 * time.Hour: "86400"} {
		require.Equal(t, want, FormatStartWithin(d), d)
		_, err := ParseStartWithin(FormatStartWithin(d))
		require.NoError(t, err)
	}
}

// FuzzParseStartWithin: the start delay parser never panics, and what it accepts is at most
// a day and formats back to itself.
func FuzzParseStartWithin(f *testing.F) {
	for _, s := range []string{"", "0", "600", "86400", "86401", "-1", "010", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseStartWithin(s)
		if err != nil {
			return
		}
		require.LessOrEqual(t, d, MaxStartWithin)
		if s != "" {
			require.Equal(t, s, FormatStartWithin(d))
		}
	})
}
