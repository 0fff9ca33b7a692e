package eventlog

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// naiveList is the listing of one scanned file: the reference the segmented List must match.
func naiveList(all []Event, q Query) []Event {
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	seen := map[string]bool{}
	var out []Event
	for _, e := range all {
		if !q.match(&e) {
			continue
		}
		b, _ := json.Marshal(e)
		if seen[string(b)] {
			continue
		}
		seen[string(b)] = true
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b Event) int { return cmp.Compare(b.Time, a.Time) })
	if len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out
}

func randomEvents(r *rand.Rand, n int, t0 int64) []Event {
	var evs []Event
	for i := range n {
		v := fmt.Sprint(r.IntN(3))
		e := Event{Time: t0 + int64(i)*10 - int64(r.IntN(50)), Device: fmt.Sprint("d", r.IntN(5)), Name: fmt.Sprint("n", r.IntN(3)), String: &v}
		if r.IntN(10) == 0 && len(evs) > 0 {
			e = evs[len(evs)-1] // a re-sent entry
		}
		evs = append(evs, e)
	}
	return evs
}

func checkQueries(t *testing.T, l *Log, all []Event) {
	t.Helper()
	for _, q := range []Query{
		{}, {Limit: 7}, {Device: "d1"}, {Device: "d2", Limit: 5}, {Name: "n0", Limit: 11},
		{Device: "d3", Name: "n1"}, {Start: 1500, End: 2500, Limit: 9}, {Device: "d9"},
		{Name: "n2", Start: 3000}, {End: 800, Limit: 3},
	} {
		got, err := l.List(q)
		require.NoError(t, err)
		want := naiveList(all, q)
		if len(want) == 0 {
			require.Empty(t, got, "%+v", q)
			continue
		}
		require.Equal(t, want, got, "%+v", q)
	}
}

func TestSegmentsListLikeOneFile(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentBytes: 2 << 10}
	l, err := OpenOptions(dir, opts)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(1, 2))
	all := randomEvents(r, 600, 1000)
	for i := 0; i < len(all); i += 13 {
		require.NoError(t, l.Append(all[i:min(i+13, len(all))]...))
		require.NoError(t, l.Flush(i%2 == 0))
	}
	require.Greater(t, len(l.closed), 10, "the log rolled over into segments")
	checkQueries(t, l, all)
	require.NoError(t, l.Close())

	// Reopened, from the indexes; then with indexes missing or stale, rebuilt.
	l, err = OpenOptions(dir, opts)
	require.NoError(t, err)
	checkQueries(t, l, all)
	require.NoError(t, l.Close())
	require.NoError(t, os.Remove(idxPath(dir, 2)))
	require.NoError(t, os.WriteFile(idxPath(dir, 3), []byte(`{"size":1}`+"\n"), 0o600))
	l, err = OpenOptions(dir, opts)
	require.NoError(t, err)
	checkQueries(t, l, all)
	require.FileExists(t, idxPath(dir, 2))

	// Erase rewrites only the segments holding the device.
	before := map[int64]int64{}
	for _, s := range l.closed {
		before[s.seq] = s.size
	}
	n, err := l.Erase("d1")
	require.NoError(t, err)
	var wantN int
	all = slices.DeleteFunc(all, func(e Event) bool {
		if e.Device == "d1" {
			wantN++
			return true
		}
		return false
	})
	require.Equal(t, wantN, n)
	checkQueries(t, l, all)
	require.NoError(t, l.Append(Event{Time: 9000, Device: "d1", Name: "n0"}))
	require.NoError(t, l.Close())
	l, err = OpenOptions(dir, opts)
	require.NoError(t, err)
	all = append(all, Event{Time: 9000, Device: "d1", Name: "n0"})
	checkQueries(t, l, all)
	require.NoError(t, l.Close())
}

func TestEraseSkipsSegmentsWithoutDevice(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenOptions(dir, Options{SegmentBytes: 1})
	require.NoError(t, err)
	for i, d := range []string{"a", "b", "a"} {
		require.NoError(t, l.Append(Event{Time: int64(i), Device: d, Name: "x"}))
		require.NoError(t, l.Flush(false))
	}
	st, err := os.Stat(segPath(dir, 2))
	require.NoError(t, err)
	n, err := l.Erase("a")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	st2, err := os.Stat(segPath(dir, 2))
	require.NoError(t, err)
	require.True(t, os.SameFile(st, st2), "the segment without the device is not rewritten")
	got, err := l.List(Query{})
	require.NoError(t, err)
	require.Equal(t, []Event{{Time: 1, Device: "b", Name: "x"}}, got)
	require.NoError(t, l.Close())
}

func TestDropBefore(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenOptions(dir, Options{SegmentBytes: 50})
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, l.Append(Event{Time: int64(i) * 1000, Device: "d", Name: "x"}, Event{Time: int64(i)*1000 + 1, Device: "d", Name: "x"}))
		require.NoError(t, l.Flush(false))
	}
	n, err := l.DropBefore(4000)
	require.NoError(t, err)
	require.Equal(t, 4, n, "whole segments whose every event is older")
	got, err := l.List(Query{Limit: 100})
	require.NoError(t, err)
	require.Len(t, got, 12)
	require.Equal(t, int64(4000), got[len(got)-1].Time)
	require.NoFileExists(t, segPath(dir, 1))
	require.NoFileExists(t, idxPath(dir, 1))

	// The active segment goes too once all of it is older; appending goes on.
	n, err = l.DropBefore(20000)
	require.NoError(t, err)
	require.Equal(t, 6, n)
	got, err = l.List(Query{})
	require.NoError(t, err)
	require.Empty(t, got)
	require.NoError(t, l.Append(Event{Time: 30000, Device: "d", Name: "x"}))
	require.NoError(t, l.Close())
	l, err = OpenOptions(dir, Options{SegmentBytes: 50})
	require.NoError(t, err)
	got, err = l.List(Query{})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.NoError(t, l.Close())
}

func TestOpenMigratesOneFile(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	var all []Event
	for i := range 50 {
		e := Event{Time: int64(i), Device: fmt.Sprint("d", i%3), Name: "x"}
		all = append(all, e)
		line, _ := json.Marshal(e)
		b.Write(append(line, '\n'))
	}
	b.WriteString(`{"t":99,"dev`) // torn
	require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), b.Bytes(), 0o600))
	l, err := OpenOptions(dir, Options{SegmentBytes: 1 << 10})
	require.NoError(t, err)
	require.NoFileExists(t, filepath.Join(dir, FileName))
	require.FileExists(t, idxPath(dir, 0), "the migrated file is over the segment size: closed")
	checkQueries(t, l, all)
	require.NoError(t, l.Append(Event{Time: 100, Device: "d0", Name: "x"}))
	require.NoError(t, l.Close())
	l, err = OpenOptions(dir, Options{SegmentBytes: 1 << 10})
	require.NoError(t, err)
	checkQueries(t, l, append(all, Event{Time: 100, Device: "d0", Name: "x"}))
	require.NoError(t, l.Close())
}

func TestBackupCopiesFlushedPrefix(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenOptions(dir, Options{SegmentBytes: 200})
	require.NoError(t, err)
	all := randomEvents(rand.New(rand.NewPCG(3, 4)), 40, 0)
	require.NoError(t, l.Append(all...))
	require.NoError(t, l.Flush(false))
	require.NoError(t, l.Append(Event{Time: 5000, Device: "late", Name: "x"})) // not flushed
	out := t.TempDir()
	require.NoError(t, l.Backup(func(name string, size int64, r io.Reader) error {
		b, err := io.ReadAll(r)
		require.Len(t, b, int(size))
		require.NoError(t, err)
		return os.WriteFile(filepath.Join(out, name), b, 0o600)
	}))
	require.NoError(t, l.Close())
	c, err := Open(out)
	require.NoError(t, err)
	checkQueries(t, c, all)
	require.NoError(t, c.Close())
}

func TestLineTime(t *testing.T) {
	for _, tc := range []struct {
		line string
		t    int64
		ok   bool
	}{
		{`{"t":123,"device":"d"}`, 123, true},
		{`{"t":-5,"device":"d"}`, -5, true},
		{`{"t":,"device":"d"}`, 0, false},
		{`{"device":"d","t":1}`, 0, false},
		{`{"t":12345678901234567890,"d":1}`, 0, false},
	} {
		got, ok := lineTime([]byte(tc.line))
		require.Equal(t, tc.ok, ok, tc.line)
		require.Equal(t, tc.t, got, tc.line)
	}
}

// TestConcurrentUse: appends that roll segments while List, Backup, Erase and DropBefore run
// (run it with -race).
func TestConcurrentUse(t *testing.T) {
	l, err := OpenOptions(t.TempDir(), Options{SegmentBytes: 512})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 400 {
			if l.Append(Event{Time: int64(i), Device: fmt.Sprint("d", i%4), Name: "x"}) == nil {
				_ = l.Flush(false)
			}
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			got, err := l.List(Query{Device: "d2", Limit: 1000})
			require.NoError(t, err)
			require.NotEmpty(t, got)
			require.NoError(t, l.Close())
			return
		default:
		}
		_, err := l.List(Query{Name: "x", Limit: 5})
		require.NoError(t, err)
		require.NoError(t, l.Backup(func(string, int64, io.Reader) error { return nil }))
		if i%10 == 0 {
			_, err = l.Erase("d1")
			require.NoError(t, err)
			_, err = l.DropBefore(int64(i / 10))
			require.NoError(t, err)
		}
	}
}
