package millwrightcli

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/sim"
)

// TestHelpShowsDurationDefaults: every duration flag of every command shows one default in
// --help, the one the code uses: no usage text names a default of its own beside the flag's,
// a 0s default says what 0 means, and the defaults that live in other packages (the agent's
// schedule, the simulator's, the server's options) are the ones shown.
func TestHelpShowsDurationDefaults(t *testing.T) {
	var bad []string
	shown := map[string]string{} // "command --flag" → default shown
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() != "duration" {
				return
			}
			name := c.CommandPath() + " --" + f.Name
			shown[name] = f.DefValue
			switch {
			case strings.Contains(f.Usage, "(default"):
				bad = append(bad, name+": its usage names a default of its own: "+f.Usage)
			case f.DefValue == "0s" && !strings.Contains(f.Usage, "0:"):
				bad = append(bad, name+": defaults to 0s without saying what 0 means: "+f.Usage)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(newRoot(io.Discard, io.Discard))
	require.Empty(t, bad)

	ad, so := agent.DefaultConfig(), server.DefaultOptions()
	for name, want := range map[string]time.Duration{
		"millwright sim --interval":            ad.Schedule.Interval,
		"millwright sim --jitter":              ad.Schedule.Jitter,
		"millwright sim --keepalive":           ad.Uplink.Keepalive,
		"millwright sim --backoff-base":        ad.Uplink.Backoff.Base,
		"millwright sim --backoff-cap":         ad.Uplink.Backoff.Cap,
		"millwright sim --sample-interval":     sim.DefaultSampleInterval,
		"millwright sim --progress-interval":   sim.DefaultProgressInterval,
		"millwright sim --drain-timeout":       sim.DefaultDrainTimeout,
		"millwright tokens create --expires":   24 * time.Hour,
		"millwright firmware upload --expires": 365 * 24 * time.Hour,
		"millwright server --rollout-interval": so.RolloutInterval,
	} {
		got, ok := shown[name]
		require.True(t, ok, "%s is not a duration flag", name)
		d, err := parseDuration(got)
		require.NoError(t, err, name)
		require.Equal(t, want, d, "%s shows %s", name, got)
	}
}
