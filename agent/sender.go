package agent

import (
	"context"
	"errors"
	"time"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/protocol"
)

// cycleResult is what one send cycle did.
type cycleResult struct {
	CycleOutcome
	sent         int
	refused      bool          // the server refused a batch for retry (busy, unavailable)
	retryAfter   time.Duration // the server's Retry-After
	transportErr bool          // a batch got no answer
}

// sendLoop runs the scattered send schedule until ctx ends: wait, send a
// cycle, adapt the window, draw the next wait.
//
// After a cycle in which the server refused a batch for retry (busy,
// unavailable, or on HTTPS no answer at all), the next wait gets an extra
// backoff term, a uniform random time in [0, min(cap, base·2ⁿ)) for the
// n-th such cycle in a row, and is at least the server's Retry-After. A
// cycle that delivers resets the count.
//
// Flush ends a wait early: cycles then run back to back, ignoring the batch
// window, until the spool is empty or a batch is not delivered.
func (a *Agent) sendLoop(ctx context.Context) {
	a.winMu.Lock()
	wait := a.sched.First()
	a.winMu.Unlock()
	for {
		force, ok := a.waitCycle(ctx, wait)
		if !ok {
			return
		}
		res := a.cycle(ctx, force)
		for force && res.sent > 0 && res.Backlog && !res.refused && !res.transportErr && ctx.Err() == nil {
			res = a.cycle(ctx, true)
		}
		if ctx.Err() != nil {
			return
		}
		if res.sent > 0 && a.mailboxPoke != nil {
			a.pokeMailbox() // HTTPS: what the server has for the device comes back now
		}
		wait = a.afterCycle(res)
	}
}

// waitCycle waits d on the agent's clock or until Flush is called; it
// reports whether Flush ended the wait, and false when ctx ended first.
func (a *Agent) waitCycle(ctx context.Context, d time.Duration) (flush, ok bool) {
	t := a.clk.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-a.flush:
		return true, true
	case <-t.C():
		return false, true
	}
}

// Flush asks the send loop to send what the spool holds now, without
// waiting for the next scheduled cycle or the batch window: cycles run back
// to back until the spool is empty, a batch is not acknowledged, or the
// server refuses one for retry; then the schedule resumes. Flush returns at
// once. While the connection is down a flush sends nothing; call it again
// later. Programs embedding the agent call it before they stop (the fleet
// simulator does at its end) and watch Stats().Spool.Records fall to zero.
func (a *Agent) Flush() {
	select {
	case a.flush <- struct{}{}:
	default: // one is already pending
	}
}

// afterCycle adapts the window to a cycle's outcome and returns the wait
// before the next cycle.
func (a *Agent) afterCycle(res cycleResult) time.Duration {
	_, persistent := a.up.(*mqttUplink)
	a.winMu.Lock()
	a.window.Adapt(res.CycleOutcome)
	wait := a.sched.Next()
	a.winMu.Unlock()
	switch {
	case res.refused || (res.transportErr && !persistent):
		wait += a.retries.Next()
		wait = max(wait, res.retryAfter)
	case res.sent > 0:
		a.retries.Reset()
	}
	return wait
}

// cycle sends up to MaxBatchesPerCycle batches: first the batch in flight
// (unacknowledged from an earlier cycle, with its sequence number), then
// new ones cut from the spool, as long as the batch window says they are
// due (all of them when force is set).
func (a *Agent) cycle(ctx context.Context, force bool) cycleResult {
	var res cycleResult
	if !a.up.ready() {
		return res
	}
	res.Attempted = true
	a.winMu.Lock()
	budget := a.maxPerCycle
	a.winMu.Unlock()
	for budget > 0 {
		b := a.pending
		if b == nil {
			var err error
			if b, err = a.nextBatch(force); err != nil {
				if !errors.Is(err, spool.ErrClosed) {
					a.log.Error("read spool", "error", err)
				}
				return res
			}
			if b == nil {
				return res // nothing due
			}
			a.pending = b
		}
		if b.records == 0 { // nothing decodable: drop without sending
			a.finish(b)
			continue
		}
		budget--
		r := a.up.send(ctx, b.payload)
		res.MaxRTT = max(res.MaxRTT, r.rtt)
		switch {
		case r.err != nil:
			res.transportErr = true
			if ctx.Err() == nil {
				a.log.Debug("batch not acknowledged; kept for the next cycle", "seq", b.seq, "error", r.err)
			}
			return res
		case r.reason == protocol.ReasonNone:
			a.m.sent(b.records, len(b.payload), r.rtt, a.clk.Now().Sub(b.oldest))
			a.finish(b)
			res.sent++
		case r.reason.Retry():
			a.m.retry()
			res.refused, res.Backlog, res.retryAfter = true, true, r.retryAfter
			a.log.Debug("batch refused for retry", "seq", b.seq, "reason", r.reason.String(), "retry_after", r.retryAfter)
			return res
		default:
			a.m.drop(r.reason.String(), b.records)
			a.log.Warn("batch refused by the server; dropped", "seq", b.seq, "reason", r.reason.String(), "measurements", b.records)
			a.finish(b)
		}
	}
	// The budget ran out: anything still waiting is a backlog.
	if more, err := a.sp.ReadFrom(0, 1, 0); err == nil && len(more) > 0 {
		res.Backlog = true
	}
	return res
}

// nextBatch cuts the next batch from the spool, or returns nil when
// nothing is due yet; with force, whatever the spool holds is due.
func (a *Agent) nextBatch(force bool) (*batch, error) {
	a.winMu.Lock()
	bc := a.batchCfg
	a.winMu.Unlock()
	recs, err := a.sp.ReadFrom(0, bc.MaxRecords, bc.MaxBytes)
	if err != nil || len(recs) == 0 {
		return nil, err
	}
	full := len(recs) >= bc.MaxRecords
	if !full {
		more, err := a.sp.ReadFrom(recs[len(recs)-1].ID, 1, 0)
		if err != nil {
			return nil, err
		}
		full = len(more) > 0
	}
	now := a.clk.Now()
	a.winMu.Lock()
	due := force || a.window.Due(recs, full, now)
	a.winMu.Unlock()
	if !due {
		return nil, nil
	}
	return buildBatch(recs, a.seq.current(), now)
}

// finish acknowledges a batch's records in the spool (sent or dropped) and
// moves the sequence counter past it.
func (a *Agent) finish(b *batch) {
	a.pending = nil
	a.m.drop(dropUndecodable, b.bad)
	if err := a.sp.AckIDs(b.ids...); err != nil && !errors.Is(err, spool.ErrClosed) {
		a.log.Error("acknowledge records in the spool", "error", err)
	}
	if b.records == 0 {
		return // never sent: its number goes to the next batch
	}
	if err := a.seq.done(b.seq); err != nil {
		a.log.Error("persist the sequence counter", "error", err)
	}
}
