package tsdb

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
)

// TestSyncFollowsSegments commits, syncs and reopens, across a WAL segment the syncer did not
// know when it started.
func TestSyncFollowsSegments(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	require.Equal(t, SyncAlways, s.Options().Sync)
	now := time.Now().UnixMilli()
	lset := labels.FromStrings(labels.MetricName, "x", "device", "d")
	app, err := s.Appender(context.Background())
	require.NoError(t, err)
	_, err = app.Append(0, lset, now, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	require.NoError(t, s.Sync())

	// A segment appears, as when the TSDB cuts one: the syncer moves to it.
	next := filepath.Join(dir, "wal", "00000001")
	require.NoError(t, os.WriteFile(next, nil, 0o644))
	require.NoError(t, s.Sync())
	require.Equal(t, next, s.gen.wal.f.Name())
	require.NoError(t, os.Remove(next))
	require.NoError(t, s.Close())

	s, err = Open(dir, Options{}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	defer s.Close()
	q, err := s.Queryable().Querier(now-1, now+1)
	require.NoError(t, err)
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "device", "d"))
	require.True(t, set.Next())
	it := set.At().Iterator(nil)
	require.NotZero(t, it.Next())
	ts, v := it.At()
	require.Equal(t, now, ts)
	require.Equal(t, 1.0, v)
}

func TestParseSyncPolicy(t *testing.T) {
	for _, ok := range []string{"always", "never"} {
		_, err := ParseSyncPolicy(ok)
		require.NoError(t, err)
	}
	_, err := ParseSyncPolicy("sometimes")
	require.ErrorContains(t, err, `unknown fsync policy "sometimes"`)
}

// TestReopen closes and opens the TSDB in place: what was committed is still there, a querier
// open across the reopen keeps working until closed, new queriers wait for the open, and the
// metrics of the TSDB are registered again without a conflict.
func TestReopen(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(t.TempDir(), Options{}, nil, reg)
	require.NoError(t, err)
	defer s.Close()
	now := time.Now().UnixMilli()
	appendOne := func(ts int64, v float64) {
		t.Helper()
		app, err := s.Appender(context.Background())
		require.NoError(t, err)
		_, err = app.Append(0, labels.FromStrings(labels.MetricName, "x", "device", "d"), ts, v)
		require.NoError(t, err)
		require.NoError(t, app.Commit())
		require.NoError(t, s.Sync())
	}
	appendOne(now, 1)

	q, err := s.Querier(now-1, now+1)
	require.NoError(t, err)
	reopened := make(chan error, 1)
	go func() { reopened <- s.Reopen() }()
	// The reopen waits for the open querier; meanwhile the store refuses new work.
	require.Eventually(t, func() bool { return s.DB() == nil }, 10*time.Second, time.Millisecond)
	_, err = s.Querier(now-1, now+1)
	require.ErrorIs(t, err, ErrUnavailable)
	_, err = s.Appender(context.Background())
	require.ErrorIs(t, err, ErrUnavailable)
	require.Equal(t, 1, countSamples(t, q, "d"))
	require.NoError(t, q.Close())
	require.NoError(t, <-reopened)

	appendOne(now+1, 2)
	v, ok, err := s.MaxValue(context.Background(), "x", "d")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 2.0, v)
	mfs, err := reg.Gather()
	require.NoError(t, err)
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "prometheus_tsdb_head_series"
	}
	require.True(t, found, "the reopened TSDB's metrics are registered")
}

// TestReopenRepairsTornWAL writes a torn record at the end of the WAL, as a write that fails
// part way on a full disk leaves it: a reopen cuts it off, and what is committed after the
// reopen survives the next open — where appending behind the torn record would have been
// deleted by that open's repair.
func TestReopenRepairsTornWAL(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	now := time.Now().UnixMilli()
	lset := labels.FromStrings(labels.MetricName, "x", "device", "d")
	commit := func(ts int64) {
		t.Helper()
		app, err := s.Appender(context.Background())
		require.NoError(t, err)
		_, err = app.Append(0, lset, ts, float64(ts-now))
		require.NoError(t, err)
		require.NoError(t, app.Commit())
		require.NoError(t, s.Sync())
	}
	commit(now)
	// A torn record: the header of a first fragment (type 2) claiming more bytes than follow.
	seg := s.gen.wal.f.Name()
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{2, 0, 200, 0, 0, 0, 0, 1, 2, 3})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, s.Reopen())
	for i := range 10 {
		commit(now + 1 + int64(i))
	}
	require.NoError(t, s.Close())

	s, err = Open(dir, Options{}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	defer s.Close()
	q, err := s.Querier(now-1, now+100)
	require.NoError(t, err)
	defer q.Close()
	require.Equal(t, 11, countSamples(t, q, "d"))
}

func countSamples(t *testing.T, q storage.Querier, device string) int {
	t.Helper()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "device", device))
	n := 0
	for set.Next() {
		it := set.At().Iterator(nil)
		for it.Next() != chunkenc.ValNone {
			n++
		}
	}
	require.NoError(t, set.Err())
	return n
}
