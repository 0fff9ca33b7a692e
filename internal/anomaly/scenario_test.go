package anomaly

import (
	"flag"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var scenarios = flag.Int("scenarios", 200, "faulty scenarios TestScenarios generates (as many fault-free ones again)")

// Floors the method must stay above over the generated scenarios (docs/monitoring.md,
// "Anomalies", has the measured values).
const (
	floorPrecision  = 0.95
	floorRecall     = 0.70 // over all faults, including the ones too small to move the fleet
	floorRecallBig  = 0.90 // faults that add at least 25 % to the fleet's metric
	ceilFalseAlarms = 0.015
)

type tally struct{ faults, named, correct, detected int }

func (t *tally) add(o tally) {
	t.faults += o.faults
	t.named += o.named
	t.correct += o.correct
	t.detected += o.detected
}

func ratio(a, b int) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f (%d/%d)", float64(a)/float64(b), a, b)
}

// TestScenarios measures Analyze's precision and recall of the named cause over generated
// scenarios and its false-alarm rate over fault-free ones; -v prints the table of
// docs/monitoring.md:
//
//	go test ./internal/anomaly -run TestScenarios -v -scenarios 200
func TestScenarios(t *testing.T) {
	cfg := DefaultConfig()
	factorBands := []float64{1.5, 2, 4, 10.01}
	shareBands := []float64{0.02, 0.05, 0.15, 0.4001}
	cells := make([][]tally, len(factorBands)-1)
	for i := range cells {
		cells[i] = make([]tally, len(shareBands)-1)
	}
	band := func(bands []float64, x float64) int {
		for i := 1; i < len(bands); i++ {
			if x < bands[i] {
				return i - 1
			}
		}
		return len(bands) - 2
	}
	var all, big tally
	byMetric := map[Metric]*tally{DropsPerDeviceHour: {}, IngestDelaySeconds: {}}
	byDim := map[string]*tally{}
	var misses []string
	outliersRight, outliersFaulty := 0, 0 // outliers reported on faulty scenarios, and naming the fault
	for i := range *scenarios {
		sc := Generate(uint64(i)+1, true)
		f := sc.Fault
		var o tally
		o.faults = 1
		fleetMove := 0.0
		for _, in := range sc.Inputs {
			if o := FindOutlier(in, cfg); o != nil {
				outliersFaulty++
				k := Key{o.Dimension, o.Value}
				if in.Metric == f.Metric && (k == f.Key || slices.Contains(sc.Equivalent, k)) {
					outliersRight++
				}
			}
			fd := Analyze(in, cfg)
			if in.Metric == f.Metric {
				fleetMove = expectedFleetFactor(in, f)
			}
			if fd == nil {
				continue
			}
			if in.Metric == f.Metric {
				o.detected = 1
			}
			if fd.Dimension == "" {
				continue
			}
			o.named++
			if in.Metric == f.Metric && (fd.Key() == f.Key || slices.Contains(sc.Equivalent, fd.Key())) {
				o.correct = 1
			} else {
				misses = append(misses, fmt.Sprintf("seed %d: fault %s %s ×%.2f on %.0f %%, named %s (%s)", sc.Seed, f.Metric, f.Key, f.Factor, 100*f.GroupShare, fd.Key(), fd.Text))
			}
		}
		if o.correct == 0 && fleetMove >= 1.25 {
			misses = append(misses, fmt.Sprintf("seed %d: fault %s %s ×%.2f on %.0f %% (fleet ×%.2f) not named", sc.Seed, f.Metric, f.Key, f.Factor, 100*f.GroupShare, fleetMove))
		}
		all.add(o)
		if fleetMove >= 1.25 {
			big.add(o)
		}
		byMetric[f.Metric].add(o)
		if byDim[f.Key.Dimension] == nil {
			byDim[f.Key.Dimension] = &tally{}
		}
		byDim[f.Key.Dimension].add(o)
		cells[band(factorBands, f.Factor)][band(shareBands, f.GroupShare)].add(o)
	}
	falseAlarms, clean, falseOutliers := 0, *scenarios, 0
	for i := range clean {
		sc := Generate(uint64(i)+1_000_000, false)
		for _, in := range sc.Inputs {
			if o := FindOutlier(in, cfg); o != nil {
				falseOutliers++
				misses = append(misses, fmt.Sprintf("seed %d: fault-free, outlier (a built-in difference) %s", sc.Seed, o.Text))
			}
		}
		for _, in := range sc.Inputs {
			if fd := Analyze(in, cfg); fd != nil {
				falseAlarms++
				misses = append(misses, fmt.Sprintf("seed %d: fault-free, reported %s", sc.Seed, fd.Text))
				break
			}
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%d faulty scenarios, %d fault-free\n\n", *scenarios, clean)
	fmt.Fprintf(&b, "recall of the named cause (precision) by fault factor and faulty group's share of the fleet:\n\n")
	fmt.Fprintf(&b, "| factor \\ share |")
	for j := 0; j+1 < len(shareBands); j++ {
		fmt.Fprintf(&b, " %.0f–%.0f %% |", 100*shareBands[j], 100*shareBands[j+1])
	}
	fmt.Fprintf(&b, "\n|---|---|---|---|\n")
	for i := range cells {
		fmt.Fprintf(&b, "| %.1f–%.0f× |", factorBands[i], factorBands[i+1])
		for j := range cells[i] {
			c := cells[i][j]
			fmt.Fprintf(&b, " %s %s |", ratio(c.correct, c.faults), precision(c))
		}
		fmt.Fprintf(&b, "\n")
	}
	fmt.Fprintf(&b, "\n| set | scenarios | move found (fleet or group) | cause named right (recall) | precision of named causes |\n|---|---|---|---|---|\n")
	row := func(name string, t tally) {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", name, t.faults, ratio(t.detected, t.faults), ratio(t.correct, t.faults), ratio(t.correct, t.named))
	}
	row("all faults", all)
	row("faults moving the fleet ≥ 1.25×", big)
	for _, m := range []Metric{DropsPerDeviceHour, IngestDelaySeconds} {
		row("metric "+string(m), *byMetric[m])
	}
	for _, d := range Dimensions {
		if byDim[d] != nil {
			row("dimension "+d, *byDim[d])
		}
	}
	fmt.Fprintf(&b, "\nfalse alarms on fault-free scenarios: %s\n", ratio(falseAlarms, clean))
	fmt.Fprintf(&b, "outliers (FindOutlier, %.0f× the rest): on faulty scenarios %d reported, %d naming the fault; on fault-free scenarios %d (of %d metrics)\n",
		cfg.MinOutlierFactor, outliersFaulty, outliersRight, falseOutliers, 2*clean)
	t.Log("\n" + b.String())
	for _, m := range misses {
		t.Log(m)
	}

	require.GreaterOrEqual(t, float64(all.correct)/float64(all.named), floorPrecision, "precision")
	require.GreaterOrEqual(t, float64(all.correct)/float64(all.faults), floorRecall, "recall")
	if big.faults > 0 {
		require.GreaterOrEqual(t, float64(big.correct)/float64(big.faults), floorRecallBig, "recall of faults that move the fleet")
	}
	require.LessOrEqual(t, float64(falseAlarms)/float64(clean), ceilFalseAlarms, "false alarms")
	// Outliers on fault-free fleets are the generator's built-in differences (operators'
	// delays ×0.5–3, models' drops ×0.5–2): true, standing, and no alarm. On faulty ones, most
	// outliers are the fault.
	require.GreaterOrEqual(t, float64(outliersRight)/float64(outliersFaulty), 0.8, "outliers naming the fault")
}

func precision(t tally) string {
	if t.named == 0 {
		return ""
	}
	return fmt.Sprintf("[%.2f]", float64(t.correct)/float64(t.named))
}

// expectedFleetFactor is how much the fault moves the fleet's metric in expectation: the
// group's part of the fleet's numerator in the baseline, times the factor less one, plus one.
func expectedFleetFactor(in Input, f *Fault) float64 {
	var fleet, group float64
	for i, w := range in.Fleet.Baseline {
		fleet += w.Num
		group += in.Slices[f.Key].Baseline[i].Num
	}
	if fleet == 0 {
		return 1
	}
	return 1 + group/fleet*(f.Factor-1)
}
