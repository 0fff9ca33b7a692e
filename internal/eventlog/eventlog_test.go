package eventlog

import (
	"errors"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestAppendListReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	s := func(v string) *string { return &v }
	require.NoError(t, l.Append(
		Event{Time: 1000, Device: "d1", Name: "state", String: s("idle")},
		Event{Time: 2000, Device: "d1", Name: "state", String: s("running")},
		Event{Time: 2000, Device: "d1", Name: "state", String: s("running")}, // a re-sent batch
		Event{Time: 1500, Device: "d2", Name: "blob", Data: []byte{1, 2, 3}},
	))
	// Buffered events are not listed until flushed.
	got, err := l.List(Query{})
	require.NoError(t, err)
	require.Empty(t, got)
	require.NoError(t, l.Flush(true))

	got, err = l.List(Query{Device: "d1"})
	require.NoError(t, err)
	require.Len(t, got, 2, "identical entries fold into one")
	require.Equal(t, "running", *got[0].String, "newest first")
	got, err = l.List(Query{Start: 1400, End: 1600})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, []byte{1, 2, 3}, got[0].Data)
	require.NoError(t, l.Close())

	// A crash mid-write leaves a torn line; reopening cuts it off and keeps the rest.
	f, err := os.OpenFile(segPath(dir, 1), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(`{"t":3000,"device":"d1","na`)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	l, err = Open(dir)
	require.NoError(t, err)
	require.Equal(t, int64(len(`{"t":3000,"device":"d1","na`)), l.TornBytes())
	got, err = l.List(Query{})
	require.NoError(t, err)
	require.Len(t, got, 3)
	require.NoError(t, l.Append(Event{Time: 4000, Device: "d3", Name: "x", String: s("y")}))
	require.NoError(t, l.Close())
	l, err = Open(dir)
	require.NoError(t, err)
	require.Zero(t, l.TornBytes())
	got, err = l.List(Query{Device: "d3"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NoError(t, l.Close())
}

// partialWriter writes the first n bytes it is given to w, then fails, as a write on a disk
// that fills part way does.
type partialWriter struct {
	w *os.File
	n int
}

func (p *partialWriter) Write(b []byte) (int, error) {
	k := min(p.n, len(b))
	if _, err := p.w.Write(b[:k]); err != nil {
		return 0, err
	}
	return k, errors.New("no space left on device")
}

// TestRepairAfterFailedWrite: a flush that fails part way leaves part of a line in the file and
// the log refuses work; Repair cuts the partial line off, so that what is written after it is
// kept at the next open — where appending behind it would have been cut off with it.
func TestRepairAfterFailedWrite(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	s := func(v string) *string { return &v }
	require.NoError(t, l.Append(Event{Time: 1, Device: "d", Name: "n", String: s("before")}))
	require.NoError(t, l.Flush(true))

	l.w.Reset(&partialWriter{w: l.f, n: 7})
	require.NoError(t, l.Append(Event{Time: 2, Device: "d", Name: "n", String: s("lost")}))
	require.ErrorContains(t, l.Flush(true), "no space left")
	require.ErrorIs(t, l.Append(Event{Time: 3, Device: "d", Name: "n", String: s("refused")}), ErrBroken)
	require.ErrorIs(t, l.Flush(true), ErrBroken)

	require.NoError(t, l.Repair())
	require.NoError(t, l.Append(Event{Time: 4, Device: "d", Name: "n", String: s("after")}))
	require.NoError(t, l.Flush(true))
	require.NoError(t, l.Close())

	l, err = Open(dir)
	require.NoError(t, err)
	defer l.Close()
	require.Zero(t, l.TornBytes())
	got, err := l.List(Query{})
	require.NoError(t, err)
	var values []string
	for _, e := range got {
		values = append(values, *e.String)
	}
	require.Equal(t, []string{"after", "before"}, values)
}

// TestErase removes one device's events, buffered ones included, keeps every other device's,
// goes on appending after them, and survives a reopen.
func TestErase(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	s := func(v string) *string { return &v }
	require.NoError(t, l.Append(
		Event{Time: 1000, Device: "gone", Name: "state", String: s("idle")},
		Event{Time: 1100, Device: "kept", Name: "state", String: s("idle")},
	))
	require.NoError(t, l.Flush(true))
	require.NoError(t, l.Append(Event{Time: 1200, Device: "gone", Name: "note", String: s("buffered")}))

	n, err := l.Erase("gone")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	n, err = l.Erase("nobody")
	require.NoError(t, err)
	require.Zero(t, n)
	got, err := l.List(Query{Device: "gone"})
	require.NoError(t, err)
	require.Empty(t, got)
	require.NoError(t, l.Append(Event{Time: 1300, Device: "kept", Name: "state", String: s("running")}))
	require.NoError(t, l.Close())

	l, err = Open(dir)
	require.NoError(t, err)
	defer l.Close()
	require.Zero(t, l.TornBytes())
	got, err = l.List(Query{})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "running", *got[0].String)
	require.Equal(t, "kept", got[1].Device)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left")
}
