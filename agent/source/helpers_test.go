package source

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/protocol"
)

// epoch is the fake clocks' start: well after 2^28 s, so that times are
// absolute SenML times.
var epoch = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type write struct {
	recs  []protocol.Record
	class Class
}

// recordSink records writes; failing makes it refuse them.
type recordSink struct {
	ch      chan write
	mu      sync.Mutex
	failing error
}

func newRecordSink() *recordSink { return &recordSink{ch: make(chan write, 64)} }

func (s *recordSink) Write(ctx context.Context, recs []protocol.Record, class Class) error {
	s.mu.Lock()
	err := s.failing
	s.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case s.ch <- write{recs, class}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *recordSink) fail(err error) {
	s.mu.Lock()
	s.failing = err
	s.mu.Unlock()
}

func (s *recordSink) next(t *testing.T) write {
	t.Helper()
	select {
	case w := <-s.ch:
		return w
	case <-time.After(10 * time.Second):
		t.Fatal("no write within 10 s")
		return write{}
	}
}

func (s *recordSink) none(t *testing.T) {
	t.Helper()
	select {
	case w := <-s.ch:
		t.Fatalf("unexpected write of %d records", len(w.recs))
	case <-time.After(50 * time.Millisecond):
	}
}

// byName indexes records by name and checks that names are unique.
func byName(t *testing.T, recs []protocol.Record) map[string]protocol.Record {
	t.Helper()
	m := make(map[string]protocol.Record, len(recs))
	for _, r := range recs {
		_, dup := m[r.Name]
		require.False(t, dup, "duplicate name %q", r.Name)
		m[r.Name] = r
	}
	return m
}

// requireResolved checks the Sink contract: no base fields, an absolute
// time, one value, and a pack that the protocol accepts unchanged.
func requireResolved(t *testing.T, recs []protocol.Record) {
	t.Helper()
	for i, r := range recs {
		require.Empty(t, r.BaseName, "record %d", i)
		require.Zero(t, r.BaseTime, "record %d", i)
		require.Empty(t, r.BaseUnit, "record %d", i)
		require.Nil(t, r.BaseValue, "record %d", i)
		require.Nil(t, r.BaseSum, "record %d", i)
		require.Nil(t, r.BaseVersion, "record %d", i)
		require.Nil(t, r.Seq, "record %d", i)
		require.GreaterOrEqual(t, r.Time, float64(minAbsoluteTime), "record %d %s", i, r.Name)
	}
	b, err := protocol.Resolve(protocol.Pack(recs), epoch)
	require.NoError(t, err)
	require.Len(t, b.Measurements, len(recs))
}

func value(t *testing.T, r protocol.Record) float64 {
	t.Helper()
	require.NotNil(t, r.Value, "record %s has no numeric value", r.Name)
	return *r.Value
}

// logBuffer is a concurrency-safe buffer for a text slog handler.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo})), b
}

var errSinkDown = errors.New("sink down")

// runSource runs src in the background and returns a function that stops
// it and returns Run's result.
func runSource(t *testing.T, src Source, sink Sink) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10 s of cancel")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
