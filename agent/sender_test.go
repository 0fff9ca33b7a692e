package agent

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeUplink records what it is sent and answers from a script.
type fakeUplink struct {
	mu      sync.Mutex
	up      bool
	answers []sendResult // consumed in order; then success
	sent    []protocol.Batch
	channel []channelMsg // device channel messages published
	chErr   error        // what publishChannel answers
}

func (f *fakeUplink) publishChannel(_ context.Context, m channelMsg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.chErr != nil {
		return f.chErr
	}
	f.channel = append(f.channel, m)
	return nil
}

// messages returns the channel messages published so far.
func (f *fakeUplink) messages() []channelMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]channelMsg(nil), f.channel...)
}

func (f *fakeUplink) run(ctx context.Context) { <-ctx.Done() }
func (f *fakeUplink) ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up
}

func (f *fakeUplink) send(_ context.Context, payload []byte) sendResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _, err := protocol.Decode(payload, t0, protocol.DefaultLimits())
	if err != nil {
		panic(err)
	}
	f.sent = append(f.sent, b)
	if len(f.answers) == 0 {
		return sendResult{rtt: 50 * time.Millisecond}
	}
	r := f.answers[0]
	f.answers = f.answers[1:]
	return r
}

func (f *fakeUplink) batches() []protocol.Batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]protocol.Batch(nil), f.sent...)
}

// newUnitAgent returns an agent on a fake clock and a fake uplink, with a
// SyncNever spool (readers see records at once, no fsync timer to drive).
func newUnitAgent(t *testing.T, clk *clock.Fake, mutate func(*Config)) (*Agent, *fakeUplink) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.TLS.CertFile = "testdata/certs/pump-7.crt"
	cfg.TLS.KeyFile = "testdata/certs/pump-7.key"
	cfg.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	cfg.Spool.Sync = spool.SyncNever
	cfg.Schedule.Interval = 10 * time.Second
	cfg.Schedule.Jitter = 5 * time.Second
	cfg.Batch.MaxRecords = 10
	cfg.Batch.MinWindow = 2 * time.Second
	cfg.Batch.MaxWindow = 32 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	r := rand.New(rand.NewPCG(1, 2))
	a, err := New(cfg, Options{Clock: clk, Rand: r.Int64N})
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	up := &fakeUplink{up: true}
	a.up = up
	return a, up
}

// writeN stores n measurements "m" with values from, from+1, … at the
// clock's time.
func writeN(t *testing.T, a *Agent, clk clock.Clock, from, n int) {
	t.Helper()
	recs := make([]protocol.Record, n)
	for i := range recs {
		v := float64(from + i)
		recs[i] = protocol.Record{Name: "m", Unit: "Cel", Time: float64(clk.Now().UnixMilli())/1000 + float64(i)/1000, Value: &v}
	}
	require.NoError(t, a.Sink().Write(context.Background(), recs, source.ClassRaw))
}

func values(bs []protocol.Batch) []float64 {
	var out []float64
	for _, b := range bs {
		for _, m := range b.Measurements {
			out = append(out, m.Value)
		}
	}
	return out
}

func seqs(bs []protocol.Batch) []uint64 {
	var out []uint64
	for _, b := range bs {
		out = append(out, b.Seq)
	}
	return out
}

func TestCycleSendsDueBatchesWithSequenceNumbers(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, nil)
	ctx := context.Background()

	writeN(t, a, clk, 0, 25)
	// 25 records, 10 per batch: two full batches go at once; the partial
	// third waits for its window (2 s).
	res := a.cycle(ctx, false)
	require.Equal(t, 2, res.sent)
	require.False(t, res.Backlog)
	require.Equal(t, []uint64{1, 2}, seqs(up.batches()))

	clk.Advance(2 * time.Second)
	res = a.cycle(ctx, false)
	require.Equal(t, 1, res.sent)
	bs := up.batches()
	require.Equal(t, []uint64{1, 2, 3}, seqs(bs))
	require.Len(t, values(bs), 25)
	for i, v := range values(bs) {
		require.Equal(t, float64(i), v)
	}
	// Everything acknowledged.
	require.Zero(t, a.Stats().Spool.Records)
	require.Equal(t, uint64(4), a.Stats().Seq)
	require.Equal(t, uint64(25), a.Stats().RecordsSent)
}

func TestCyclePacing(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, func(c *Config) { c.Schedule.MaxBatchesPerCycle = 3 })
	writeN(t, a, clk, 0, 95) // a backlog of 10 batches
	res := a.cycle(context.Background(), false)
	require.Equal(t, 3, res.sent, "a cycle sends at most max_batches_per_cycle")
	require.True(t, res.Backlog)
	require.Len(t, up.batches(), 3)
	require.Equal(t, uint64(65), a.Stats().Spool.Records)
}

func TestCycleRetryKeepsBatchAndNumber(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, nil)
	writeN(t, a, clk, 0, 10)
	up.answers = []sendResult{
		{reason: protocol.ReasonBusy},                        // PUBACK 0x97
		{err: errors.New("connection lost")},                 // no answer
		{reason: protocol.ReasonBusy, retryAfter: time.Hour}, // HTTP 429 Retry-After
	}
	for range 3 {
		a.cycle(context.Background(), false)
		writeN(t, a, clk, 100, 1) // new data meanwhile
	}
	clk.Advance(2 * time.Second) // the new data's window elapses
	res := a.cycle(context.Background(), false)
	require.Equal(t, 2, res.sent, "the retried batch, then the new data")
	bs := up.batches()
	// The same batch, with the same number and content, four times.
	require.Equal(t, []uint64{1, 1, 1, 1, 2}, seqs(bs))
	for i := 1; i < 4; i++ {
		require.Equal(t, bs[0], bs[i])
	}
	require.Equal(t, uint64(2), a.Stats().RefusedForRetry)
}

func TestCycleDropsRefusedBatch(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, nil)
	writeN(t, a, clk, 0, 20)
	up.answers = []sendResult{{reason: protocol.ReasonTooOld}}
	res := a.cycle(context.Background(), false)
	require.Equal(t, 1, res.sent)
	st := a.Stats()
	require.Equal(t, uint64(10), st.Dropped["too_old"], "a batch refused for good is dropped and counted")
	require.Zero(t, st.Spool.Records)
	require.Equal(t, []uint64{1, 2}, seqs(up.batches()))
}

func TestCycleNotConnected(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, nil)
	up.up = false
	writeN(t, a, clk, 0, 20)
	res := a.cycle(context.Background(), false)
	require.False(t, res.Attempted)
	require.Empty(t, up.batches())
	require.Equal(t, uint64(20), a.Stats().Spool.Records)
}

func TestCycleEventsSkipTheWindow(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, nil)
	writeN(t, a, clk, 0, 3)
	require.Zero(t, a.cycle(context.Background(), false).sent, "a young partial batch waits")
	s := "door open"
	require.NoError(t, a.Sink().Write(context.Background(), []protocol.Record{{Name: "alarm", StringValue: &s, Time: float64(t0.Unix())}}, source.ClassEvent))
	require.Equal(t, 1, a.cycle(context.Background(), false).sent, "an event makes the batch due")
	require.Len(t, up.batches()[0].Measurements, 4)
}

func TestAfterCycleBackoff(t *testing.T) {
	clk := clock.NewFake(t0)
	a, _ := newUnitAgent(t, clk, func(c *Config) {
		c.Uplink.Backoff.Base = 4 * time.Second
		c.Uplink.Backoff.Cap = 64 * time.Second
	})
	a.up = &mqttUplink{} // a persistent link: transport errors are the connection's business
	for range 20 {
		w := a.afterCycle(cycleResult{CycleOutcome: CycleOutcome{Attempted: true}, sent: 1})
		require.GreaterOrEqual(t, w, 10*time.Second)
		require.Less(t, w, 15*time.Second)
	}
	// Consecutive refusals add a growing full-jitter term.
	var maxExtra [6]time.Duration
	for range 200 {
		a.retries.Reset()
		for i := range maxExtra {
			w := a.afterCycle(cycleResult{CycleOutcome: CycleOutcome{Attempted: true, Backlog: true}, refused: true})
			extra := w - 15*time.Second
			window := min(64*time.Second, 4*time.Second<<i)
			require.Less(t, w, 15*time.Second+window)
			maxExtra[i] = max(maxExtra[i], extra)
		}
	}
	require.Greater(t, maxExtra[5], 40*time.Second, "the window reached the cap")
	// Retry-After is a floor.
	w := a.afterCycle(cycleResult{CycleOutcome: CycleOutcome{Attempted: true}, refused: true, retryAfter: 10 * time.Minute})
	require.Equal(t, 10*time.Minute, w)
	// A cycle that delivers resets the backoff.
	a.afterCycle(cycleResult{CycleOutcome: CycleOutcome{Attempted: true}, sent: 1})
	require.Zero(t, a.retries.Failures())
}

func TestSourcesAndAggregationWired(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, func(c *Config) {
		c.Sources.System = &source.SystemOptions{Interval: time.Minute}
		c.Sources.Exec = []source.ExecOptions{{Name: "probe", Command: "true"}}
		c.Sources.LocalAPI = &source.LocalAPIOptions{Listen: "127.0.0.1:0"}
		c.Sources.Aggregate = []aggregate.Rule{{Metric: "m", Window: 10 * time.Second, Functions: []aggregate.Func{aggregate.Mean, aggregate.Count}}}
	})
	var names []string
	for _, s := range a.sources {
		names = append(names, s.Name())
	}
	require.Equal(t, "system", a.system.Name())
	require.Equal(t, []string{"probe", "local_api"}, names)

	writeN(t, a, clk, 0, 5) // values 0..4 within one 10 s window: folded, not stored
	require.Zero(t, a.Stats().Spool.Records)
	require.NoError(t, a.stage.current().Flush(context.Background()))
	clk.Advance(time.Minute)
	require.Equal(t, 1, a.cycle(context.Background(), false).sent)
	got := map[string]float64{}
	for _, m := range up.batches()[0].Measurements {
		got[m.Name] = m.Value
	}
	require.Equal(t, map[string]float64{"m_mean": 2, "m_count": 5}, got)
}

// TestFlush: a flush sends the whole spool at once — young partial batches
// included, past the per-cycle budget — and the schedule then resumes.
func TestFlush(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, func(c *Config) {
		c.Schedule.Interval = time.Hour
		c.Schedule.MaxBatchesPerCycle = 2
	})
	writeN(t, a, clk, 0, 35) // 4 batches of at most 10: past the budget of 2, the last one partial
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.sendLoop(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	clk.BlockUntil(1) // the loop waits for its first cycle, up to an hour away
	require.Empty(t, up.batches())
	a.Flush()
	require.Eventually(t, func() bool { return a.Stats().Spool.Records == 0 }, 10*time.Second, time.Millisecond)
	require.Len(t, up.batches(), 4)
	require.Len(t, values(up.batches()), 35)
	clk.BlockUntil(1) // back on the schedule
	writeN(t, a, clk, 100, 3)
	clk.Advance(time.Minute)
	require.Len(t, up.batches(), 4, "without a flush the next cycle waits for the schedule")
}
