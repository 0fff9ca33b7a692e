package aggregate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// t0 is the start of a minute, so one-minute windows start there.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) float64 { return float64(t0.Add(d).UnixMilli()) / 1000 }

func num(name, unit string, d time.Duration, v float64) protocol.Record {
	return protocol.Record{Name: name, Unit: unit, Time: at(d), Value: &v}
}

type write struct {
	recs  []protocol.Record
	class source.Class
}

// capture is a sink that records what it is given.
type capture struct {
	mu     sync.Mutex
	writes []write
	err    error
}

func (c *capture) Write(_ context.Context, recs []protocol.Record, class source.Class) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.writes = append(c.writes, write{recs, class})
	return nil
}

// take returns and forgets the writes so far.
func (c *capture) take() []write {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// summary is a record reduced to what the tests compare.
type summary struct {
	Name, Unit string
	Time       float64
	Value      any
}

func summarize(recs []protocol.Record) []summary {
	out := make([]summary, len(recs))
	for i, r := range recs {
		s := summary{Name: r.Name, Unit: r.Unit, Time: r.Time}
		switch {
		case r.Value != nil:
			s.Value = *r.Value
		case r.BoolValue != nil:
			s.Value = *r.BoolValue
		case r.StringValue != nil:
			s.Value = *r.StringValue
		}
		out[i] = s
	}
	return out
}

func write1(t *testing.T, a *aggregate.Aggregator, class source.Class, recs ...protocol.Record) {
	t.Helper()
	require.NoError(t, a.Write(context.Background(), recs, class))
}

func TestFunctions(t *testing.T) {
	// Samples of one window, not in time order: "last" goes by time.
	samples := []protocol.Record{
		num("temp", "Cel", 1*time.Second, 3),
		num("temp", "Cel", 30*time.Second, 2),
		num("temp", "Cel", 10*time.Second, 1),
		num("temp", "Cel", 20*time.Second, 5),
	}
	for _, tc := range []struct {
		fn   aggregate.Func
		unit string
		want float64
	}{
		{aggregate.Min, "Cel", 1},
		{aggregate.Max, "Cel", 5},
		{aggregate.Mean, "Cel", 2.75},
		{aggregate.Count, "", 4},
		{aggregate.Last, "Cel", 2},
		{aggregate.Sum, "Cel", 11},
	} {
		t.Run(string(tc.fn), func(t *testing.T) {
			next := &capture{}
			a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "temp", Window: time.Minute, Functions: []aggregate.Func{tc.fn}}}, clock.NewFake(t0))
			write1(t, a, source.ClassRaw, samples...)
			require.Empty(t, next.take(), "samples are held until the window closes")
			// The next sample past the window closes it.
			write1(t, a, source.ClassRaw, num("temp", "Cel", 61*time.Second, 100))
			w := next.take()
			require.Len(t, w, 1)
			require.Equal(t, source.ClassRaw, w[0].class)
			require.Equal(t, []summary{{Name: "temp_" + string(tc.fn), Unit: tc.unit, Time: at(time.Minute), Value: tc.want}}, summarize(w[0].recs))
		})
	}
}

func TestDefaultFunctionsAndRollover(t *testing.T) {
	next := &capture{}
	clk := clock.NewFake(t0)
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "flow", Window: 10 * time.Second}}, clk)
	write1(t, a, source.ClassRaw, num("flow", "m3/s", 1*time.Second, 1), num("flow", "m3/s", 9*time.Second, 3))
	// One call: a passed-through record, and samples in the next two
	// windows, closing the first and then the second.
	write1(t, a, source.ClassRaw,
		num("flow", "m3/s", 12*time.Second, 10),
		num("pressure", "Pa", 12*time.Second, 1e5),
		num("flow", "m3/s", 25*time.Second, 20))
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, []summary{
		{Name: "pressure", Unit: "Pa", Time: at(12 * time.Second), Value: 1e5},
		{Name: "flow_min", Unit: "m3/s", Time: at(10 * time.Second), Value: 1.0},
		{Name: "flow_max", Unit: "m3/s", Time: at(10 * time.Second), Value: 3.0},
		{Name: "flow_mean", Unit: "m3/s", Time: at(10 * time.Second), Value: 2.0},
		{Name: "flow_min", Unit: "m3/s", Time: at(20 * time.Second), Value: 10.0},
		{Name: "flow_max", Unit: "m3/s", Time: at(20 * time.Second), Value: 10.0},
		{Name: "flow_mean", Unit: "m3/s", Time: at(20 * time.Second), Value: 10.0},
	}, summarize(w[0].recs), "passed-through records first, then aggregates in window order")
	st := a.Stats()
	require.Equal(t, uint64(4), st.Folded)
	require.Equal(t, uint64(2), st.Windows)
	require.Equal(t, uint64(6), st.Emitted)
	require.Equal(t, uint64(1), st.Passed)
}

func TestTimerFlushesSilentMetric(t *testing.T) {
	next := &capture{}
	clk := clock.NewFake(t0.Add(5 * time.Second))
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "level", Window: time.Minute, Functions: []aggregate.Func{aggregate.Last}}}, clk)
	write1(t, a, source.ClassRaw, num("level", "m", 5*time.Second, 1.5))
	require.Equal(t, 1, clk.Pending())

	clk.Set(t0.Add(64 * time.Second)) // the window has ended, the grace (6s capped at 5s) not
	require.Empty(t, next.take())
	clk.Set(t0.Add(65 * time.Second))
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, []summary{{Name: "level_last", Unit: "m", Time: at(time.Minute), Value: 1.5}}, summarize(w[0].recs))
	require.Zero(t, clk.Pending(), "no window open, no timer")

	// The series carries on in a later window.
	write1(t, a, source.ClassRaw, num("level", "m", 200*time.Second, 2))
	clk.Advance(time.Hour)
	w = next.take()
	require.Len(t, w, 1)
	require.Equal(t, at(240*time.Second), w[0].recs[0].Time)
}

func TestTimerWaitsAfterLateWrites(t *testing.T) {
	// Back-filled data: the window ended long ago, so the timer waits a
	// grace period after its last sample instead of closing it at once.
	next := &capture{}
	clk := clock.NewFake(t0.Add(time.Hour))
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "x", Window: 10 * time.Second, Functions: []aggregate.Func{aggregate.Count}}}, clk)
	write1(t, a, source.ClassRaw, num("x", "", 1*time.Second, 1))
	clk.Advance(500 * time.Millisecond)
	write1(t, a, source.ClassRaw, num("x", "", 2*time.Second, 1))
	clk.Advance(900 * time.Millisecond)
	require.Empty(t, next.take())
	clk.Advance(100 * time.Millisecond)
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, []summary{{Name: "x_count", Time: at(10 * time.Second), Value: 2.0}}, summarize(w[0].recs))
}

func TestPassThrough(t *testing.T) {
	next := &capture{}
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "*", Window: time.Minute}}, clock.NewFake(t0))
	on, mode := true, "auto"
	sum := 12.5
	v := 1.0
	recs := []protocol.Record{
		{Name: "door", Time: at(time.Second), BoolValue: &on},
		{Name: "mode", Time: at(time.Second), StringValue: &mode},
		{Name: "energy", Unit: "J", Time: at(time.Second), Value: &v, Sum: &sum},
		{Name: "blob", Time: at(time.Second), DataValue: []byte{1}},
	}
	write1(t, a, source.ClassRaw, recs...)
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, recs, w[0].recs, "booleans, strings, sums and data pass through")

	// Events pass through, numeric or not, even when a rule matches.
	ev := []protocol.Record{num("temp_alarm", "Cel", time.Second, 99), {Name: "door", Time: at(time.Second), BoolValue: &on}}
	write1(t, a, source.ClassEvent, ev...)
	w = next.take()
	require.Len(t, w, 1)
	require.Equal(t, source.ClassEvent, w[0].class)
	require.Equal(t, ev, w[0].recs)
	require.Equal(t, uint64(6), a.Stats().Passed)
	require.Zero(t, a.Stats().Folded)

	// Without rules everything passes.
	b := aggregate.Wrap(next, nil, clock.NewFake(t0))
	write1(t, b, source.ClassRaw, num("temp", "Cel", time.Second, 1))
	require.Len(t, next.take(), 1)
}

func TestFirstMatchingRuleWins(t *testing.T) {
	next := &capture{}
	a := aggregate.Wrap(next, []aggregate.Rule{
		{Metric: "line1_*_temp", Window: 10 * time.Second, Functions: []aggregate.Func{aggregate.Max}},
		{Metric: "*", Window: time.Minute, Functions: []aggregate.Func{aggregate.Count}},
	}, clock.NewFake(t0))
	write1(t, a, source.ClassRaw,
		num("line1_oven_temp", "Cel", time.Second, 180),
		num("line1_oven_temp", "K", time.Second, 453), // another unit, another series
		num("line2_oven_temp", "Cel", time.Second, 170))
	require.NoError(t, a.Flush(context.Background()))
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, []summary{
		{Name: "line1_oven_temp_max", Unit: "Cel", Time: at(10 * time.Second), Value: 180.0},
		{Name: "line1_oven_temp_max", Unit: "K", Time: at(10 * time.Second), Value: 453.0},
		{Name: "line2_oven_temp_count", Time: at(time.Minute), Value: 1.0},
	}, summarize(w[0].recs))
}

func TestLateSamplesPassThrough(t *testing.T) {
	next := &capture{}
	clk := clock.NewFake(t0)
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "p", Window: 10 * time.Second, Functions: []aggregate.Func{aggregate.Count}}}, clk)
	write1(t, a, source.ClassRaw, num("p", "", 15*time.Second, 1))
	// Behind the open window.
	write1(t, a, source.ClassRaw, num("p", "", 5*time.Second, 2))
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, []summary{{Name: "p", Time: at(5 * time.Second), Value: 2.0}}, summarize(w[0].recs))
	// In a window already written by Flush.
	require.NoError(t, a.Flush(context.Background()))
	require.Len(t, next.take(), 1)
	write1(t, a, source.ClassRaw, num("p", "", 19*time.Second, 3))
	w = next.take()
	require.Len(t, w, 1)
	require.Equal(t, "p", w[0].recs[0].Name)
	require.Equal(t, uint64(2), a.Stats().Late)
	// The next window is aggregated again.
	write1(t, a, source.ClassRaw, num("p", "", 21*time.Second, 4))
	require.Empty(t, next.take())
}

func TestFlush(t *testing.T) {
	next := &capture{}
	clk := clock.NewFake(t0)
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "*", Window: time.Minute, Functions: []aggregate.Func{aggregate.Mean}}}, clk)
	require.NoError(t, a.Flush(context.Background()))
	require.Empty(t, next.take(), "nothing open, nothing written")
	write1(t, a, source.ClassRaw, num("b", "", 2*time.Second, 4), num("a", "", time.Second, 1), num("a", "", 3*time.Second, 2))
	require.NoError(t, a.Flush(context.Background()))
	w := next.take()
	require.Len(t, w, 1)
	require.Equal(t, []summary{
		{Name: "a_mean", Time: at(time.Minute), Value: 1.5},
		{Name: "b_mean", Time: at(time.Minute), Value: 4.0},
	}, summarize(w[0].recs), "a flushed window carries its end time too")
	require.Zero(t, clk.Pending())
	clk.Advance(time.Hour)
	require.Empty(t, next.take())
}

func TestWriteErrors(t *testing.T) {
	down := errors.New("spool full")
	next := &capture{err: down}
	clk := clock.NewFake(t0)
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "x", Window: 10 * time.Second}}, clk)
	require.NoError(t, a.Write(context.Background(), []protocol.Record{num("x", "", time.Second, 1)}, source.ClassRaw), "folded only")
	require.ErrorIs(t, a.Write(context.Background(), []protocol.Record{num("x", "", 11*time.Second, 1)}, source.ClassRaw), down)
	require.ErrorIs(t, a.Write(context.Background(), []protocol.Record{num("y", "", 11*time.Second, 1)}, source.ClassRaw), down)
	clk.Advance(time.Minute) // the timer's write fails: counted
	require.Equal(t, uint64(1), a.Stats().EmitErrors)
	require.Zero(t, a.Stats().Emitted)
	write1 := func() error {
		return a.Write(context.Background(), []protocol.Record{num("x", "", 100*time.Second, 1)}, source.ClassRaw)
	}
	require.NoError(t, write1())
	require.ErrorIs(t, a.Flush(context.Background()), down)
}

func TestConcurrentWrites(t *testing.T) {
	next := &capture{}
	a := aggregate.Wrap(next, []aggregate.Rule{{Metric: "*", Window: time.Minute, Functions: []aggregate.Func{aggregate.Count, aggregate.Sum}}}, clock.Real())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				_ = a.Write(context.Background(), []protocol.Record{num("c", "", time.Duration(i%50)*time.Second, float64(g))}, source.ClassRaw)
			}
		})
	}
	wg.Wait()
	require.NoError(t, a.Flush(context.Background()))
	var count, sum float64
	for _, w := range next.take() {
		for _, r := range w.recs {
			switch r.Name {
			case "c_count":
				count += *r.Value
			case "c_sum":
				sum += *r.Value
			}
		}
	}
	require.Equal(t, 800.0, count)
	require.Equal(t, 100.0*(0+1+2+3+4+5+6+7), sum)
}

func TestValidateRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule aggregate.Rule
		err  string
	}{
		{"ok", aggregate.Rule{Metric: "line1_*", Window: time.Minute, Functions: []aggregate.Func{aggregate.Min, aggregate.Sum}}, ""},
		{"default functions", aggregate.Rule{Metric: "*", Window: time.Second}, ""},
		{"no metric", aggregate.Rule{Window: time.Minute}, "metric is required"},
		{"bad metric", aggregate.Rule{Metric: "a b", Window: time.Minute}, "cannot be in a SenML name"},
		{"bad first byte", aggregate.Rule{Metric: "_a", Window: time.Minute}, "cannot be in a SenML name"},
		{"no window", aggregate.Rule{Metric: "a"}, "window 0s is below the minimum"},
		{"sub-millisecond window", aggregate.Rule{Metric: "a", Window: time.Second + time.Microsecond}, "whole number of milliseconds"},
		{"unknown function", aggregate.Rule{Metric: "a", Window: time.Minute, Functions: []aggregate.Func{"median"}}, `unknown function "median"`},
		{"repeated function", aggregate.Rule{Metric: "a", Window: time.Minute, Functions: []aggregate.Func{"max", "max"}}, `"max" given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := aggregate.ValidateRules([]aggregate.Rule{tc.rule})
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "rule 0: ")
			require.ErrorContains(t, err, tc.err)
			require.Panics(t, func() { aggregate.Wrap(&capture{}, []aggregate.Rule{tc.rule}, nil) })
		})
	}
}
