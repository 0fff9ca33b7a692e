package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/millwright/millwright/protocol"
)

// plantGenerator makes the readings of one machine in a plant (a motor-driven pump with its
// environment sensor) as the device agent reports them: sixteen signals sampled together every
// step, each at its sensor's resolution. Most of them hold their value between changes, as real
// plant signals do: temperatures, humidity and pressures move a resolution step now and then,
// the machine's state and setpoints change a few times a day, counters rise while the machine
// runs; a few noisy signals (vibration, current, flow) change in nearly every sample while it
// runs. Times are milliseconds, as the agent's sources stamp them: a schedule started at an
// arbitrary millisecond, each sample 0–2 ms late (scheduling delay), the same model as the
// agent's own wire benchmark (benchData in agent/bench_test.go), whose four signals (0.1 °C,
// 0.1 %RH, 1 Pa, a parts counter) are among these.
type plantGenerator struct {
	step    time.Duration
	start   int64 // ms of sampling instant 0, before its delay
	instant int   // the current sampling instant
	at      int64 // its time, ms
	next    int   // the next signal of the instant to report
	run     int   // machine state: stateStopped, stateRunning, stateFault
	vals    []int64
	acc     []float64 // counters: the exact accumulated amount, in the signal's unit
	rng     *rand.Rand
	onTicks bool // times exactly on the schedule, without the scheduling delay
	batch   []protocol.Measurement
}

// Machine states, the values of run_state.
const (
	stateStopped = 0
	stateRunning = 1
	stateFault   = 2
)

// plantKind is how a plant signal behaves.
type plantKind uint8

const (
	// plantStep holds its value and moves one resolution step up or down, on average once
	// every period, drawn back toward its centre the further it wanders (a slow process read
	// at a resolution coarser than its noise).
	plantStep plantKind = iota
	// plantNoisy is centre plus normal noise of standard deviation spread, rounded to the
	// resolution, while the machine runs; stopped, it reads idle (plus idleNoise): a value
	// in nearly every sample while running.
	plantNoisy
	// plantChoice takes one of choices, switching to another on average once every period.
	plantChoice
	// plantState is the machine's state (run_state).
	plantState
	// plantCounter adds rate per hour while the machine runs (idle per hour while it does
	// not), reported rounded down to the resolution.
	plantCounter
)

// plantSignal is one signal of the plant mix.
type plantSignal struct {
	name, unit string
	kind       plantKind
	decimals   int           // resolution: 10^-decimals of the unit
	centre     float64       // plantStep, plantNoisy: typical value; plantCounter: start value
	spread     float64       // plantStep: how far it wanders (there, three steps in four lead back); plantNoisy: noise σ
	period     time.Duration // plantStep, plantChoice: mean time between changes
	idle       float64       // plantNoisy: reading while stopped; plantCounter: rate per hour while stopped
	idleNoise  float64       // plantNoisy: noise σ while stopped (0: holds idle exactly)
	rate       float64       // plantCounter: amount per hour while running (parts, kWh, h)
	choices    []float64     // plantChoice
	parts      bool          // plantCounter: whole units arriving one at a time (rate is the mean)
}

// plantSignals is the plant mix. The parameters are the ones a plant engineer would give for a
// pump on a 10 s sampling schedule; the measured share of samples that change is printed with
// every storage run.
var plantSignals = []plantSignal{
	{name: "motor_temp", unit: "Cel", kind: plantStep, decimals: 1, centre: 62, spread: 3, period: 2 * time.Minute},
	{name: "bearing_temp", unit: "Cel", kind: plantStep, decimals: 1, centre: 48, spread: 2, period: 3 * time.Minute},
	{name: "oil_temp", unit: "Cel", kind: plantStep, decimals: 1, centre: 41, spread: 2, period: 4 * time.Minute},
	{name: "ambient_temp", unit: "Cel", kind: plantStep, decimals: 1, centre: 23, spread: 2, period: 5 * time.Minute},
	{name: "ambient_humidity", unit: "%RH", kind: plantStep, decimals: 1, centre: 45, spread: 5, period: time.Minute},
	{name: "barometric_pressure", unit: "Pa", kind: plantStep, decimals: 0, centre: 101325, spread: 300, period: time.Minute},
	{name: "discharge_pressure", unit: "kPa", kind: plantStep, decimals: 0, centre: 420, spread: 5, period: 30 * time.Second},
	{name: "vibration_rms", unit: "mm/s", kind: plantNoisy, decimals: 2, centre: 2.8, spread: 0.12, idle: 0.03, idleNoise: 0.01},
	{name: "motor_current", unit: "A", kind: plantNoisy, decimals: 2, centre: 28.5, spread: 0.25},
	{name: "flow", unit: "l/s", kind: plantNoisy, decimals: 1, centre: 12, spread: 0.25},
	{name: "run_state", kind: plantState},
	{name: "speed_setpoint", unit: "1/min", kind: plantChoice, choices: []float64{1200, 1350, 1480}, period: 8 * time.Hour},
	{name: "bypass_valve_open", kind: plantChoice, choices: []float64{0, 1}, period: time.Hour},
	{name: "parts_total", kind: plantCounter, centre: 184_000, rate: 120, parts: true},
	{name: "energy_total", unit: "kWh", kind: plantCounter, decimals: 1, centre: 52_000, rate: 15, idle: 0.3},
	{name: "run_hours_total", unit: "h", kind: plantCounter, decimals: 2, centre: 21_400, rate: 1},
}

// The machine's state changes: it runs for runFor on average, then stops for stopFor; a
// fault, on average once every faultEvery of running, stops it for faultFor.
const (
	runFor     = 4 * time.Hour
	stopFor    = 30 * time.Minute
	faultEvery = 72 * time.Hour
	faultFor   = 20 * time.Minute
)

var pow10 = [...]float64{1, 10, 100, 1000}

// newPlantGenerator makes device's readings from start; onTicks puts every time exactly on the
// schedule.
func newPlantGenerator(device int, start time.Time, step time.Duration, onTicks bool) *plantGenerator {
	g := &plantGenerator{step: step, run: stateRunning, onTicks: onTicks, rng: rand.New(rand.NewPCG(uint64(device), 0x9a17)),
		vals: make([]int64, len(plantSignals)), acc: make([]float64, len(plantSignals))}
	// Each device's schedule starts at an arbitrary millisecond of its first step.
	g.start = start.Truncate(time.Second).UnixMilli() + g.rng.Int64N(step.Milliseconds())
	g.at = g.start + g.late()
	for i, s := range plantSignals {
		switch s.kind {
		case plantStep, plantNoisy:
			// Devices differ a little: the centre is shifted by up to the spread.
			c := s.centre + (g.rng.Float64()-0.5)*s.spread
			g.vals[i] = int64(math.Round(c * pow10[s.decimals]))
		case plantChoice:
			g.vals[i] = int64(g.rng.IntN(len(s.choices)))
		case plantState:
			g.vals[i] = stateRunning
		case plantCounter:
			g.acc[i] = s.centre + float64(g.rng.IntN(1000))
			g.vals[i] = int64(math.Floor(g.acc[i] * pow10[s.decimals]))
		}
	}
	return g
}

// late is the scheduling delay of a sample, 0–2 ms (drawn even onTicks, so that the values
// stay the same).
func (g *plantGenerator) late() int64 {
	d := g.rng.Int64N(3)
	if g.onTicks {
		return 0
	}
	return d
}

// chance reports an event of mean period p happening within one step.
func (g *plantGenerator) chance(p time.Duration) bool {
	return g.rng.Float64() < float64(g.step)/float64(p)
}

// advance moves every signal to the next sampling instant.
func (g *plantGenerator) advance() {
	g.instant++
	g.at = g.start + int64(g.instant)*g.step.Milliseconds() + g.late()
	switch g.run {
	case stateRunning:
		switch {
		case g.chance(faultEvery):
			g.run = stateFault
		case g.chance(runFor):
			g.run = stateStopped
		}
	case stateStopped:
		if g.chance(stopFor) {
			g.run = stateRunning
		}
	case stateFault:
		if g.chance(faultFor) {
			g.run = stateStopped
		}
	}
	hours := g.step.Hours()
	for i, s := range plantSignals {
		scale := pow10[s.decimals]
		switch s.kind {
		case plantStep:
			if g.chance(s.period) {
				// Up with probability 1/2 at the centre, less the further above it.
				off := (float64(g.vals[i])/scale - s.centre) / s.spread
				if g.rng.Float64() < min(max(0.5-off/4, 0.05), 0.95) {
					g.vals[i]++
				} else {
					g.vals[i]--
				}
			}
		case plantNoisy:
			if g.run == stateRunning {
				g.vals[i] = int64(math.Round((s.centre + g.rng.NormFloat64()*s.spread) * scale))
			} else {
				g.vals[i] = int64(math.Round(max(s.idle+g.rng.NormFloat64()*s.idleNoise, 0) * scale))
			}
		case plantChoice:
			if g.chance(s.period) {
				g.vals[i] = (g.vals[i] + 1 + int64(g.rng.IntN(len(s.choices)-1))) % int64(len(s.choices))
			}
		case plantState:
			g.vals[i] = int64(g.run)
		case plantCounter:
			rate := s.idle
			if g.run == stateRunning {
				rate = s.rate
			}
			if s.parts {
				if g.rng.Float64() < rate*hours {
					g.acc[i]++
				}
			} else {
				g.acc[i] += rate * hours
			}
			g.vals[i] = int64(math.Floor(g.acc[i] * scale))
		}
	}
}

// value is signal i's reading: the sensor's resolution steps as a decimal (k / 10^d is the
// float64 nearest to the decimal, the value its shortest decimal string parses to).
func (g *plantGenerator) value(i int) float64 {
	s := plantSignals[i]
	if s.kind == plantChoice {
		return s.choices[g.vals[i]]
	}
	return float64(g.vals[i]) / pow10[s.decimals]
}

// nextBatch returns the next n measurements in sampling order (a slice reused by the next
// call). A batch ends where n ends, not where a sampling instant does, as the agent cuts them.
func (g *plantGenerator) nextBatch(n int) []protocol.Measurement {
	g.batch = g.batch[:0]
	for len(g.batch) < n {
		if g.next == len(plantSignals) {
			g.advance()
			g.next = 0
		}
		s := plantSignals[g.next]
		g.batch = append(g.batch, protocol.Measurement{Name: s.name, Unit: s.unit, Time: g.at,
			Kind: protocol.KindFloat, HasValue: true, Value: g.value(g.next)})
		g.next++
	}
	return g.batch
}

// nextPack returns the next n measurements as a resolved pack (absolute times).
func (g *plantGenerator) nextPack(n int) protocol.Pack {
	return protocol.Batch{Measurements: g.nextBatch(n)}.Pack()
}

// describe is signal s's behaviour in a few words, for the report.
func (s plantSignal) describe() string {
	u := displayUnit(s.unit)
	res := fmt.Sprintf("%g%s", 1/pow10[s.decimals], u)
	switch s.kind {
	case plantStep:
		return fmt.Sprintf("held; a %s step every %s on average; around %s%s, drawn back when it wanders ±%g", res, durationWords(s.period), num(s.centre, 0), u, s.spread)
	case plantNoisy:
		idle := fmt.Sprintf("reads %g when stopped", s.idle)
		if s.idleNoise > 0 {
			idle = fmt.Sprintf("%g ± %g when stopped", s.idle, s.idleNoise)
		}
		return fmt.Sprintf("noisy while running: %g%s, σ %g, read at %s; %s", s.centre, u, s.spread, res, idle)
	case plantChoice:
		c := make([]string, len(s.choices))
		for i, v := range s.choices {
			c[i] = num(v, 0)
		}
		return fmt.Sprintf("%s%s, switches every %s on average", strings.Join(c, " / "), u, durationWords(s.period))
	case plantState:
		return fmt.Sprintf("stopped 0 / running 1 / fault 2: runs %s on average, then stops for %s; a fault every %s of running stops it for %s",
			durationWords(runFor), durationWords(stopFor), durationWords(faultEvery), durationWords(faultFor))
	case plantCounter:
		if s.parts {
			return fmt.Sprintf("rises by one, %g an hour on average while running", s.rate)
		}
		idle := "still when stopped"
		if s.idle > 0 {
			idle = fmt.Sprintf("%g%s an hour when stopped", s.idle, u)
		}
		return fmt.Sprintf("rises %g%s an hour while running (%s), read at %s", s.rate, u, idle, res)
	}
	return ""
}

// displayUnit is a SenML unit as the report writes it after a number.
func displayUnit(u string) string {
	switch u {
	case "":
		return ""
	case "Cel":
		return " °C"
	case "1/min":
		return " rpm"
	}
	return " " + u
}

// durationWords writes 2m0s as "2 min", 1h0m0s as "1 h", 30s as "30 s".
func durationWords(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d h", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d min", d/time.Minute)
	}
	return fmt.Sprintf("%g s", d.Seconds())
}

// sampleStats describes a device's data as the TSDB sees it: for each series (by name), how
// many samples had a value different from the series' previous sample, and how many came at
// an interval different from the interval before (a non-zero delta-of-delta, which the TSDB's
// timestamp encoding pays for). A series' first sample counts as neither; the first interval
// has nothing to compare to either.
type sampleStats struct {
	series map[string]*seriesStats
}

type seriesStats struct {
	samples   int64 // all samples
	compared  int64 // samples after the series' first
	changed   int64 // of those, with a value other than the one before
	intervals int64 // intervals after the series' first
	irregular int64 // of those, of another length than the one before
	last      float64
	lastT     int64
	lastDelta int64
}

func newSampleStats() *sampleStats { return &sampleStats{series: map[string]*seriesStats{}} }

// observe counts a pack's samples.
func (st *sampleStats) observe(p protocol.Pack) {
	bt := 0.0
	for _, r := range p {
		if r.BaseTime != 0 {
			bt = r.BaseTime
		}
		t := int64(math.Round((bt + r.Time) * 1000))
		s := st.series[r.Name]
		if s == nil {
			s = &seriesStats{}
			st.series[r.Name] = s
		} else {
			s.compared++
			if *r.Value != s.last {
				s.changed++
			}
			d := t - s.lastT
			if s.samples > 1 {
				s.intervals++
				if d != s.lastDelta {
					s.irregular++
				}
			}
			s.lastDelta = d
		}
		s.samples++
		s.last, s.lastT = *r.Value, t
	}
}

// add merges o's counts into st.
func (st *sampleStats) add(o *sampleStats) {
	for name, s := range o.series {
		t := st.series[name]
		if t == nil {
			t = &seriesStats{}
			st.series[name] = t
		}
		t.samples += s.samples
		t.compared += s.compared
		t.changed += s.changed
		t.intervals += s.intervals
		t.irregular += s.irregular
	}
}

// changedShare is the share of samples (after each series' first) whose value changed, over
// the named series or all of them when names is empty.
func (st *sampleStats) changedShare(names ...string) float64 {
	var n, c int64
	for name, s := range st.series {
		if len(names) > 0 && !slices.Contains(names, name) {
			continue
		}
		n += s.compared
		c += s.changed
	}
	if n == 0 {
		return 0
	}
	return float64(c) / float64(n)
}

// irregularShare is the share of intervals that differ from the interval before.
func (st *sampleStats) irregularShare() float64 {
	var n, c int64
	for _, s := range st.series {
		n += s.intervals
		c += s.irregular
	}
	if n == 0 {
		return 0
	}
	return float64(c) / float64(n)
}
