package eventlog

import (
	"os"
	"path/filepath"
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
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_APPEND|os.O_WRONLY, 0)
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
