package ingest

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/millwright/millwright/clock"
)

// Storage repair after a write error.
//
// A write that fails part way (ENOSPC, EIO) can leave the TSDB's write-ahead log, its
// out-of-order log or the event log ending in a partial record. Writes after it succeed once
// space returns, but the next open finds the torn record, "repairs" the log by cutting it there
// and so deletes everything written after it — acknowledged batches included (upstream
// Prometheus issues 13027, 7245, 7835). The pipeline therefore acknowledges nothing after a
// write error until the part that failed has been made consistent: the event log truncated to
// its last whole line, the TSDB closed and reopened, which runs the repair while nothing
// written after the torn record matters. Batches are refused with ReasonUnavailable meanwhile;
// devices keep them in their spools and send them again.

const (
	repairFirstDelay = time.Second // after a failure, before the first repair attempt
	repairMaxDelay   = time.Minute // between attempts, doubling from repairFirstDelay
)

// fault is the committer's record of a storage failure not yet repaired.
type fault struct {
	store, events bool // which part needs repair
	cause         error
	attempts      int
	timer         clock.Timer
}

// fail records a commit failure: storage (the TSDB) or the event log, or both, need repair
// before the next acknowledgement. Batches are refused from now on.
func (p *Pipeline) fail(err error, store, events bool) {
	if p.fault == nil {
		p.fault = &fault{}
		p.m.storageFaults.Inc()
	}
	f := p.fault
	f.store = f.store || store
	f.events = f.events || events
	f.cause = err
	why := "storage is being repaired after a write error; retry later"
	p.failing.Store(&why)
	// Cached series references and sequence state may name what the failed transaction held.
	p.state = newCommitterState()
	p.scheduleRepair()
}

func (p *Pipeline) scheduleRepair() {
	f := p.fault
	d := repairFirstDelay << min(f.attempts, 6)
	d = min(d, repairMaxDelay)
	if f.timer == nil {
		f.timer = p.clk.NewTimer(d)
	} else {
		f.timer.Reset(d)
	}
}

// repairDue is the channel that fires when a repair attempt is due, or nil when storage is
// healthy.
func (p *Pipeline) repairDue() <-chan time.Time {
	if p.fault == nil {
		return nil
	}
	return p.fault.timer.C()
}

// repair tries to make storage consistent again. It reports whether storage is healthy.
func (p *Pipeline) repair() bool {
	f := p.fault
	if f == nil {
		return true
	}
	f.attempts++
	if f.events {
		if err := p.events.Repair(); err != nil {
			return p.repairFailed(fmt.Errorf("repair event log: %w", err))
		}
		f.events = false
	}
	if f.store {
		if err := p.store.Reopen(); err != nil {
			return p.repairFailed(fmt.Errorf("reopen telemetry store: %w", err))
		}
		f.store = false
	}
	f.timer.Stop()
	p.fault = nil
	p.failing.Store(nil)
	p.m.storageRepairs.WithLabelValues("repaired").Inc()
	p.log.Warn("storage repaired after a write error; acknowledging batches again",
		"cause", f.cause, "attempts", f.attempts)
	return true
}

func (p *Pipeline) repairFailed(err error) bool {
	p.m.storageRepairs.WithLabelValues("failed").Inc()
	p.errLog.log(p.log, p.clk, "storage repair failed; batches still refused", "error", err, "attempts", p.fault.attempts)
	p.scheduleRepair()
	return false
}

// rateLimited logs at most one error line per interval, with the number of lines it held back.
type rateLimited struct {
	every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *rateLimited) log(l *slog.Logger, clk clock.Clock, msg string, args ...any) {
	r.mu.Lock()
	now := clk.Now()
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.Error(msg, args...)
}
