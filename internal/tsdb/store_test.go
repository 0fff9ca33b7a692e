package tsdb

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
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
	app := s.Appender(context.Background())
	_, err = app.Append(0, lset, now, 1)
	require.NoError(t, err)
	require.NoError(t, app.Commit())
	require.NoError(t, s.Sync())

	// A segment appears, as when the TSDB cuts one: the syncer moves to it.
	next := filepath.Join(dir, "wal", "00000001")
	require.NoError(t, os.WriteFile(next, nil, 0o644))
	require.NoError(t, s.Sync())
	require.Equal(t, next, s.wal.f.Name())
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
