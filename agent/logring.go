package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
)

// Bounds of the ring of recent log lines that diag.logs returns.
const (
	// DefaultLogLines is how many recent log lines the agent keeps by default
	// (Options.LogLines).
	DefaultLogLines = 200
	// maxLogRingBytes bounds the text of the lines kept; the oldest go first.
	maxLogRingBytes = 32 << 10
	// maxLogLineBytes bounds one kept line; a longer one is cut and ends in "…".
	maxLogLineBytes = 1 << 10
)

// logRing keeps the last lines the agent logged, in memory, for diag.logs. It is an
// io.Writer for a slog.TextHandler, which writes each record in one Write. Lines are
// allocated as they come: an agent that logs nothing holds nothing.
type logRing struct {
	max int

	mu    sync.Mutex
	lines []string // oldest first
	bytes int
}

func newLogRing(lines int) *logRing { return &logRing{max: lines} }

func (r *logRing) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if len(line) > maxLogLineBytes {
		line = strings.ToValidUTF8(line[:maxLogLineBytes], "") + "…"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.bytes += len(line)
	drop := 0
	for len(r.lines)-drop > r.max || r.bytes > maxLogRingBytes {
		r.bytes -= len(r.lines[drop])
		drop++
	}
	if drop > 0 {
		// Copy down rather than reslice, so the array does not grow without bound.
		n := copy(r.lines, r.lines[drop:])
		clear(r.lines[n:])
		r.lines = r.lines[:n]
	}
	return len(p), nil
}

// last returns up to n of the newest lines, oldest first.
func (r *logRing) last(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n > len(r.lines) {
		n = len(r.lines)
	}
	return append([]string(nil), r.lines[len(r.lines)-n:]...)
}

// teeHandler sends each record to the agent's logger and to the ring. The ring takes every
// record of level info and above, and below that what the logger itself takes, so the
// lines diag.logs returns do not depend on where the process sends its logs.
type teeHandler struct {
	out  slog.Handler
	ring slog.Handler
}

var _ slog.Handler = teeHandler{}

func newTeeHandler(out slog.Handler, ring *logRing) teeHandler {
	return teeHandler{out: out, ring: slog.NewTextHandler(ring, &slog.HandlerOptions{Level: slog.LevelDebug})}
}

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.out.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.out.Enabled(ctx, r.Level) {
		err = h.out.Handle(ctx, r.Clone())
	}
	return errors.Join(err, h.ring.Handle(ctx, r))
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{out: h.out.WithAttrs(as), ring: h.ring.WithAttrs(as)}
}

func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{out: h.out.WithGroup(name), ring: h.ring.WithGroup(name)}
}
