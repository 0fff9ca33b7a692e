package anomaly

import (
	"time"

	"github.com/millwright/millwright/internal/optcheck"
)

// Validate refuses options an operator cannot have meant: an interval, window, query timeout,
// bound or threshold that is zero or negative; a window not a whole number of seconds or
// shorter than 10 s; fewer than 3 baseline windows; a minimum factor or outlier factor of 1 or
// less, a minimum share above 1. The error is an *optcheck.Error keyed by the option's YAML key.
// (New fills zero fields with the defaults; a configuration file's zero is refused here,
// since it would fall back to a default the operator did not choose.)
func (o Options) Validate() error {
	if err := optcheck.First(
		optcheck.Positive("interval", o.Interval),
		optcheck.Positive("window", o.Window),
		optcheck.Positive("baseline_windows", o.BaselineWindows),
		optcheck.Positive("min_devices", o.MinDevices),
		optcheck.Positive("max_values", o.MaxValues),
		optcheck.Positive("query_timeout", o.QueryTimeout),
	); err != nil {
		return err
	}
	// A window holds at least a few of the monitor's writes: 10 s is enough only with a
	// --monitor-interval of a second or two (the end-to-end tests); at the default 15 s a
	// window of a minute or more is what makes sense.
	if o.Window < 10*time.Second || o.Window%time.Second != 0 {
		return optcheck.Invalid("window", o.Window, "must be a whole number of seconds, at least 10s")
	}
	if o.BaselineWindows < 3 {
		return optcheck.Invalid("baseline_windows", o.BaselineWindows, "must be at least 3: a median and a MAD of fewer windows say nothing")
	}
	if o.MinZ <= 0 {
		return optcheck.Invalid("min_z", o.MinZ, "must be positive")
	}
	if o.GroupMinZ <= 0 {
		return optcheck.Invalid("group_min_z", o.GroupMinZ, "must be positive")
	}
	if o.MinFactor <= 1 {
		return optcheck.Invalid("min_factor", o.MinFactor, "must be more than 1")
	}
	if o.MinShare <= 0 || o.MinShare > 1 {
		return optcheck.Invalid("min_share", o.MinShare, "must be more than 0 and at most 1")
	}
	if o.OutlierFactor <= 1 {
		return optcheck.Invalid("outlier_factor", o.OutlierFactor, "must be more than 1")
	}
	return nil
}
