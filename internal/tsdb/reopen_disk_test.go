package tsdb

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// TestReopenWaitsForSpace: on a full disk Reopen refuses with ErrDiskFull and leaves the open
// TSDB as it was (closing it would write chunks, which the TSDB panics on failing); once space
// returns it reopens. The test mounts a small tmpfs, which needs root, as the suite has.
func TestReopenWaitsForSpace(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s (the test needs root to make a small filesystem it can fill): %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	s, err := Open(filepath.Join(dir, "tsdb"), Options{}, nil, prometheus.NewRegistry())
	require.NoError(t, err)
	defer s.Close()

	ballast := filepath.Join(dir, "ballast")
	f, err := os.Create(ballast)
	require.NoError(t, err)
	chunk := bytes.Repeat([]byte{1}, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			require.True(t, errors.Is(err, syscall.ENOSPC), "filling the disk: %v", err)
			break
		}
	}
	require.NoError(t, f.Close())
	require.ErrorIs(t, s.Reopen(), ErrDiskFull)
	_, err = s.Appender(context.Background())
	require.NoError(t, err, "the open TSDB is left as it was")

	require.NoError(t, os.Remove(ballast))
	require.NoError(t, s.Reopen())
	_, err = s.Appender(context.Background())
	require.NoError(t, err)
}
