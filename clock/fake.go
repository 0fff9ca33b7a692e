package clock

import (
	"slices"
	"sync"
	"time"
)

// Fake is a manually driven [Clock] for tests. Time stands still until
// [Fake.Advance] or [Fake.Set] moves it; timers that fall due fire in order
// of their due time (ties in creation order), each seeing Now equal to its
// due time. A Fake is safe for concurrent use.
//
// Timer channels have a buffer of one, as real timers do: a firing is never
// blocked by a slow receiver. AfterFunc functions due during Advance run
// synchronously on the goroutine calling Advance, after its lock is
// released, so a test knows they have finished when Advance returns; an
// AfterFunc with a duration of zero or less runs on its own goroutine, as
// time.AfterFunc does.
type Fake struct {
	mu     sync.Mutex
	cond   *sync.Cond // signalled whenever the set of pending timers changes
	now    time.Time
	seq    uint64
	timers []*fakeTimer // pending timers, unordered
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock that reads start until moved.
func NewFake(start time.Time) *Fake {
	f := &Fake{now: start}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// Now returns the fake's current time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTimer returns a timer that fires when the fake has advanced by d.
func (f *Fake) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{f: f, ch: make(chan time.Time, 1)}
	f.mu.Lock()
	f.schedule(t, d)
	f.mu.Unlock()
	return t
}

// AfterFunc returns a timer that calls fn when the fake has advanced by d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	t := &fakeTimer{f: f, fn: fn}
	f.mu.Lock()
	f.schedule(t, d)
	f.mu.Unlock()
	return t
}

// Advance moves the clock forward by d, firing every timer that falls due on
// the way in due order. A negative d is treated as zero.
func (f *Fake) Advance(d time.Duration) {
	if d < 0 {
		d = 0
	}
	f.mu.Lock()
	f.advanceLocked(f.now.Add(d))
}

// Set moves the clock to t. If t is after the current time, timers due on
// the way fire as with Advance; if it is before, time goes backwards and no
// timer fires (pending timers keep their absolute due times).
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	if !t.After(f.now) {
		f.now = t
		f.mu.Unlock()
		return
	}
	f.advanceLocked(t)
}

// Pending returns the number of timers that have not fired or been stopped.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// BlockUntil waits until at least n timers are pending. Tests use it to wait
// for a goroutine to arm its timer before advancing the clock.
func (f *Fake) BlockUntil(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.timers) < n {
		f.cond.Wait()
	}
}

// advanceLocked fires due timers up to target; it is called with f.mu held
// and returns with it released.
func (f *Fake) advanceLocked(target time.Time) {
	for {
		t := f.nextDue(target)
		if t == nil {
			break
		}
		if t.when.After(f.now) {
			f.now = t.when
		}
		f.remove(t)
		if t.fn != nil {
			f.mu.Unlock()
			t.fn()
			f.mu.Lock()
			continue
		}
		t.send(f.now)
	}
	if target.After(f.now) {
		f.now = target
	}
	f.mu.Unlock()
}

// nextDue returns the earliest pending timer due at or before target.
func (f *Fake) nextDue(target time.Time) *fakeTimer {
	var best *fakeTimer
	for _, t := range f.timers {
		if t.when.After(target) {
			continue
		}
		if best == nil || t.when.Before(best.when) || (t.when.Equal(best.when) && t.seq < best.seq) {
			best = t
		}
	}
	return best
}

// schedule arms t to fire after d; f.mu is held.
func (f *Fake) schedule(t *fakeTimer, d time.Duration) {
	f.seq++
	t.seq = f.seq
	t.when = f.now.Add(d)
	if d <= 0 {
		if t.fn != nil {
			go t.fn()
		} else {
			t.send(f.now)
		}
		return
	}
	t.active = true
	f.timers = append(f.timers, t)
	f.cond.Broadcast()
}

// remove deactivates t; f.mu is held. It reports whether t was pending.
func (f *Fake) remove(t *fakeTimer) bool {
	if !t.active {
		return false
	}
	t.active = false
	if i := slices.Index(f.timers, t); i >= 0 {
		f.timers = slices.Delete(f.timers, i, i+1)
	}
	f.cond.Broadcast()
	return true
}

type fakeTimer struct {
	f      *Fake
	ch     chan time.Time // nil for AfterFunc timers
	fn     func()         // nil for channel timers
	when   time.Time
	seq    uint64
	active bool // guarded by f.mu
}

var _ Timer = (*fakeTimer)(nil)

func (t *fakeTimer) C() <-chan time.Time {
	if t.ch == nil {
		return nil
	}
	return t.ch
}

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.f.remove(t)
	t.drain()
	return was
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	was := t.f.remove(t)
	t.drain()
	t.f.schedule(t, d)
	return was
}

// send delivers a firing without blocking, replacing an unread one.
func (t *fakeTimer) send(now time.Time) {
	t.drain()
	select {
	case t.ch <- now:
	default:
	}
}

func (t *fakeTimer) drain() {
	if t.ch == nil {
		return
	}
	select {
	case <-t.ch:
	default:
	}
}
