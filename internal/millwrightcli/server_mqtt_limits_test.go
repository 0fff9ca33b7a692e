package millwrightcli

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServerMQTTLimitFlags refuses MQTT limits that would turn a bound or a deadline off.
func TestServerMQTTLimitFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--mqtt-hello-timeout", "0s"}, "invalid --mqtt-hello-timeout 0s"},
		{[]string{"--mqtt-handshake-timeout", "-1s"}, "invalid --mqtt-handshake-timeout -1s"},
		{[]string{"--mqtt-connect-timeout", "0s"}, "invalid --mqtt-connect-timeout 0s"},
		{[]string{"--mqtt-max-handshakes", "0"}, "invalid --mqtt-max-handshakes 0"},
		{[]string{"--mqtt-max-handshakes-per-source", "-1"}, "invalid --mqtt-max-handshakes-per-source -1"},
		{[]string{"--mqtt-receive-maximum", "0"}, "invalid --mqtt-receive-maximum 0"},
		{[]string{"--mqtt-receive-maximum", "65536"}, `invalid argument "65536"`},
		{[]string{"--mqtt-max-keepalive", "0"}, "invalid --mqtt-max-keepalive 0"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := run(append([]string{"server", "--data", t.TempDir()}, tc.args...)...)
			require.NotZero(t, code)
			require.Contains(t, stderr, tc.want)
		})
	}
}
