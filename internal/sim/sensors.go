package sim

import (
	"context"
	"math"
	"math/rand/v2"
	"time"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// metricKind is the shape of a simulated sensor's values.
type metricKind uint8

const (
	// drift: a temperature-like value wandering around its device's mean and pulled back to it
	// (an Ornstein–Uhlenbeck process with a ten-minute relaxation time).
	drift metricKind = iota
	// vibration: a noisy RMS level while the machine runs, near zero while it stands, with
	// occasional spikes.
	vibration
	// counter: a count that only grows, while the machine runs.
	counter
	// state: a machine state, 0 stopped, 1 running, 2 fault, changing now and then.
	state
)

// metricSpec is one simulated metric.
type metricSpec struct {
	name, unit string
	kind       metricKind
	// mean and spread: the long-run mean and standard deviation (drift, vibration); for a
	// counter, mean is the rate per second while running.
	mean, spread float64
	// resolution rounds values, as a real sensor's ADC does (0: none).
	resolution float64
}

// metricSets are the named metric sets of profiles.
var metricSets = map[string][]metricSpec{
	MetricsMachine: {
		{name: "motor_temperature", unit: "Cel", kind: drift, mean: 55, spread: 6, resolution: 0.1},
		{name: "ambient_temperature", unit: "Cel", kind: drift, mean: 22, spread: 2, resolution: 0.1},
		{name: "vibration_rms", unit: "m/s2", kind: vibration, mean: 2.5, spread: 0.3, resolution: 0.01},
		{name: "parts_produced_total", kind: counter, mean: 0.5},
		{name: "machine_state", kind: state},
	},
	MetricsEnvironment: {
		{name: "ambient_temperature", unit: "Cel", kind: drift, mean: 21, spread: 3, resolution: 0.1},
		{name: "relative_humidity", unit: "%RH", kind: drift, mean: 45, spread: 8, resolution: 0.5},
		{name: "air_pressure", unit: "Pa", kind: drift, mean: 101325, spread: 600, resolution: 10},
	},
	MetricsIdle: nil,
}

const relaxation = 600.0 // seconds: how fast a drifting value returns to its mean

// sensors samples one device's metrics every interval.
type sensors struct {
	clk   clock.Clock
	every time.Duration
	phase time.Duration // first sample after start
	specs []metricSpec
	rnd   *rand.Rand
	stop  <-chan struct{} // closed when sampling ends (the simulation drains)

	values  []float64 // current value per spec
	means   []float64 // this device's own mean per drift spec
	machine float64   // current state: 0 stopped, 1 running, 2 fault
	last    time.Time
}

var _ source.Source = (*sensors)(nil)

func newSensors(clk clock.Clock, every time.Duration, specs []metricSpec, rnd *rand.Rand, stop <-chan struct{}) *sensors {
	s := &sensors{clk: clk, every: every, specs: specs, rnd: rnd, stop: stop, machine: 1,
		values: make([]float64, len(specs)), means: make([]float64, len(specs))}
	s.phase = time.Duration(rnd.Int64N(int64(every)))
	for i, m := range specs {
		switch m.kind {
		case drift:
			// Devices differ: each has its own mean, and starts somewhere around it.
			s.means[i] = m.mean + rnd.NormFloat64()*m.spread/2
			s.values[i] = s.means[i] + rnd.NormFloat64()*m.spread
		case counter:
			s.values[i] = float64(rnd.IntN(100000))
		}
	}
	return s
}

func (s *sensors) Name() string { return "sim" }

// Run samples until ctx ends or sampling stops. Sample times stay on the device's grid
// (start + phase + k·every), however late a timer fires.
func (s *sensors) Run(ctx context.Context, sink source.Sink) error {
	next := s.clk.Now().Add(s.phase)
	for {
		t := s.clk.NewTimer(next.Sub(s.clk.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.stop:
			t.Stop()
			return nil
		case <-t.C():
		}
		if err := sink.Write(ctx, s.sample(next), source.ClassRaw); err != nil && ctx.Err() != nil {
			return nil
		}
		next = next.Add(s.every)
	}
}

// sample advances every metric to now and returns one record per metric.
func (s *sensors) sample(now time.Time) []protocol.Record {
	dt := s.every.Seconds()
	if !s.last.IsZero() {
		dt = now.Sub(s.last).Seconds()
	}
	s.last = now
	// The machine state changes first: the other metrics follow it.
	switch r := s.rnd.Float64(); {
	case s.machine == 1 && r < dt/3600: // a fault about once an hour of running
		s.machine = 2
	case s.machine == 1 && r < dt/1800: // a stop about once an hour of running, too
		s.machine = 0
	case s.machine != 1 && r < dt/120: // back to running within minutes
		s.machine = 1
	}
	t := float64(now.UnixMilli()) / 1000
	recs := make([]protocol.Record, len(s.specs))
	for i, m := range s.specs {
		v := s.values[i]
		switch m.kind {
		case drift:
			mean := s.means[i]
			if m.unit == "Cel" && m.mean > 40 && s.machine != 1 {
				mean = m.mean - 2*m.spread // a motor cools while it stands
			}
			theta := 1 / relaxation
			sigma := m.spread * math.Sqrt(2*theta)
			v += theta*(mean-v)*dt + sigma*math.Sqrt(dt)*s.rnd.NormFloat64()
		case vibration:
			if s.machine == 1 {
				v = m.mean + m.spread*s.rnd.NormFloat64()
				if s.rnd.Float64() < 0.01 {
					v *= 2 + s.rnd.Float64()
				}
			} else {
				v = 0.05 * s.rnd.Float64()
			}
			v = math.Abs(v)
		case counter:
			if s.machine == 1 {
				v += math.Round(m.mean * dt * 2 * s.rnd.Float64())
			}
		case state:
			v = s.machine
		}
		s.values[i] = v
		if m.resolution > 0 {
			v = math.Round(v/m.resolution) * m.resolution
			v = math.Round(v*1e6) / 1e6 // no 21.400000000000002
		}
		recs[i] = protocol.Record{Name: m.name, Unit: m.unit, Time: t, Value: &v}
	}
	return recs
}
