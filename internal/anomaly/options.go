package anomaly

import "time"

// Options configure the Finder. The yaml keys sit under `anomaly` in the server's
// configuration file.
type Options struct {
	// Interval is how often the finder runs. Default 1 min; zero means the default.
	Interval time.Duration `yaml:"interval"`
	// Window is the length of the current window and of each baseline window. Default 15 min;
	// zero means the default. A longer window sees smaller moves (more events to count) later.
	Window time.Duration `yaml:"window"`
	// BaselineWindows is how many windows of the same length just before the current one make
	// the baseline. Default 8 (2 hours with the default window); zero means the default; at
	// least 3 (a median and a MAD of fewer say nothing).
	BaselineWindows int `yaml:"baseline_windows"`
	// MinDevices is the fewest devices a dimension value must have to be named as a cause.
	// Default 5; zero means the default.
	MinDevices int `yaml:"min_devices"`
	// MaxValues bounds the values of one dimension considered (the largest by devices are
	// kept, the report counts the rest): a group per device must not make a run cost as much
	// as the fleet squared. Default 1,000; zero means the default.
	MaxValues int `yaml:"max_values"`
	// QueryTimeout bounds one run's queries together. Default 30 s; zero means the default.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// MinZ, MinFactor and MinShare are Analyze's thresholds (Config). Defaults 3.5, 1.25 and
	// 0.5; zero means the default.
	MinZ      float64 `yaml:"min_z"`
	MinFactor float64 `yaml:"min_factor"`
	MinShare  float64 `yaml:"min_share"`
	// GroupMinZ is how many standard deviations above its own baseline a single value must
	// move to be a finding although the fleet did not move (Config.GroupMinZ). Default 6;
	// zero means the default.
	GroupMinZ float64 `yaml:"group_min_z"`
	// OutlierFactor is how many times the rest of the fleet's drops or ingest delay a value
	// must have now (the lower bound of the factor) to be reported as an outlier, moved or
	// not (Config.MinOutlierFactor). Default 3; zero means the default; more than 1.
	OutlierFactor float64 `yaml:"outlier_factor"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	c := DefaultConfig()
	return Options{
		Interval:        time.Minute,
		Window:          15 * time.Minute,
		BaselineWindows: 8,
		MinDevices:      c.MinDevices,
		MaxValues:       1000,
		QueryTimeout:    30 * time.Second,
		MinZ:            c.MinZ,
		MinFactor:       c.MinFactor,
		MinShare:        c.MinShare,
		OutlierFactor:   c.MinOutlierFactor,
		GroupMinZ:       c.GroupMinZ,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Interval == 0 {
		o.Interval = d.Interval
	}
	if o.Window == 0 {
		o.Window = d.Window
	}
	if o.BaselineWindows == 0 {
		o.BaselineWindows = d.BaselineWindows
	}
	if o.MinDevices == 0 {
		o.MinDevices = d.MinDevices
	}
	if o.MaxValues == 0 {
		o.MaxValues = d.MaxValues
	}
	if o.QueryTimeout == 0 {
		o.QueryTimeout = d.QueryTimeout
	}
	if o.MinZ == 0 {
		o.MinZ = d.MinZ
	}
	if o.MinFactor == 0 {
		o.MinFactor = d.MinFactor
	}
	if o.MinShare == 0 {
		o.MinShare = d.MinShare
	}
	if o.GroupMinZ == 0 {
		o.GroupMinZ = d.GroupMinZ
	}
	if o.OutlierFactor == 0 {
		o.OutlierFactor = d.OutlierFactor
	}
	return o
}

func (o Options) config() Config {
	return Config{MinZ: o.MinZ, MinFactor: o.MinFactor, MinShare: o.MinShare, MinDevices: o.MinDevices, MinOutlierFactor: o.OutlierFactor, GroupMinZ: o.GroupMinZ}
}
