package optcheck_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/optcheck"
)

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{optcheck.Positive("retention", -time.Hour), "invalid retention -1h0m0s: must be positive"},
		{optcheck.Positive("receive_maximum", uint16(0)), "invalid receive_maximum 0: must be positive"},
		{optcheck.Invalid("fsync", "sometimes", "unknown"), `invalid fsync "sometimes": unknown`},
		{optcheck.Within("tsdb", optcheck.Positive("retention", time.Duration(0))), "invalid tsdb.retention 0s: must be positive"},
		{optcheck.Within("tsdb", errors.New("plain")), "plain"},
		{optcheck.First(nil, optcheck.Positive("a", 0), optcheck.Positive("b", 0)), "invalid a 0: must be positive"},
	} {
		require.EqualError(t, tc.err, tc.want)
	}
	require.NoError(t, optcheck.Positive("a", 1))
	require.NoError(t, optcheck.First(nil, nil))

	var e *optcheck.Error
	require.ErrorAs(t, fmt.Errorf("start: %w", optcheck.Within("mqtt", optcheck.Positive("max_keepalive", uint16(0)))), &e)
	require.Equal(t, "mqtt.max_keepalive", e.Key)
	require.Equal(t, uint16(0), e.Value)
	require.Equal(t, "90d", optcheck.FormatValue(90*24*time.Hour, func(time.Duration) string { return "90d" }))
}
