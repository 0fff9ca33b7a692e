package millwrightcli

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServerLimitFlags refuses query and HTTPS limits that would turn a bound off.
func TestServerLimitFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--query-max-concurrency", "0"}, "invalid --query-max-concurrency 0"},
		{[]string{"--query-timeout", "0s"}, "invalid --query-timeout 0s"},
		{[]string{"--query-max-samples", "-1"}, "invalid --query-max-samples -1"},
		{[]string{"--http-body-timeout", "-5s"}, "invalid --http-body-timeout -5s"},
		{[]string{"--http-upload-timeout", "0s"}, "invalid --http-upload-timeout 0s"},
		{[]string{"--http-max-connections", "0"}, "invalid --http-max-connections"},
		{[]string{"--http-max-connections-per-source", "0"}, "--http-max-connections-per-source 0"},
		{[]string{"--query-max-concurrency", "many"}, `invalid argument "many"`},
		{[]string{"--web-max-sessions", "0"}, "invalid --web-max-sessions 0"},
		{[]string{"--web-session-ttl", "-1h"}, "invalid --web-session-ttl -1h"},
		{[]string{"--web-session-idle", "0s"}, "invalid --web-session-idle 0s"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := run(append([]string{"server", "--data", t.TempDir()}, tc.args...)...)
			require.NotZero(t, code)
			require.Contains(t, stderr, tc.want)
		})
	}
}
