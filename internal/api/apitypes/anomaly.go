package apitypes

import "time"

// AnomalyReport is the answer of GET /api/v1/anomalies: the anomaly finder's latest run
// (docs/monitoring.md, "Anomalies").
type AnomalyReport struct {
	// Time is the end of the window evaluated.
	Time time.Time `json:"time"`
	// WindowSeconds is the window's length; BaselineWindows how many windows before it are
	// the baseline.
	WindowSeconds   float64 `json:"window_seconds"`
	BaselineWindows int     `json:"baseline_windows"`
	// Devices is how many devices the fleet had.
	Devices int `json:"devices"`
	// Findings holds one finding per metric that moved; empty when nothing did.
	Findings []AnomalyFinding `json:"findings"`
	// Outliers holds, per metric (drops, ingest delay), the value that stands furthest above
	// the rest of the fleet now, moved or not: a fault present since before the baseline.
	Outliers []AnomalyOutlier `json:"outliers"`
	// DroppedValues counts, per dimension, values left out by the cardinality bound.
	DroppedValues map[string]int `json:"dropped_values,omitempty"`
	// TookSeconds is how long the run took.
	TookSeconds float64 `json:"took_seconds"`
}

// AnomalyFinding is a fleet metric that moved and the dimension value that explains it.
type AnomalyFinding struct {
	// Metric is drops_per_device_hour, ingest_delay_seconds or offline_ratio.
	Metric string `json:"metric"`
	// Scope is "fleet" when the fleet's metric moved, "group" when only the named value's did.
	Scope string `json:"scope"`
	// Text says it in one line: "drops per device-hour up 4.1×, explained by
	// firmware=2.1.0 (92 % of the excess)".
	Text string `json:"text"`
	// Factor is the fleet metric now over its baseline.
	Factor float64 `json:"factor"`
	// Dimension and Value name the cause; empty when no single value explains the move.
	Dimension string `json:"dimension,omitempty"`
	Value     string `json:"value,omitempty"`
	// Share is the part of the fleet's excess the value accounts for, 0 to 1.
	Share float64 `json:"share"`
	// GroupFactor is the value's metric over the rest of the fleet's, now; OwnFactor over
	// its own baseline.
	GroupFactor float64 `json:"group_factor"`
	OwnFactor   float64 `json:"own_factor"`
	// RestNormal says the rest of the fleet did not move.
	RestNormal bool            `json:"rest_normal"`
	Evidence   AnomalyEvidence `json:"evidence"`
}

// AnomalyEvidence is the numbers a finding rests on: the metric now and at baseline, and the
// excess in standard deviations (z), for the fleet, the named value and the rest of the fleet.
type AnomalyEvidence struct {
	FleetNow      float64 `json:"fleet_now"`
	FleetBaseline float64 `json:"fleet_baseline"`
	FleetZ        float64 `json:"fleet_z"`
	GroupNow      float64 `json:"group_now"`
	GroupBaseline float64 `json:"group_baseline"`
	GroupZ        float64 `json:"group_z"`
	GroupDevices  int     `json:"group_devices"`
	// GroupNum and GroupDen are the value's numerator and denominator now (drops and
	// device-hours, delay seconds and batches, offline and all devices).
	GroupNum     float64 `json:"group_num"`
	GroupDen     float64 `json:"group_den"`
	RestNow      float64 `json:"rest_now"`
	RestBaseline float64 `json:"rest_baseline"`
	RestZ        float64 `json:"rest_z"`
	// Candidates is how many values passed the tests before the most specific was chosen.
	Candidates int `json:"candidates"`
}

// AnomalyOutlier is a dimension value whose metric now stands well above the rest of the
// fleet's.
type AnomalyOutlier struct {
	Metric    string `json:"metric"`
	Dimension string `json:"dimension"`
	Value     string `json:"value"`
	// Text says it in one line: "drops per device-hour on firmware=2.1.0 is 5.0× the rest of
	// the fleet's (200 devices; 44 % of the fleet's drops)".
	Text string `json:"text"`
	// Factor is the value's metric over the rest of the fleet's; FactorLow its lower bound.
	Factor    float64 `json:"factor"`
	FactorLow float64 `json:"factor_low"`
	// Z is the value's excess in standard deviations; Share that excess as a share of the
	// fleet's numerator.
	Z       float64 `json:"z"`
	Share   float64 `json:"share"`
	Devices int     `json:"devices"`
	// Now and RestNow are the value's metric and the rest of the fleet's.
	Now     float64 `json:"now"`
	RestNow float64 `json:"rest_now"`
}

// TrendReport is the answer of GET /api/v1/trends: per value of a dimension, a metric at each
// step of a range and its trend (docs/monitoring.md, "Trends").
type TrendReport struct {
	Metric      string    `json:"metric"`
	Dimension   string    `json:"dimension"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	StepSeconds float64   `json:"step_seconds"`
	// Source is where the points came from: "recorded" (the anomaly finder's window counts,
	// devices as they were then) or "raw" (every device's series, devices as they are now).
	Source string        `json:"source"`
	Series []TrendSeries `json:"series"`
	// DroppedValues counts the values left out by the cardinality bound.
	DroppedValues int `json:"dropped_values,omitempty"`
}

// TrendSeries is one value's series and trend.
type TrendSeries struct {
	Dimension string       `json:"dimension"`
	Value     string       `json:"value"`
	Devices   int          `json:"devices"`
	Points    []TrendPoint `json:"points"`
	// N is how many points had a value.
	N int `json:"n"`
	// SlopePerDay is the Theil–Sen slope in the metric's unit per day; Start and End the
	// fitted line at the first and last point.
	SlopePerDay float64 `json:"slope_per_day"`
	Start       float64 `json:"start"`
	End         float64 `json:"end"`
	// Tau is Kendall's tau; P the Mann–Kendall test's two-sided p-value; Q that p-value
	// adjusted for the number of values in the report (Benjamini–Hochberg).
	Tau float64 `json:"tau"`
	P   float64 `json:"p"`
	Q   float64 `json:"q"`
	// Significant is Q < 0.05 with at least 4 points; Direction "up", "down" or "flat".
	Significant bool   `json:"significant"`
	Direction   string `json:"direction"`
}

// TrendPoint is a value at a time.
type TrendPoint struct {
	T time.Time `json:"t"`
	V float64   `json:"v"`
}
