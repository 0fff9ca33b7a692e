// Package lifecycle runs a server's long-running parts as one, in the manner of the run.Group
// that Prometheus' main builds with oklog/run: every part starts, in the order it was added;
// the first part to fail, the end of the context (a signal) or Close stops them all, in
// reverse order, each under a deadline of its own.
//
// Stopping in reverse order is what lets a server promise that nothing it acknowledged is
// lost: storage is added first and the listeners last, so the listeners stop taking work,
// then the pipeline finishes what it took, then storage closes. Unlike oklog/run, whose
// actors are all interrupted at once, a part is asked to stop only once every part added
// after it has stopped (or missed its deadline).
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/millwright/millwright/clock"
)

// ErrClosed is returned by Run on a group that has already run or been closed.
var ErrClosed = errors.New("lifecycle: the group has already run or been closed")

// ErrStopTimeout is wrapped by the error of a part that did not stop within its deadline.
var ErrStopTimeout = errors.New("did not stop within its deadline")

// Part is one long-running part. Every function is optional.
type Part struct {
	// Name names the part in errors and logs.
	Name string
	// Start starts the part and returns once it serves, or with the reason it cannot; the next
	// part starts only once it has returned. An error stops the group: the parts before are
	// stopped and the parts after never start.
	Start func() error
	// Run serves until ctx ends, which is the part's turn to stop, and returns then, or
	// returns before with the error that ended it; a return before its turn stops the group.
	// It runs on its own goroutine, started once Start has returned.
	Run func(ctx context.Context) error
	// Stop stops the part and releases what it holds, within ctx's deadline. It is called
	// once, at the part's turn, whether or not the part started: what a part holds was
	// opened when the part was made, before the group ran (or if it never runs). After Stop,
	// the group also waits, under the same deadline, for Run to return.
	Stop func(ctx context.Context) error
}

// Group runs parts as one. Add the parts, then call Run once, or Close to release the parts
// of a group that will not run.
type Group struct {
	clk     clock.Clock
	timeout time.Duration
	log     *slog.Logger
	parts   []Part

	mu      sync.Mutex
	state   int // idle, running, done
	stopReq chan struct{}
	stopped sync.Once
	done    chan struct{}
}

const (
	idle = iota
	running
	done
)

// New returns an empty group whose parts each get stopTimeout to stop, measured on clk (nil:
// the real clock). It logs the shutdown to logger (nil: nowhere).
func New(clk clock.Clock, stopTimeout time.Duration, logger *slog.Logger) *Group {
	if clk == nil {
		clk = clock.Real()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Group{clk: clk, timeout: stopTimeout, log: logger, stopReq: make(chan struct{}), done: make(chan struct{})}
}

// Add appends a part: it starts after the parts added before it and stops before them. Add
// parts before calling Run or Close.
func (g *Group) Add(p Part) { g.parts = append(g.parts, p) }

// Names lists the parts' names in the order they start.
func (g *Group) Names() []string {
	names := make([]string, len(g.parts))
	for i, p := range g.parts {
		names[i] = p.Name
	}
	return names
}

// run is a part's Run in progress.
type run struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Run starts every part in order, waits for the first of: ctx ending, Close, a part's Run
// returning; then stops every part in reverse order and returns. The error joins the one
// that ended the group (a Start's, or the Run's that returned first), the errors of Runs that
// returned when stopped, and the errors of Stops, each of these named "stop <part>: …".
func (g *Group) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.state != idle {
		g.mu.Unlock()
		return ErrClosed
	}
	g.state = running
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.state = done
		g.mu.Unlock()
		close(g.done)
	}()

	runs := make([]*run, len(g.parts))
	ended := make(chan int, len(g.parts))
	var cause error
	first := -1
	for i, p := range g.parts {
		if p.Start != nil {
			if err := p.Start(); err != nil {
				cause = err
				g.log.Error("a part failed to start; stopping the others", "part", p.Name, "err", err)
				break
			}
		}
		if p.Run != nil {
			// A part's context ends at its turn to stop, not with ctx.
			rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			r := &run{cancel: cancel, done: make(chan struct{})}
			runs[i] = r
			go func() {
				r.err = p.Run(rctx)
				close(r.done)
				ended <- i
			}()
		}
	}
	if cause == nil {
		select {
		case <-ctx.Done():
			g.log.Info("shutting down", "reason", context.Cause(ctx))
		case <-g.stopReq:
			g.log.Info("shutting down", "reason", "closed")
		case first = <-ended:
			name := g.parts[first].Name
			cause = runs[first].err
			if cause == nil {
				cause = fmt.Errorf("%s ended before it was stopped", name)
			}
			g.log.Error("a part ended; stopping the others", "part", name, "err", cause)
		}
	}
	errs := []error{cause}
	for i := len(g.parts) - 1; i >= 0; i-- {
		err := g.stop(g.parts[i], runs[i])
		// A Run that missed its deadline may still be writing its error.
		if r := runs[i]; i != first && r != nil && !errors.Is(err, ErrStopTimeout) && r.err != nil {
			errs = append(errs, r.err)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stop stops one part under the group's deadline: cancels its Run's context, calls its Stop
// and waits for its Run to return.
func (g *Group) stop(p Part, r *run) error {
	if p.Stop == nil && r == nil {
		return nil
	}
	begin := g.clk.Now()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	deadline := g.clk.AfterFunc(g.timeout, func() {
		cancel(fmt.Errorf("stop %s: %w (%s)", p.Name, ErrStopTimeout, g.timeout))
	})
	defer deadline.Stop()
	if r != nil {
		r.cancel()
	}
	stopped := make(chan error, 1)
	go func() {
		var err error
		if p.Stop != nil {
			err = p.Stop(ctx)
		}
		if r != nil {
			select {
			case <-r.done:
			case <-ctx.Done():
			}
		}
		stopped <- err
	}()
	var err error
	select {
	case err = <-stopped:
		if ctx.Err() != nil {
			// The deadline passed while Stop returned or Run was still running.
			err = errors.Join(context.Cause(ctx), err)
		} else if err != nil {
			err = fmt.Errorf("stop %s: %w", p.Name, err)
		}
	case <-ctx.Done():
		err = context.Cause(ctx)
	}
	if err != nil {
		g.log.Error("a part did not stop cleanly", "part", p.Name, "err", err)
	} else {
		g.log.Debug("stopped", "part", p.Name, "took", clock.Since(g.clk, begin))
	}
	return err
}

// Close stops the group. A group that has not run stops its parts, in reverse order, without
// starting them, and returns their errors; Run then returns ErrClosed. A running group stops
// as if Run's context had ended, Close waiting until Run has returned (Run returns the errors).
// Closing again does nothing.
func (g *Group) Close() error {
	g.mu.Lock()
	switch g.state {
	case idle:
		g.state = done
		g.mu.Unlock()
		defer close(g.done)
		var errs []error
		for i := len(g.parts) - 1; i >= 0; i-- {
			errs = append(errs, g.stop(g.parts[i], nil))
		}
		return errors.Join(errs...)
	case running:
		g.mu.Unlock()
		g.stopped.Do(func() { close(g.stopReq) })
	default:
		g.mu.Unlock()
	}
	<-g.done
	return nil
}
