package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/lifecycle"
)

// journal records what the parts did, in order.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, fmt.Sprintf(format, args...))
}

// get returns the events so far. A part's Run is told to end as its Stop is called, so the
// two may come in either order: get puts "stop X" first.
func (j *journal) get() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	ev := append([]string(nil), j.events...)
	for i := 0; i+1 < len(ev); i++ {
		if name, ok := strings.CutPrefix(ev[i], "run "); ok && ev[i+1] == "stop "+strings.TrimSuffix(name, " ended") {
			ev[i], ev[i+1] = ev[i+1], ev[i]
		}
	}
	return ev
}

func (j *journal) has(event string) bool { return slices.Contains(j.get(), event) }

// part is a part that records its start, its run ending and its stop, and fails on demand.
type part struct {
	name      string
	startErr  error
	runErr    error         // returned by Run when it ends by itself (endRun closed)
	endRun    chan struct{} // nil: Run ends only at its turn to stop
	stopErr   error
	stopBlock chan struct{} // non-nil: Stop waits on it
	runBlock  chan struct{} // non-nil: Run ignores its context until it is closed
	noRun     bool
	started   chan struct{}
}

func newPart(name string) *part { return &part{name: name, started: make(chan struct{})} }

func (p *part) lifecycle(j *journal) lifecycle.Part {
	lp := lifecycle.Part{
		Name: p.name,
		Start: func() error {
			j.add("start %s", p.name)
			return p.startErr
		},
		Stop: func(ctx context.Context) error {
			j.add("stop %s", p.name)
			if p.stopBlock != nil {
				select {
				case <-p.stopBlock:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return p.stopErr
		},
	}
	if !p.noRun {
		lp.Run = func(ctx context.Context) error {
			close(p.started)
			if p.runBlock != nil {
				<-p.runBlock
			}
			select {
			case <-ctx.Done():
				j.add("run %s ended", p.name)
				return nil
			case <-p.endRun:
				j.add("run %s failed", p.name)
				return p.runErr
			}
		}
	}
	return lp
}

func group(clk clock.Clock, j *journal, parts ...*part) *lifecycle.Group {
	g := lifecycle.New(clk, 10*time.Second, nil)
	for _, p := range parts {
		g.Add(p.lifecycle(j))
	}
	return g
}

func runAsync(g *lifecycle.Group, ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	return done
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the group did not return")
		return nil
	}
}

// TestStopsInReverseOrder: every part starts in order; the end of the context stops them in
// reverse, each part's Run ending only at its own turn, after the parts added later stopped.
func TestStopsInReverseOrder(t *testing.T) {
	var j journal
	storage, pipeline, listener := newPart("storage"), newPart("pipeline"), newPart("listener")
	storage.noRun = true
	g := group(nil, &j, storage, pipeline, listener)
	ctx, cancel := context.WithCancel(context.Background())
	done := runAsync(g, ctx)
	<-pipeline.started
	<-listener.started
	require.Equal(t, []string{"start storage", "start pipeline", "start listener"}, j.get())
	cancel()
	require.NoError(t, wait(t, done))
	require.Equal(t, []string{
		"start storage", "start pipeline", "start listener",
		"stop listener", "run listener ended",
		"stop pipeline", "run pipeline ended",
		"stop storage",
	}, j.get())
	require.ErrorIs(t, g.Run(context.Background()), lifecycle.ErrClosed)
}

// TestFirstErrorStopsAll: a part whose Run fails stops every part, in reverse order, and its
// error is the group's.
func TestFirstErrorStopsAll(t *testing.T) {
	var j journal
	a, b, c := newPart("a"), newPart("b"), newPart("c")
	b.endRun, b.runErr = make(chan struct{}), errors.New("serve b: broken")
	g := group(nil, &j, a, b, c)
	done := runAsync(g, context.Background())
	<-c.started
	close(b.endRun)
	err := wait(t, done)
	require.EqualError(t, err, "serve b: broken")
	require.Equal(t, []string{
		"start a", "start b", "start c",
		"run b failed",
		"stop c", "run c ended",
		"stop b",
		"stop a", "run a ended",
	}, j.get())
}

// TestEndWithoutErrorStopsAll: a part whose Run returns before its turn, without an error,
// stops the group too, and the group says so.
func TestEndWithoutErrorStopsAll(t *testing.T) {
	var j journal
	a, b := newPart("a"), newPart("b")
	a.endRun = make(chan struct{})
	g := group(nil, &j, a, b)
	done := runAsync(g, context.Background())
	<-b.started
	close(a.endRun)
	require.EqualError(t, wait(t, done), "a ended before it was stopped")
	require.Equal(t, []string{"start a", "start b", "run a failed", "stop b", "run b ended", "stop a"}, j.get())
}

// TestStartFailure: a part that cannot start stops the parts started before it; the parts
// after it never start, but each is stopped, since it holds what it was made with.
func TestStartFailure(t *testing.T) {
	var j journal
	a, b, c := newPart("a"), newPart("b"), newPart("c")
	b.startErr = errors.New("listen b: address in use")
	g := group(nil, &j, a, b, c)
	err := g.Run(context.Background())
	require.EqualError(t, err, "listen b: address in use")
	require.Equal(t, []string{"start a", "start b", "stop c", "stop b", "stop a", "run a ended"}, j.get())
}

// TestStopErrors: the errors of stops are joined, each naming its part, and a failing stop
// does not keep the parts before it from stopping.
func TestStopErrors(t *testing.T) {
	var j journal
	a, b := newPart("a"), newPart("b")
	a.stopErr, b.stopErr = errors.New("close a: disk gone"), errors.New("close b: busy")
	g := group(nil, &j, a, b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := g.Run(ctx)
	require.EqualError(t, err, "stop b: close b: busy\nstop a: close a: disk gone")
	require.Equal(t, []string{"start a", "start b", "stop b", "run b ended", "stop a", "run a ended"}, j.get())
}

// TestStopDeadline: a part that does not stop within its deadline (by its Stop, or by its Run)
// is reported, and the parts before it are still stopped, each with a deadline of its own.
func TestStopDeadline(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(p *part)
	}{
		{"stop blocks", func(p *part) { p.stopBlock = make(chan struct{}) }},
		{"run ignores its turn", func(p *part) { p.runBlock = make(chan struct{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var j journal
			clk := clock.NewFake(time.Unix(0, 0))
			a, stuck, c := newPart("a"), newPart("stuck"), newPart("c")
			tc.setup(stuck)
			g := group(clk, &j, a, stuck, c)
			ctx, cancel := context.WithCancel(context.Background())
			done := runAsync(g, ctx)
			<-a.started
			<-c.started
			cancel()
			// c stops at once; stuck waits for its deadline, the only timer then pending.
			require.Eventually(t, func() bool { return j.has("stop stuck") }, 10*time.Second, time.Millisecond)
			clk.BlockUntil(1)
			clk.Advance(9 * time.Second)
			select {
			case <-done:
				t.Fatal("the group gave up before the deadline")
			default:
			}
			clk.Advance(time.Second)
			err := wait(t, done)
			require.ErrorIs(t, err, lifecycle.ErrStopTimeout)
			require.ErrorContains(t, err, "stop stuck: did not stop within its deadline (10s)")
			require.Equal(t, []string{
				"start a", "start stuck", "start c",
				"stop c", "run c ended",
				"stop stuck",
				"stop a", "run a ended",
			}, filter(j.get(), "run stuck ended"))
			if stuck.runBlock != nil {
				close(stuck.runBlock)
			}
		})
	}
}

func filter(events []string, drop string) []string {
	var out []string
	for _, e := range events {
		if e != drop {
			out = append(out, e)
		}
	}
	return out
}

// TestCloseUnrun: Close on a group that never ran stops every part, in reverse order,
// without starting any; Run then refuses, and Close again does nothing.
func TestCloseUnrun(t *testing.T) {
	var j journal
	a, b := newPart("a"), newPart("b")
	b.stopErr = errors.New("close b: busy")
	g := group(nil, &j, a, b)
	require.EqualError(t, g.Close(), "stop b: close b: busy")
	require.Equal(t, []string{"stop b", "stop a"}, j.get())
	require.ErrorIs(t, g.Run(context.Background()), lifecycle.ErrClosed)
	require.NoError(t, g.Close())
	require.Equal(t, []string{"stop b", "stop a"}, j.get())
}

// TestCloseRunning: Close on a running group stops it as the end of its context would, and
// returns once Run has.
func TestCloseRunning(t *testing.T) {
	var j journal
	a, b := newPart("a"), newPart("b")
	g := group(nil, &j, a, b)
	done := runAsync(g, context.Background())
	<-b.started
	require.NoError(t, g.Close())
	require.Equal(t, []string{"start a", "start b", "stop b", "run b ended", "stop a", "run a ended"}, j.get())
	require.NoError(t, wait(t, done))
	require.NoError(t, g.Close())
}
