package registry

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/registry/registrytest"
)

func TestMigrationsIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		_, err := r.CreateDevice(ctx, "dev-1", nil, nil, "o-test", "")
		require.NoError(t, err)

		// Opening again, several at once, migrates nothing and loses nothing.
		var wg sync.WaitGroup
		others := make([]*Registry, 4)
		errs := make([]error, len(others))
		for i := range others {
			wg.Go(func() { others[i], errs[i] = Open(ctx, testURL(t, r), "", nil) })
		}
		wg.Wait()
		for i, o := range others {
			require.NoError(t, errs[i])
			dev, err := o.Device(ctx, "dev-1")
			require.NoError(t, err)
			require.Equal(t, StatusPending, dev.Status)
			require.NoError(t, o.Close())
		}
		var versions []int
		rows, err := r.db.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
		require.NoError(t, err)
		for rows.Next() {
			var v int
			require.NoError(t, rows.Scan(&v))
			versions = append(versions, v)
		}
		require.NoError(t, rows.Err())
		require.NoError(t, rows.Close())
		var want []int
		for _, m := range migrations {
			want = append(want, m.version)
		}
		require.Equal(t, want, versions)

		// A schema from a newer build is refused rather than misread.
		_, err = r.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)`, SchemaVersion()+1)
		require.NoError(t, err)
		_, err = Open(ctx, testURL(t, r), "", nil)
		require.ErrorContains(t, err, "newer than this build")
	})
}

func TestMigrationsConcurrentFresh(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		url := testURL(t, r)
		if r.Backend() == BackendSQLite {
			url = "sqlite://" + filepath.Join(t.TempDir(), "fresh.db")
		} else {
			url = registrytest.SchemaURL(t)
		}
		var wg sync.WaitGroup
		regs := make([]*Registry, 4)
		errs := make([]error, len(regs))
		for i := range regs {
			wg.Go(func() { regs[i], errs[i] = Open(ctx, url, "", nil) })
		}
		wg.Wait()
		for i, o := range regs {
			require.NoError(t, errs[i])
			n, err := o.CountDevices(ctx)
			require.NoError(t, err)
			require.Zero(t, n)
			require.NoError(t, o.Close())
		}
	})
}

// TestReopen closes the database and opens it again: everything is still there.
func TestReopen(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		url := testURL(t, r)
		dataDir := ""
		if r.Backend() == BackendSQLite {
			// The default location: no URL, a data directory that does not exist yet.
			dataDir = filepath.Join(t.TempDir(), "data")
			url = ""
		}
		clk := clock.NewFake(testStart)
		r1, err := Open(ctx, url, dataDir, clk)
		require.NoError(t, err)
		tok, err := r1.CreateEnrollmentTokens(ctx, TokenSpec{}, "o-test")
		require.NoError(t, err)
		dev, _, err := r1.Enroll(ctx, tok[0], "mx", "", newTestCA(t, clk.Now).issuer(t))
		require.NoError(t, err)
		require.NoError(t, r1.Close())

		if r.Backend() == BackendSQLite {
			fi, err := os.Stat(filepath.Join(dataDir, SQLiteFile))
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
			fi, err = os.Stat(dataDir)
			require.NoError(t, err)
			require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
		}

		r2, err := Open(ctx, url, dataDir, clk)
		require.NoError(t, err)
		defer func() { require.NoError(t, r2.Close()) }()
		got, err := r2.Device(ctx, dev.ID)
		require.NoError(t, err)
		require.Equal(t, dev, got)
		_, _, err = r2.Enroll(ctx, tok[0], "mx", "", newTestCA(t, clk.Now).issuer(t))
		require.ErrorIs(t, err, ErrTokenUsed)

		if r.Backend() == BackendSQLite {
			var mode string
			require.NoError(t, r2.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode))
			require.Equal(t, "wal", mode)
			var fk int
			require.NoError(t, r2.db.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk))
			require.Equal(t, 1, fk)

			// The same file through the URL forms.
			abs := filepath.Join(dataDir, SQLiteFile)
			t.Chdir(dataDir)
			for _, u := range []string{"sqlite://" + abs, "sqlite:" + abs, "sqlite:" + SQLiteFile, "sqlite:./" + SQLiteFile} {
				r3, err := Open(ctx, u, "", nil)
				require.NoError(t, err, u)
				got, err := r3.Device(ctx, dev.ID)
				require.NoError(t, err, u)
				require.Equal(t, dev, got)
				require.NoError(t, r3.Close())
			}
		}
	})
}

func TestOpenRejectsBadURLs(t *testing.T) {
	ctx := context.Background()
	for _, u := range []string{"mysql://localhost/db", "sqlite://relative.db", "sqlite:", "sqlite:/tmp/x.db?mode=ro", "file:/tmp/x.db"} {
		_, err := Open(ctx, u, t.TempDir(), nil)
		require.ErrorIs(t, err, ErrInvalid, u)
	}
	_, err := Open(ctx, "", "", nil)
	require.ErrorIs(t, err, ErrInvalid)
	// The password never appears in errors.
	_, err = Open(ctx, "postgres://u:sekrit@127.0.0.1:1/db?connect_timeout=1", "", nil)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "sekrit")
}
