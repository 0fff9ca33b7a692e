package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/buildinfo"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/datadir"
	"github.com/millwright/millwright/internal/server"
)

func dataDirOptions(dir string) server.Options {
	opts := server.DefaultOptions()
	opts.DataDir = dir
	opts.MQTT.Listen = "127.0.0.1:0"
	opts.HTTPListen = "127.0.0.1:0"
	return opts
}

// TestDataDirInUse: a second server on a running server's data directory is refused, naming
// the process that has it; once the first stops, it starts.
func TestDataDirInUse(t *testing.T) {
	s := startServer(t, nil)
	_, err := server.New(dataDirOptions(s.dir), clock.Real(), nil)
	require.ErrorIs(t, err, datadir.ErrInUse)
	require.ErrorContains(t, err, fmt.Sprintf("data directory %s in use by PID %d", s.dir, os.Getpid()))
	require.NoError(t, s.Close())
	again, err := server.New(dataDirOptions(s.dir), clock.Real(), nil)
	require.NoError(t, err)
	require.NoError(t, again.Close())
}

// TestDataDirStamp: a server stamps its data directory with today's format and its version,
// and refuses one stamped by a newer format without touching it.
func TestDataDirStamp(t *testing.T) {
	dir := t.TempDir()
	srv, err := server.New(dataDirOptions(dir), clock.Real(), nil)
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	st, err := datadir.ReadStamp(dir)
	require.NoError(t, err)
	require.Equal(t, datadir.Stamp{Format: datadir.Format, Version: buildinfo.Get().Version}, st)

	newer := t.TempDir()
	stamp := fmt.Appendf(nil, `{"format": %d, "version": "99.0.0"}`, datadir.Format+1)
	require.NoError(t, os.WriteFile(filepath.Join(newer, datadir.StampFile), stamp, 0o644))
	_, err = server.New(dataDirOptions(newer), clock.Real(), nil)
	require.ErrorIs(t, err, datadir.ErrNewerFormat)
	require.ErrorContains(t, err, "written by Millwright 99.0.0")
	entries, err := os.ReadDir(newer)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{datadir.StampFile, datadir.LockFile}, names, "nothing but the lock is made in a directory refused")
	b, err := os.ReadFile(filepath.Join(newer, datadir.StampFile))
	require.NoError(t, err)
	require.Equal(t, stamp, b)
}
