package main

import (
	"math/rand/v2"
	"time"

	"github.com/millwright/millwright/protocol"
)

// generator makes realistic readings of one industrial device: ten metrics — three drifting
// temperatures, vibration, current, voltage, pressure and flow (random walks at the sensor's
// 0.01 resolution), a cycle counter and a machine state that changes now and then — sampled
// every step. Batches hold whole sampling steps, all ten metrics each, with a base time and
// small relative times, the way the agent sends them.
type generator struct {
	device int
	step   time.Duration
	t      time.Time
	vals   []float64
	rng    *rand.Rand
	pack   protocol.Pack
}

// readings is one device's stream of measurements.
type readings interface {
	// nextPack returns the next n measurements as a resolved pack (a slice the next call may
	// reuse).
	nextPack(n int) protocol.Pack
}

var (
	_ readings = (*generator)(nil)
	_ readings = (*plantGenerator)(nil)
)

// randomWalk and plantMix make the readings of device d, sampled every step from start.
func randomWalk(d int, start time.Time, step time.Duration) readings {
	return newGenerator(d, start, step)
}
func plantMix(d int, start time.Time, step time.Duration) readings {
	return newPlantGenerator(d, start, step, false)
}

// plantMixOnTicks is plantMix with every time exactly on the sampling schedule (the same
// values; no scheduling delay).
func plantMixOnTicks(d int, start time.Time, step time.Duration) readings {
	return newPlantGenerator(d, start, step, true)
}

var metricNames = []string{"temp_motor", "temp_bearing", "temp_ambient", "vibration_rms", "current", "voltage", "pressure", "flow", "cycles_total", "state"}

func newGenerator(device int, start time.Time, step time.Duration) *generator {
	g := &generator{device: device, step: step, t: start.Truncate(time.Second),
		vals: make([]float64, len(metricNames)), rng: rand.New(rand.NewPCG(uint64(device), 7))}
	for i := range g.vals {
		g.vals[i] = 20 + float64(i)*10
	}
	return g
}

// nextPack returns the next n measurements (a slice reused by the next call).
func (g *generator) nextPack(n int) protocol.Pack {
	per := len(metricNames)
	g.pack = g.pack[:0]
	bt := float64(g.t.UnixMilli()) / 1000
	s := 0
	for len(g.pack) < n {
		m := len(g.pack) % per
		if m == 0 && len(g.pack) > 0 {
			s++
		}
		switch metricNames[m] {
		case "cycles_total":
			g.vals[m]++
		case "state":
			if g.rng.IntN(50) == 0 {
				g.vals[m] = float64(g.rng.IntN(3))
			}
		default:
			g.vals[m] = float64(int((g.vals[m]+g.rng.NormFloat64()*0.05)*100)) / 100
		}
		v := g.vals[m]
		r := protocol.Record{Name: metricNames[m], Value: &v, Time: float64(s) * g.step.Seconds()}
		if len(g.pack) == 0 {
			r.BaseTime = bt
		}
		g.pack = append(g.pack, r)
	}
	g.t = g.t.Add(time.Duration(s+1) * g.step)
	return g.pack
}

// encode encodes the next n measurements of r.
func encode(r readings, n int, enc protocol.Encoding) []byte {
	b, err := protocol.Encode(r.nextPack(n), enc)
	if err != nil {
		panic(err)
	}
	return b
}

// compact encodes the next n measurements of r as the device agent does (compact SenML CBOR,
// zstd), as batch number seq.
func compact(r readings, n int, seq uint64) []byte {
	b, err := protocol.Resolve(r.nextPack(n), time.Now())
	if err != nil {
		panic(err)
	}
	b.Seq, b.HasSeq = seq, true
	p, err := protocol.EncodeCompact(b, true)
	if err != nil {
		panic(err)
	}
	return p
}

var (
	encCBORZstd = protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true}
	encCBOR     = protocol.Encoding{Format: protocol.FormatCBOR}
	encJSON     = protocol.Encoding{Format: protocol.FormatJSON}
)

// singles splits the next n measurements of r into one SenML JSON message each, every one with
// its absolute time: the way a device without batching publishes.
func singles(r readings, n int) [][]byte {
	pack := r.nextPack(n)
	bt := pack[0].BaseTime
	out := make([][]byte, len(pack))
	for i, rec := range pack {
		rec.BaseTime = 0
		rec.Time += bt
		b, err := protocol.Encode(protocol.Pack{rec}, encJSON)
		if err != nil {
			panic(err)
		}
		out[i] = b
	}
	return out
}
