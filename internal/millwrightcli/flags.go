package millwrightcli

import (
	"errors"
	"time"

	"github.com/prometheus/common/model"
)

// durationFlag is a time.Duration flag that also takes days, weeks and years ("90d", "1w").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return "0s"
	}
	return formatDuration(*f.d)
}

func (f durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return errors.New("not a duration (examples: 90s, 15m, 36h, 90d, 2w)")
	}
	*f.d = d
	return nil
}

func (f durationFlag) Type() string { return "duration" }

// overrideFlag is a duration flag that overrides a default kept elsewhere (a profile's, the
// agent's) only when given: its variable stays 0 until then, and --help shows def, the
// default the code uses when the flag is not given.
type overrideFlag struct {
	durationFlag
	def time.Duration
}

func overrideDuration(d *time.Duration, def time.Duration) overrideFlag {
	return overrideFlag{durationFlag{d}, def}
}

func (f overrideFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return formatDuration(f.def)
	}
	return formatDuration(*f.d)
}

// parseDuration reads a Go duration ("1h30m", "500ms") or a Prometheus one, which also has
// days, weeks and years ("90d", "2w", "1y"); either may be negative, for Validate to name.
func parseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	d, err := model.ParseDurationAllowNegative(s)
	return time.Duration(d), err
}

// formatDuration writes a duration the way the flags take it ("90d", "1h30m", "-5s").
func formatDuration(d time.Duration) string { return model.Duration(d).String() }
