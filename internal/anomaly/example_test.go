package anomaly_test

import (
	"fmt"

	"github.com/millwright/millwright/internal/anomaly"
)

// Analyze takes, for the fleet and for each dimension value, the current window's counts and
// the baseline windows'. Here firmware 2.1.0 (100 of 1,000 devices, all of model gw-200)
// starts dropping eight times as often.
func ExampleAnalyze() {
	window := func(drops, devices float64) anomaly.Counts {
		return anomaly.Counts{Num: drops, Den: devices * 0.25} // drops over device-hours
	}
	series := func(devices int, baseline, now float64) anomaly.Series {
		s := anomaly.Series{Devices: devices, Now: window(now, float64(devices))}
		for i := range 8 {
			s.Baseline = append(s.Baseline, window(baseline*(1+0.05*float64(i%3-1)), float64(devices)))
		}
		return s
	}
	in := anomaly.Input{
		Metric: anomaly.DropsPerDeviceHour,
		Fleet:  series(1000, 75, 75-7.5+60),
		Slices: map[anomaly.Key]anomaly.Series{
			{Dimension: "firmware", Value: "2.1.0"}: series(100, 7.5, 60),
			{Dimension: "firmware", Value: "2.0.0"}: series(900, 67.5, 67.5),
			{Dimension: "model", Value: "gw-200"}:   series(300, 22.5, 22.5-7.5+60),
			{Dimension: "model", Value: "gw-100"}:   series(700, 52.5, 52.5),
		},
	}
	f := anomaly.Analyze(in, anomaly.DefaultConfig())
	fmt.Println(f.Text)
	fmt.Printf("firmware 2.1.0 drops %.1f× as often as the rest of the fleet\n", f.GroupFactor)
	// Output:
	// drops per device-hour up 1.7×, explained by firmware=2.1.0 (99 % of the excess)
	// firmware 2.1.0 drops 8.0× as often as the rest of the fleet
}
