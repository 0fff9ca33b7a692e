package anomaly

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Fault is what a scenario injected: in the current window, the devices with Key's value have
// Metric multiplied by Factor.
type Fault struct {
	Metric Metric
	Key    Key
	Factor float64
	// GroupShare is the faulty group's share of the fleet's devices.
	GroupShare float64
}

// Scenario is a generated fleet: the inputs Analyze takes for every metric, and the fault
// injected (nil for a fault-free scenario).
type Scenario struct {
	Seed    uint64
	Devices int
	Inputs  []Input
	Fault   *Fault
	// Equivalent lists the keys whose devices are exactly the faulty group's (naming one of
	// them is as right as naming the fault's key).
	Equivalent []Key
}

// ScenarioWindows is how many baseline windows a generated scenario has.
const ScenarioWindows = 8

// scenarioWindowHours is the generated windows' length: the finder's default window, 15 min.
const scenarioWindowHours = 0.25

type simDevice struct {
	keys      []Key
	dropRate  float64 // per hour
	delayMean float64 // seconds
	batches   float64 // per window
}

// Generate makes a scenario from seed. A faulty scenario has a fault of factor 1.5–10
// (log-uniform) on the drops or the ingest delay of one value, of any dimension, that holds
// 2–40 % of the fleet's devices.
//
// The fleet has 300–3,000 devices; 2–5 models, 3–7 firmware versions (each firmware mostly on
// one model, so that firmware and model are correlated the way real fleets are), 2–4
// operators and 3–8 groups (a fifth of the devices in none; half the groups lines of a
// single model, the others mixed), every dimension's values of varied sizes. A device's drop rate depends on its model and operator and on itself
// (log-normal), its ingest delay on its operator; counts are Poisson, delays have a spread as
// large as their mean, and every window has a fleet-wide swing of about 5 % (network
// weather), so the baseline windows differ by more than Poisson noise.
func Generate(seed uint64, faulty bool) Scenario {
	r := rand.New(rand.NewPCG(seed, 0x6d696c6c77726967))
	n := 300 + r.IntN(2701)
	sc := Scenario{Seed: seed, Devices: n}

	weights := func(k int) []float64 {
		w := make([]float64, k)
		for i := range w {
			w[i] = r.ExpFloat64() + 0.05
		}
		return w
	}
	pick := func(w []float64) int {
		var t float64
		for _, x := range w {
			t += x
		}
		u := r.Float64() * t
		for i, x := range w {
			if u < x {
				return i
			}
			u -= x
		}
		return len(w) - 1
	}
	nModels, nFirmware, nOperators, nGroups := 2+r.IntN(4), 3+r.IntN(5), 2+r.IntN(3), 3+r.IntN(6)
	modelW, firmwareW, operatorW, groupW := weights(nModels), weights(nFirmware), weights(nOperators), weights(nGroups)
	home := make([]int, nFirmware) // each firmware's home model
	for i := range home {
		home[i] = r.IntN(nModels)
	}
	// Half the groups are production lines of one model (a group inside a model, the case
	// where naming the model would be too broad); the others mix models.
	groupModel := make([]int, nGroups)
	for i := range groupModel {
		groupModel[i] = -1
		if r.IntN(2) == 0 {
			groupModel[i] = r.IntN(nModels)
		}
	}
	modelMult, opDrop, opDelay := make([]float64, nModels), make([]float64, nOperators), make([]float64, nOperators)
	for i := range modelMult {
		modelMult[i] = 0.5 + 1.5*r.Float64()
	}
	for i := range opDrop {
		opDrop[i] = 0.7 + 0.8*r.Float64()
		opDelay[i] = 0.5 + 2.5*r.Float64()
	}
	devs := make([]simDevice, n)
	for i := range devs {
		m := pick(modelW)
		fw := -1
		if r.Float64() < 0.7 {
			var own []int
			for f, h := range home {
				if h == m {
					own = append(own, f)
				}
			}
			if len(own) > 0 {
				w := make([]float64, len(own))
				for j, f := range own {
					w[j] = firmwareW[f]
				}
				fw = own[pick(w)]
			}
		}
		if fw < 0 {
			fw = pick(firmwareW)
		}
		op := pick(operatorW)
		d := simDevice{
			keys: []Key{
				{"model", fmt.Sprintf("gw-%d00", m+1)},
				{"firmware", fmt.Sprintf("2.%d.0", fw)},
				{"operator", fmt.Sprintf("op-%c", 'a'+op)},
			},
			dropRate:  0.3 * modelMult[m] * opDrop[op] * math.Exp(0.3*r.NormFloat64()),
			delayMean: 0.8 * opDelay[op] * math.Exp(0.2*r.NormFloat64()),
			batches:   15,
		}
		if r.Float64() >= 0.2 {
			w := make([]float64, nGroups)
			any := false
			for g := range w {
				if groupModel[g] < 0 || groupModel[g] == m {
					w[g], any = groupW[g], true
				}
			}
			if any {
				d.keys = append(d.keys, Key{"group", fmt.Sprintf("line-%d", pick(w)+1)})
			}
		}
		devs[i] = d
	}

	// The fault's group: a value of a random dimension holding 2–40 % of the devices.
	members := map[Key][]int{}
	for i, d := range devs {
		for _, k := range d.keys {
			members[k] = append(members[k], i)
		}
	}
	if faulty {
		var eligible []Key
		for k, m := range members {
			if s := float64(len(m)) / float64(n); s >= 0.02 && s <= 0.40 {
				eligible = append(eligible, k)
			}
		}
		if len(eligible) == 0 {
			return Generate(seed+1<<32, faulty)
		}
		slices.SortFunc(eligible, func(a, b Key) int {
			if a.Dimension != b.Dimension {
				return cmp.Compare(a.Dimension, b.Dimension)
			}
			return cmp.Compare(a.Value, b.Value)
		})
		// Dimension first, uniformly, then a value: every dimension is faulted as often.
		var dims []string
		for _, k := range eligible {
			if !slices.Contains(dims, k.Dimension) {
				dims = append(dims, k.Dimension)
			}
		}
		dim := dims[r.IntN(len(dims))]
		var vals []Key
		for _, k := range eligible {
			if k.Dimension == dim {
				vals = append(vals, k)
			}
		}
		key := vals[r.IntN(len(vals))]
		metric := DropsPerDeviceHour
		if r.IntN(2) == 1 {
			metric = IngestDelaySeconds
		}
		sc.Fault = &Fault{
			Metric:     metric,
			Key:        key,
			Factor:     math.Exp(math.Log(1.5) + r.Float64()*(math.Log(10)-math.Log(1.5))),
			GroupShare: float64(len(members[key])) / float64(n),
		}
		for k, m := range members {
			if k != key && slices.Equal(m, members[key]) {
				sc.Equivalent = append(sc.Equivalent, k)
			}
		}
	}

	faultOn := func(d simDevice, m Metric) float64 {
		if sc.Fault == nil || sc.Fault.Metric != m || !slices.Contains(d.keys, sc.Fault.Key) {
			return 1
		}
		return sc.Fault.Factor
	}
	drops := Input{Metric: DropsPerDeviceHour, Slices: map[Key]Series{}}
	delay := Input{Metric: IngestDelaySeconds, Slices: map[Key]Series{}}
	for k, m := range members {
		drops.Slices[k] = Series{Devices: len(m), Baseline: make([]Counts, ScenarioWindows)}
		delay.Slices[k] = Series{Devices: len(m), Baseline: make([]Counts, ScenarioWindows)}
	}
	drops.Fleet = Series{Devices: n, Baseline: make([]Counts, ScenarioWindows)}
	delay.Fleet = Series{Devices: n, Baseline: make([]Counts, ScenarioWindows)}
	// Window ScenarioWindows is the current one.
	for w := 0; w <= ScenarioWindows; w++ {
		weather := 1 + 0.05*r.NormFloat64()
		for _, d := range devs {
			fd, fl := 1.0, 1.0
			if w == ScenarioWindows {
				fd, fl = faultOn(d, DropsPerDeviceHour), faultOn(d, IngestDelaySeconds)
			}
			c := Counts{Num: poisson(r, d.dropRate*scenarioWindowHours*weather*fd), Den: scenarioWindowHours}
			nb := poisson(r, d.batches)
			mean := d.delayMean * weather * fl
			l := Counts{Num: math.Max(0, nb*mean+math.Sqrt(nb)*mean*r.NormFloat64()), Den: nb}
			add := func(in *Input, c Counts) {
				addTo(&in.Fleet, w, c)
				for _, k := range d.keys {
					s := in.Slices[k]
					addTo(&s, w, c)
					in.Slices[k] = s
				}
			}
			add(&drops, c)
			add(&delay, l)
		}
	}
	sc.Inputs = []Input{drops, delay}
	return sc
}

func addTo(s *Series, w int, c Counts) {
	if w == len(s.Baseline) {
		s.Now.Num += c.Num
		s.Now.Den += c.Den
		return
	}
	s.Baseline[w].Num += c.Num
	s.Baseline[w].Den += c.Den
}

// poisson draws from a Poisson distribution of mean l (a normal approximation above 50).
func poisson(r *rand.Rand, l float64) float64 {
	if l <= 0 {
		return 0
	}
	if l > 50 {
		return math.Max(0, math.Round(l+math.Sqrt(l)*r.NormFloat64()))
	}
	limit, k, p := math.Exp(-l), 0.0, r.Float64()
	for p > limit {
		k++
		p *= r.Float64()
	}
	return k
}
