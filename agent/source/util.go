package source

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/millwright/millwright/clock"
)

// minAbsoluteTime is 2^28 s after the epoch (1978-07-04): SenML times below
// it are relative, so a device whose clock reads earlier (a board without a
// real-time clock before NTP has set it) cannot time-stamp measurements.
const minAbsoluteTime = 1 << 28

// clockSet reports whether t can be sent as an absolute SenML time.
func clockSet(t time.Time) bool { return t.Unix() >= minAbsoluteTime }

// onTime is how late a timer may fire for its sample to carry the tick's
// own time, at most: a hundredth of the interval, and never more than 5 ms.
// Stored series compress far better on a regular grid (the TSDB spends one
// bit on a timestamp whose interval repeats and two bytes on one that moved
// by a millisecond), and a reading 5 ms late in a 10 s schedule is no less
// a reading of that tick; Prometheus aligns scrape times the same way
// (its scrape timestamp tolerance).
func onTime(interval time.Duration) time.Duration {
	return min(interval/100, 5*time.Millisecond)
}

// every calls fn at once and then every interval, by clk, until ctx ends.
// Ticks that fall due while fn runs are skipped, not queued: the schedule
// stays on start + k·interval, start being the first call's time to the
// millisecond. fn gets the tick's time when the timer fired within
// onTime(interval) of it, else the time it fired.
func every(ctx context.Context, clk clock.Clock, interval time.Duration, fn func(ctx context.Context, now time.Time)) {
	start := clk.Now().Truncate(time.Millisecond)
	tolerance := onTime(interval)
	var t clock.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	now := start
	for k := int64(1); ; k++ {
		fn(ctx, now)
		if ctx.Err() != nil {
			return
		}
		next := start.Add(time.Duration(k) * interval)
		if cur := clk.Now(); !next.After(cur) {
			k = int64(cur.Sub(start)/interval) + 1
			next = start.Add(time.Duration(k) * interval)
		}
		d := next.Sub(clk.Now())
		if t == nil {
			t = clk.NewTimer(d)
		} else {
			t.Reset(d)
		}
		select {
		case <-ctx.Done():
			return
		case now = <-t.C():
			if late := now.Sub(next); late >= 0 && late <= tolerance {
				now = next
			}
		}
	}
}

// problems logs a recurring failure once, when it first appears or its
// message changes, at Warn; repeats go to Debug, and the recovery is logged
// at Info. A source sampling every few seconds thus does not flood the log
// with one broken sensor.
type problems struct {
	log  *slog.Logger
	mu   sync.Mutex
	last map[string]string
}

func newProblems(log *slog.Logger) *problems {
	return &problems{log: log, last: make(map[string]string)}
}

// report logs msg for key. attrs are slog key-value pairs.
func (p *problems) report(key, msg string, attrs ...any) {
	p.mu.Lock()
	same := p.last[key] == msg
	p.last[key] = msg
	p.mu.Unlock()
	level := slog.LevelWarn
	if same {
		level = slog.LevelDebug
	}
	p.log.Log(context.Background(), level, msg, attrs...)
}

// ok notes that key works again.
func (p *problems) ok(key, msg string, attrs ...any) {
	p.mu.Lock()
	_, had := p.last[key]
	delete(p.last, key)
	p.mu.Unlock()
	if had {
		p.log.Info(msg, attrs...)
	}
}

// sanitize turns s into a name part that is safe in a SenML name after a
// prefix: lower case a-z, 0-9, '_', '.' and '-'; every other byte becomes
// '_'. An empty result is "unknown".
func sanitize(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "unknown"
	}
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// checkName applies the SenML name rule (RFC 8428 §4.5.1): the first byte
// is A-Z, a-z or 0-9, the others are those or '-', ':', '.', '/', '_'.
func checkName(s string) bool {
	if s == "" || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '-' && c != ':' && c != '.' && c != '/' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// defaultLogger returns l, or a logger that drops everything when l is nil.
func defaultLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
