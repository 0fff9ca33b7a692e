package tsdb

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// TestSnapshotAndReady: a snapshot of an open store, head and out-of-order head included
// (the samples are appended newest first), opens as a store with the same samples; Ready
// reports an open store, and ErrClosed once it is closed, when a snapshot is refused.
func TestSnapshotAndReady(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "tsdb"), Options{}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, s.Ready())
	now := time.Now().UnixMilli()
	app, err := s.Appender(context.Background())
	require.NoError(t, err)
	for i := range 100 {
		_, err = app.Append(0, labels.FromStrings(labels.MetricName, "x", "device", "d"), now-int64(i)*1000, float64(i))
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())

	snap := filepath.Join(dir, "snap")
	require.NoError(t, s.Snapshot(context.Background(), snap))
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Ready(), ErrClosed)
	require.ErrorIs(t, s.Snapshot(context.Background(), filepath.Join(dir, "again")), ErrUnavailable)

	c, err := Open(snap, Options{}, nil, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, c.Close()) }()
	q, err := c.Querier(now-200_000, now+1)
	require.NoError(t, err)
	n := countSamples(t, q, "d")
	require.NoError(t, q.Close())
	require.Equal(t, 100, n)
}
