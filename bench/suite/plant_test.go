package main

import (
	"math"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

func TestPlantGenerator(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const step = 10 * time.Second
	g := newPlantGenerator(1, start, step, false)
	n := len(plantSignals)

	// Batches end where n ends; the next one goes on with the same sampling instant.
	a := g.nextBatch(n + 3)
	require.Len(t, a, n+3)
	first := a[0].Time
	require.GreaterOrEqual(t, first, start.UnixMilli())
	require.Less(t, first, start.Add(step).UnixMilli()+3, "the schedule starts within the first step")
	for i, s := range plantSignals {
		require.Equal(t, s.name, a[i].Name)
		require.Equal(t, s.unit, a[i].Unit)
		require.Equal(t, first, a[i].Time, "signals of an instant share its time")
	}
	second := a[n].Time
	require.Equal(t, plantSignals[0].name, a[n].Name)
	b := g.nextBatch(n)
	require.Equal(t, plantSignals[3].name, b[0].Name, "the next batch goes on where this one ended")
	require.Equal(t, second, b[0].Time)
	require.Equal(t, plantSignals[2].name, b[n-1].Name)
	require.NotEqual(t, second, b[n-1].Time, "and into the next instant")

	// Same device, same data; another device, other data.
	x := newPlantGenerator(3, start, step, false).nextPack(200)
	y := newPlantGenerator(3, start, step, false).nextPack(200)
	require.Equal(t, x, y)
	require.NotEqual(t, x, newPlantGenerator(4, start, step, false).nextPack(200))

	// A day of one device: every value at its sensor's resolution, times on the schedule at
	// most 2 ms late, counters never falling, the state a known one.
	g = newPlantGenerator(5, start, step, false)
	st := newSampleStats()
	day := int(24*time.Hour/step) * n
	sched := g.start
	last := map[string]float64{}
	states := map[float64]int{}
	for done := 0; done < day; done += 100 {
		p := g.nextPack(100)
		st.observe(p)
		for i, r := range p {
			m := (done + i) % n
			s := plantSignals[m]
			v := *r.Value
			ms := int64(math.Round(r.Time * 1000))
			late := (ms - sched) % step.Milliseconds()
			require.True(t, late >= 0 && late <= 2, "%s at %d: %d ms late", s.name, ms, late)
			switch s.kind {
			case plantChoice:
				require.Contains(t, s.choices, v, s.name)
			case plantState:
				require.Contains(t, []float64{stateStopped, stateRunning, stateFault}, v)
				states[v]++
			default:
				// The shortest decimal of the value has at most the signal's decimals.
				str := strconv.FormatFloat(v, 'f', -1, 64)
				require.Equal(t, str, strconv.FormatFloat(v, 'f', s.decimals, 64)[:len(str)], "%s = %s at resolution 1e-%d", s.name, str, s.decimals)
			}
			if s.kind == plantCounter {
				require.GreaterOrEqual(t, v, last[s.name], s.name)
			}
			if s.kind == plantStep && last[s.name] != 0 {
				step := 1 / pow10[s.decimals]
				require.InDelta(t, last[s.name], v, step*1.0001, "%s moves one step at a time", s.name)
			}
			last[s.name] = v
		}
	}
	require.Greater(t, states[stateRunning], states[stateStopped], "the machine runs most of the time")

	// The shares follow the parameters: a step signal changes about once per period, a noisy
	// one in nearly every sample while running, the whole mix in well under half its samples.
	perDay := float64(24*time.Hour) / float64(step)
	require.InDelta(t, float64(step)/float64(2*time.Minute), st.changedShare("motor_temp"), 0.02)
	require.InDelta(t, float64(step)/float64(30*time.Second), st.changedShare("discharge_pressure"), 0.03)
	require.Greater(t, st.changedShare("motor_current"), 0.5)
	require.Less(t, st.changedShare("speed_setpoint"), 20/perDay)
	share := st.changedShare()
	require.Greater(t, share, 0.1)
	require.Less(t, share, 0.5)
	require.Greater(t, st.irregularShare(), 0.5, "0–2 ms late: most intervals differ from the one before")

	// On ticks: the same values, every interval the same.
	g1 := newPlantGenerator(6, start, step, false)
	g2 := newPlantGenerator(6, start, step, true)
	st2 := newSampleStats()
	for range 100 {
		p1, p2 := g1.nextBatch(100), g2.nextBatch(100)
		for i := range p1 {
			require.Equal(t, p1[i].Value, p2[i].Value)
			require.LessOrEqual(t, p1[i].Time-p2[i].Time, int64(2))
		}
		st2.observe(protocol.Batch{Measurements: p2}.Pack())
	}
	require.Zero(t, st2.irregularShare())
}

func TestSampleStats(t *testing.T) {
	v := func(f float64) *float64 { return &f }
	st := newSampleStats()
	// a: 1, 1, 2, 2 at 0, 10, 20, 31 s; b: 5, 6 at 0 and 10 s (base time and relative times).
	st.observe(protocol.Pack{
		{BaseTime: 1e9, Name: "a", Value: v(1)}, {Name: "b", Value: v(5)},
		{Name: "a", Time: 10, Value: v(1)}, {Name: "b", Time: 10, Value: v(6)},
		{Name: "a", Time: 20, Value: v(2)},
	})
	st.observe(protocol.Pack{{Name: "a", Time: 1e9 + 31, Value: v(2)}})
	require.Equal(t, 1.0/3, st.changedShare("a"), "a changed once in 3")
	require.Equal(t, 1.0, st.changedShare("b"))
	require.Equal(t, 0.5, st.changedShare(), "2 changes in 4 samples that had one before")
	require.Equal(t, 0.5, st.irregularShare(), "a: 10, 10, 11 s; b: one interval")

	all := newSampleStats()
	all.add(st)
	all.add(st)
	require.Equal(t, st.changedShare(), all.changedShare())
	require.Equal(t, int64(8), all.series["a"].samples)
}

func TestPlantEncodings(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	want := slices.Clone(newPlantGenerator(2, start, 10*time.Second, false).nextBatch(100))

	// The agent's encoding decodes to the same measurements, in the same order within each
	// series, with the batch's number.
	p := compact(newPlantGenerator(2, start, 10*time.Second, false), 100, 7)
	got, enc, err := protocol.Decode(p, time.Now(), protocol.DefaultLimits())
	require.NoError(t, err)
	require.True(t, enc.Compressed)
	require.True(t, got.HasSeq)
	require.Equal(t, uint64(7), got.Seq)
	require.ElementsMatch(t, want, got.Measurements)

	// One JSON message per measurement, each with its absolute time.
	msgs := singles(newPlantGenerator(2, start, 10*time.Second, false), 100)
	require.Len(t, msgs, 100)
	for i, m := range msgs {
		d, _, err := protocol.Decode(m, time.Now(), protocol.DefaultLimits())
		require.NoError(t, err)
		require.Equal(t, []protocol.Measurement{want[i]}, d.Measurements)
	}
}
