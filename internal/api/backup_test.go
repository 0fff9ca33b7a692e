package api_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
)

// TestBackupTimeout: a backup whose client stops reading is cut at BackupTimeout, counted from
// its authorization, past the server's own shorter write deadline while it sends; the backup
// sees the deadline, not a hang.
func TestBackupTimeout(t *testing.T) {
	const timeout = 500 * time.Millisecond
	done := make(chan error, 1)
	started := make(chan time.Time, 1)
	srv := httptest.NewUnstartedServer(api.Handler(api.Config{
		Authenticate: func(context.Context, string) (api.Principal, error) {
			return api.Principal{Name: "admin", Role: registry.RoleAdmin}, nil
		},
		Backup: func(_ context.Context, _, _ string, w io.Writer) error {
			started <- time.Now()
			chunk := make([]byte, 64<<10)
			for {
				if _, err := w.Write(chunk); err != nil {
					done <- err
					return err
				}
			}
		},
		BackupTimeout: timeout,
	}))
	srv.Config.WriteTimeout = 50 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/backup", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/gzip", resp.Header.Get("Content-Type"))
	// The client reads nothing more: the server's writes block until the deadline.
	began := <-started
	select {
	case err := <-done:
		require.True(t, errors.Is(err, os.ErrDeadlineExceeded), "%v", err)
		took := time.Since(began)
		require.GreaterOrEqual(t, took, timeout-50*time.Millisecond, "cut at the server's write deadline instead")
		require.Less(t, took, 10*time.Second)
	case <-time.After(30 * time.Second):
		t.Fatal("the backup was not cut at its deadline")
	}
}

// TestBackupUnavailable: a server without backups answers 503.
func TestBackupUnavailable(t *testing.T) {
	srv := httptest.NewServer(api.Handler(api.Config{
		Authenticate: func(context.Context, string) (api.Principal, error) {
			return api.Principal{Name: "admin", Role: registry.RoleAdmin}, nil
		},
	}))
	t.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/backup", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}
