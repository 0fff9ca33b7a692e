package monitor

import (
	"time"

	"github.com/millwright/millwright/internal/optcheck"
)

// Options configure the fleet monitor.
type Options struct {
	// Interval is how often every device's series are written to the TSDB, the registry's
	// facts read again and liveness judged. Default 15 s.
	Interval time.Duration `yaml:"interval"`
	// SilentFactor: a device not heard from for longer than SilentFactor × its own reporting
	// interval is silent. Default 3.
	SilentFactor float64 `yaml:"silent_factor"`
	// DefaultInterval is the reporting interval of a device that neither reported one at
	// connect nor has one in its configuration: the agent's default schedule, 45 s plus up to
	// 30 s of jitter. Default 75 s.
	DefaultInterval time.Duration `yaml:"default_interval"`
	// OfflineAfter: a device not heard from for longer than this is offline rather than
	// silent (gone, not late). Default 7 days.
	OfflineAfter time.Duration `yaml:"offline_after"`
	// SessionRetention is how long the connection history keeps an ended session. Default 30
	// days.
	SessionRetention time.Duration `yaml:"session_retention"`
	// MaxPendingSessions bounds the ended sessions waiting to be written to the registry; past
	// it an ended session is counted (millwright_monitor_sessions_dropped_total) and not
	// recorded, so a registry outage under a reconnect storm cannot grow memory without bound.
	// Default 100,000.
	MaxPendingSessions int `yaml:"max_pending_sessions"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Interval:           15 * time.Second,
		SilentFactor:       3,
		DefaultInterval:    75 * time.Second,
		OfflineAfter:       7 * 24 * time.Hour,
		SessionRetention:   30 * 24 * time.Hour,
		MaxPendingSessions: 100_000,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Interval <= 0 {
		o.Interval = d.Interval
	}
	if o.SilentFactor <= 0 {
		o.SilentFactor = d.SilentFactor
	}
	if o.DefaultInterval <= 0 {
		o.DefaultInterval = d.DefaultInterval
	}
	if o.OfflineAfter <= 0 {
		o.OfflineAfter = d.OfflineAfter
	}
	if o.SessionRetention <= 0 {
		o.SessionRetention = d.SessionRetention
	}
	if o.MaxPendingSessions <= 0 {
		o.MaxPendingSessions = d.MaxPendingSessions
	}
	return o
}

// Validate refuses values an operator cannot have meant: a bound or interval of zero or less,
// an interval below a second, a silent factor below 1 (silent before the device was even due).
// The error is an *optcheck.Error keyed by the option's YAML key.
func (o Options) Validate() error {
	var interval, silent error
	if o.Interval > 0 && o.Interval < time.Second {
		interval = optcheck.Invalid("interval", o.Interval, "must be at least 1s")
	}
	if !(o.SilentFactor >= 1 && o.SilentFactor <= 1000) {
		silent = optcheck.Invalid("silent_factor", o.SilentFactor, "must be between 1 and 1000")
	}
	return optcheck.First(
		optcheck.Positive("interval", o.Interval),
		interval,
		silent,
		optcheck.Positive("default_interval", o.DefaultInterval),
		optcheck.Positive("offline_after", o.OfflineAfter),
		optcheck.Positive("session_retention", o.SessionRetention),
		optcheck.Positive("max_pending_sessions", o.MaxPendingSessions),
	)
}
