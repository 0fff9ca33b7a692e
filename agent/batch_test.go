package agent

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// TestWindowRule walks the dynamic window through backlog, a slow link and
// idle cycles on a fake clock, checking the rule documented in
// docs/agent.md: double on backlog or slow acks (from at least 1 s, up to
// max), halve when idle (down to min), stay when the server was not reached.
func TestWindowRule(t *testing.T) {
	w := NewWindow(BatchConfig{MinWindow: 2 * time.Second, MaxWindow: 20 * time.Second, SlowLink: time.Second})
	fast := 100 * time.Millisecond
	steps := []struct {
		o    CycleOutcome
		want time.Duration
	}{
		{CycleOutcome{Attempted: true, MaxRTT: fast}, 2 * time.Second},                 // idle at min
		{CycleOutcome{Attempted: true, Backlog: true, MaxRTT: fast}, 4 * time.Second},  // backlog
		{CycleOutcome{Attempted: true, Backlog: true, MaxRTT: fast}, 8 * time.Second},  //
		{CycleOutcome{Attempted: true, MaxRTT: 3 * time.Second}, 16 * time.Second},     // slow link
		{CycleOutcome{Attempted: true, Backlog: true, MaxRTT: fast}, 20 * time.Second}, // capped
		{CycleOutcome{Attempted: false}, 20 * time.Second},                             // offline: unchanged
		{CycleOutcome{Attempted: true, MaxRTT: fast}, 10 * time.Second},                // idle: halves
		{CycleOutcome{Attempted: true, MaxRTT: fast}, 5 * time.Second},
		{CycleOutcome{Attempted: true, MaxRTT: fast}, 2500 * time.Millisecond},
		{CycleOutcome{Attempted: true, MaxRTT: fast}, 2 * time.Second}, // floored at min
	}
	for i, s := range steps {
		w.Adapt(s.o)
		require.Equal(t, s.want, w.Current(), "step %d", i)
	}

	// From a zero minimum, growth starts at 1 s and shrinking below 1 s
	// returns to 0.
	z := NewWindow(BatchConfig{MinWindow: 0, MaxWindow: time.Minute, SlowLink: time.Second})
	z.Adapt(CycleOutcome{Attempted: true, Backlog: true})
	require.Equal(t, time.Second, z.Current())
	z.Adapt(CycleOutcome{Attempted: true})
	require.Zero(t, z.Current())
}

func TestWindowDue(t *testing.T) {
	clk := clock.NewFake(t0)
	sp, err := spool.Open(t.TempDir(), spool.Options{Sync: spool.SyncNever, Clock: clk})
	require.NoError(t, err)
	defer sp.Close()
	_, err = sp.Append(spool.ClassRaw, []byte("a"))
	require.NoError(t, err)
	clk.Advance(time.Second)
	_, err = sp.Append(spool.ClassRaw, []byte("b"))
	require.NoError(t, err)
	recs, err := sp.Peek(0, 0)
	require.NoError(t, err)

	w := NewWindow(BatchConfig{MinWindow: 5 * time.Second, MaxWindow: time.Minute, SlowLink: time.Second})
	require.False(t, w.Due(nil, true, clk.Now()))
	require.True(t, w.Due(recs, true, clk.Now()), "a full batch is due at once")
	require.False(t, w.Due(recs, false, clk.Now()), "the oldest record is 1 s old, the window 5 s")
	clk.Advance(4 * time.Second)
	require.True(t, w.Due(recs, false, clk.Now()), "the oldest record is one window old")
	require.True(t, w.Due(recs, false, t0.Add(-time.Hour)), "the clock went back an hour: not held for an hour")
}

func TestScheduleScatter(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	s := NewSchedule(ScheduleConfig{Interval: 45 * time.Second, Jitter: 30 * time.Second}, r.Int64N)
	const n = 200_000
	var sum time.Duration
	lo, hi := time.Hour, time.Duration(0)
	for range n {
		d := s.Next()
		lo, hi = min(lo, d), max(hi, d)
		sum += d
	}
	require.GreaterOrEqual(t, lo, 45*time.Second)
	require.Less(t, hi, 75*time.Second)
	require.InDelta(t, 60, (sum / n).Seconds(), 0.2)

	// First send: the stationary distribution over [0, 75 s). Its density is
	// flat (1/60 per second) on [0, 45 s) and falls linearly to 0 at 75 s.
	var bins [15]int // 5 s bins
	for range n {
		d := s.First()
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, 75*time.Second)
		bins[int(d/(5*time.Second))]++
	}
	for i, c := range bins {
		mid := float64(i)*5 + 2.5
		density := 1.0 / 60
		if mid > 45 {
			density = (75 - mid) / 30 / 60
		}
		want := density * 5 * n
		require.InDelta(t, want, float64(c), 4*math.Sqrt(want)+10, "bin %d", i)
	}

	imm := NewSchedule(ScheduleConfig{Interval: time.Second, FirstSend: FirstSendImmediate}, r.Int64N)
	require.Zero(t, imm.First())
	require.Equal(t, time.Second, imm.Next(), "no jitter: the interval exactly")
}

func TestBuildBatchRoundTrip(t *testing.T) {
	clk := clock.NewFake(t0)
	sp, err := spool.Open(t.TempDir(), spool.Options{Sync: spool.SyncNever, Clock: clk})
	require.NoError(t, err)
	defer sp.Close()
	sink := &spoolSink{sp: sp, clk: clk}
	base := float64(t0.UnixMilli()) / 1000
	var want []protocol.Measurement
	var recs []protocol.Record
	for i := range 100 {
		v := 20 + float64(i%7)/10
		recs = append(recs, protocol.Record{Name: "temp", Unit: "Cel", Time: base + float64(i)*0.25, Value: &v})
		want = append(want, protocol.Measurement{Name: "temp", Unit: "Cel", Time: t0.UnixMilli() + int64(i)*250, HasValue: true, Value: v})
	}
	s, b := "open", true
	recs = append(recs,
		protocol.Record{Name: "door", Time: base + 30, StringValue: &s},
		protocol.Record{Name: "run", Time: -1, BoolValue: &b}, // relative: one second before now
	)
	want = append(want,
		protocol.Measurement{Name: "door", Time: t0.UnixMilli() + 30000, Kind: protocol.KindString, HasValue: true, String: "open"},
		protocol.Measurement{Name: "run", Time: t0.UnixMilli() - 1000, Kind: protocol.KindBool, HasValue: true, Value: 1},
	)
	require.NoError(t, sink.Write(context.Background(), recs, source.ClassRaw))

	stored, err := sp.Peek(0, 0)
	require.NoError(t, err)
	// A foreign record in the spool is left out, counted, and acknowledged.
	_, err = sp.Append(spool.ClassRaw, []byte("garbage"))
	require.NoError(t, err)
	stored2, err := sp.Peek(0, 0)
	require.NoError(t, err)

	for _, in := range [][]spool.Record{stored, stored2} {
		b, err := buildBatch(in, 42, clk.Now())
		require.NoError(t, err)
		got, enc, err := protocol.Decode(b.payload, clk.Now().Add(time.Hour), protocol.DefaultLimits())
		require.NoError(t, err)
		require.Equal(t, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true}, enc)
		require.True(t, got.HasSeq)
		require.Equal(t, uint64(42), got.Seq)
		require.Equal(t, want, got.Measurements)
		require.Len(t, b.ids, len(in))
		require.Equal(t, len(in)-len(want), b.bad)
	}
}

func TestSinkRefusesInvalid(t *testing.T) {
	clk := clock.NewFake(t0)
	sp, err := spool.Open(t.TempDir(), spool.Options{Sync: spool.SyncNever, Clock: clk})
	require.NoError(t, err)
	defer sp.Close()
	sink := &spoolSink{sp: sp, clk: clk}
	v, nan := 1.0, math.NaN()
	for _, bad := range []protocol.Record{
		{Name: "bad name!", Value: &v},
		{Name: "novalue"},
		{Name: "nan", Value: &nan},
		{Value: &v},
	} {
		err := sink.Write(context.Background(), []protocol.Record{{Name: "ok", Value: &v}, bad}, source.ClassRaw)
		require.ErrorIs(t, err, ErrInvalidMeasurement)
		require.Contains(t, err.Error(), "measurement 1")
	}
	require.Zero(t, sp.Stats().Records, "nothing of a refused write is stored")
}

func TestSeqCounter(t *testing.T) {
	dir := t.TempDir()
	s, err := openSeq(dir)
	require.NoError(t, err)
	require.Equal(t, uint64(1), s.current())
	for n := uint64(1); n <= 5; n++ {
		require.NoError(t, s.done(n))
	}
	require.NoError(t, s.done(3)) // an older number changes nothing
	require.Equal(t, uint64(6), s.current())
	require.NoError(t, s.close())

	s, err = openSeq(dir)
	require.NoError(t, err)
	require.Equal(t, uint64(6), s.current())
	require.NoError(t, s.done(6))
	require.NoError(t, s.close())

	// A torn write of the newest slot falls back to the other one.
	path := filepath.Join(dir, SeqFile)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, b, 2*seqSlotSize)
	// 7 was written last, into slot 1 (6 went to slot 0).
	b[seqSlotSize+2] ^= 0xff
	require.NoError(t, os.WriteFile(path, b, 0o644))
	s, err = openSeq(dir)
	require.NoError(t, err)
	require.Equal(t, uint64(6), s.current(), "the number is reused, never skipped")
	require.NoError(t, s.close())
}
