// Package logx holds what the server's logging needs beyond log/slog: quieter logs for the
// libraries it embeds, and a limit on repeated errors.
package logx

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Library returns a logger for an embedded library (the Prometheus TSDB, its rules engine):
// its info messages ("Replaying WAL", "Starting rule manager") go out at debug level, so the
// server's own start-up says what matters; its warnings and errors stay as they are.
func Library(l *slog.Logger) *slog.Logger { return slog.New(demote{l.Handler()}) }

type demote struct{ h slog.Handler }

func (d demote) Enabled(ctx context.Context, lv slog.Level) bool { return d.h.Enabled(ctx, lower(lv)) }

func (d demote) Handle(ctx context.Context, r slog.Record) error {
	r.Level = lower(r.Level)
	return d.h.Handle(ctx, r)
}

func (d demote) WithAttrs(as []slog.Attr) slog.Handler { return demote{d.h.WithAttrs(as)} }
func (d demote) WithGroup(name string) slog.Handler    { return demote{d.h.WithGroup(name)} }

func lower(lv slog.Level) slog.Level {
	if lv == slog.LevelInfo {
		return slog.LevelDebug
	}
	return lv
}

// Every logs a message at most once per interval per key, and says how many it held back
// when it logs again: an error repeated on every request or every tick is seen, not flooded.
type Every struct {
	interval time.Duration
	now      func() time.Time

	mu   sync.Mutex
	last map[string]*held
}

type held struct {
	at      time.Time
	dropped int
}

// NewEvery logs each key at most once per interval, on the clock now.
func NewEvery(interval time.Duration, now func() time.Time) *Every {
	return &Every{interval: interval, now: now, last: map[string]*held{}}
}

// Log logs msg with args at level on l unless key was logged less than the interval ago;
// then it only counts it. The next message logged for key carries "suppressed", the count.
func (e *Every) Log(ctx context.Context, l *slog.Logger, level slog.Level, key, msg string, args ...any) {
	e.mu.Lock()
	now := e.now()
	h := e.last[key]
	if h != nil && now.Sub(h.at) < e.interval {
		h.dropped++
		e.mu.Unlock()
		return
	}
	dropped := 0
	if h == nil {
		if len(e.last) >= maxKeys {
			clear(e.last) // bounded: at worst a key logs once more than it would have
		}
		h = &held{}
		e.last[key] = h
	}
	dropped, h.at, h.dropped = h.dropped, now, 0
	e.mu.Unlock()
	if dropped > 0 {
		args = append(args, "suppressed", dropped)
	}
	l.Log(ctx, level, msg, args...)
}

// ErrorInterval is how often the server's periodic parts (the monitor's flush, the rollout
// engine's step) log the same failure: once, then once per interval with the count held back.
const ErrorInterval = 5 * time.Minute

// maxKeys bounds the keys Every remembers.
const maxKeys = 10_000
