package registry

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// TestLeadership: of two servers sharing a PostgreSQL registry one leads; the other takes over
// when the first gives up or its connection dies; the lock is per schema, so other registries
// on the same PostgreSQL are not held back. On SQLite the one server always leads.
func TestLeadership(t *testing.T) {
	ctx := context.Background()
	a := openTest(t, BackendPostgres)
	b, err := Open(ctx, testURL(t, a), "", clock.NewFake(testStart))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	other := openTest(t, BackendPostgres)

	la, lb, lo := a.Leadership("rollout-engine"), b.Leadership("rollout-engine"), other.Leadership("rollout-engine")
	for range 2 {
		ok, err := la.Leading(ctx)
		require.NoError(t, err)
		require.True(t, ok, "the first server leads, and keeps leading")
		ok, err = lb.Leading(ctx)
		require.NoError(t, err)
		require.False(t, ok, "the second waits")
	}
	ok, err := lo.Leading(ctx)
	require.NoError(t, err)
	require.True(t, ok, "another registry's lock is its own")
	ok, err = a.Leadership("other-work").Leading(ctx)
	require.NoError(t, err)
	require.True(t, ok, "another name is another lock")

	require.NoError(t, la.Close())
	ok, err = lb.Leading(ctx)
	require.NoError(t, err)
	require.True(t, ok, "the second takes over once the first gives up")
	ok, err = la.Leading(ctx)
	require.NoError(t, err)
	require.False(t, ok)

	// The leader's session dies (its server is killed): PostgreSQL drops its locks.
	_, err = a.db.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()
		AND objid = (hashtextextended('rollout-engine/' || current_schema(), 0) & x'ffffffff'::bigint)::oid`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		ok, err := la.Leading(ctx)
		return err == nil && ok
	}, 10*time.Second, 10*time.Millisecond, "the first takes the lock back")
	ok, err = lb.Leading(ctx)
	require.NoError(t, err)
	require.False(t, ok, "the second notices its connection died and does not lead")
	require.NoError(t, la.Close())
	require.NoError(t, lb.Close())

	s := openTest(t, BackendSQLite)
	ok, err = s.Leadership("rollout-engine").Leading(ctx)
	require.NoError(t, err)
	require.True(t, ok)
}
