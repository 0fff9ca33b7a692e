package logx

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestLibraryInfoIsDebug(t *testing.T) {
	var buf bytes.Buffer
	l := Library(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "tsdb"))
	l.Info("Replaying WAL, this may take a while")
	l.Warn("segment corrupted", "segment", 3)
	out := buf.String()
	require.NotContains(t, out, "Replaying WAL")
	require.Contains(t, out, `level=WARN msg="segment corrupted" component=tsdb segment=3`)

	buf.Reset()
	l = Library(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Info("Replaying WAL")
	require.Contains(t, buf.String(), `level=DEBUG msg="Replaying WAL"`)
}

func TestEveryHoldsBackRepeats(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, nil))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := NewEvery(time.Minute, func() time.Time { return now })
	for range 5 {
		e.Log(context.Background(), l, slog.LevelError, "disk", "write failed", "error", "no space")
		now = now.Add(time.Second)
	}
	e.Log(context.Background(), l, slog.LevelError, "other", "other failure")
	require.Equal(t, 2, strings.Count(buf.String(), "\n"), "one line per key within the minute")
	now = now.Add(time.Minute)
	e.Log(context.Background(), l, slog.LevelError, "disk", "write failed", "error", "no space")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	require.Contains(t, lines[2], "suppressed=4", "the next line says how many were held back")
}
