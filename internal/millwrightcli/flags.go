package millwrightcli

import (
	"fmt"
	"time"

	"github.com/prometheus/common/model"
)

// durationFlag is a time.Duration flag that also takes days, weeks and years ("90d", "1w").
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return "0s"
	}
	return model.Duration(*f.d).String()
}

func (f durationFlag) Set(s string) error {
	if d, err := time.ParseDuration(s); err == nil {
		*f.d = d
		return nil
	}
	d, err := model.ParseDurationAllowNegative(s)
	if err != nil {
		return fmt.Errorf("not a duration (examples: 90s, 15m, 36h, 90d, 2w)")
	}
	*f.d = time.Duration(d)
	return nil
}

func (f durationFlag) Type() string { return "duration" }
