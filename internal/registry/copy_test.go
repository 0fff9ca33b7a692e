package registry

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCopyTo: a SQLite registry's copy opens as a registry with the same devices, taken while
// the registry serves; PostgreSQL's is refused with ErrNotSQLite.
func TestCopyTo(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "copy-1", map[string]string{"site": "a"}, []string{"line-1"}, "admin", "")
		require.NoError(t, err)
		dst := filepath.Join(t.TempDir(), SQLiteFile)
		err = r.CopyTo(ctx, dst)
		if r.Backend() == BackendPostgres {
			require.ErrorIs(t, err, ErrNotSQLite)
			return
		}
		require.NoError(t, err)
		// The registry goes on after the copy; what it writes later is not in it.
		_, err = r.CreateDevice(ctx, "copy-2", nil, nil, "admin", "")
		require.NoError(t, err)

		c, err := Open(ctx, "sqlite://"+dst, "", nil)
		require.NoError(t, err)
		defer func() { require.NoError(t, c.Close()) }()
		d, err := c.Device(ctx, "copy-1")
		require.NoError(t, err)
		require.Equal(t, map[string]string{"site": "a"}, d.Tags)
		require.Equal(t, []string{"line-1"}, d.Groups)
		_, err = c.Device(ctx, "copy-2")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// TestPing: an open registry answers; a closed one does not.
func TestPing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		require.NoError(t, r.Ping(context.Background()))
	})
	r, err := Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "r.db"), "", nil)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.ErrorContains(t, r.Ping(context.Background()), "ping registry")
}
