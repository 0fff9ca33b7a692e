package datadir

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary hold a lock as a child process: with
// MILLWRIGHT_TEST_LOCK=DIR it takes DIR's lock, says "locked" and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MILLWRIGHT_TEST_LOCK"); dir != "" {
		if _, err := Acquire(dir); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		select {}
	}
	os.Exit(m.Run())
}

func TestLockInProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := Acquire(dir)
	require.NoError(t, err)
	_, err = Acquire(dir)
	require.ErrorIs(t, err, ErrInUse)
	require.EqualError(t, err, fmt.Sprintf("data directory in use: data directory %s in use by PID %d", dir, os.Getpid()))
	require.NoError(t, l.Release())
	require.NoError(t, l.Release(), "releasing twice does nothing")
	l, err = Acquire(dir)
	require.NoError(t, err)
	require.NoError(t, l.Release())
}

// TestLockOtherProcess: another process's lock names its PID, and goes with the process when
// it is killed with SIGKILL.
func TestLockOtherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MILLWRIGHT_TEST_LOCK="+dir)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "locked\n", line)

	_, err = Acquire(dir)
	require.ErrorIs(t, err, ErrInUse)
	require.ErrorContains(t, err, fmt.Sprintf("data directory %s in use by PID %d", dir, cmd.Process.Pid))

	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	l, err := Acquire(dir)
	require.NoError(t, err)
	require.NoError(t, l.Release())
}

func TestStamp(t *testing.T) {
	dir := t.TempDir()
	s, err := Check(dir, "1.0.0")
	require.NoError(t, err)
	require.Equal(t, Stamp{Format: 1}, s, "a directory from before stamps is format 1")

	require.NoError(t, Write(dir, "1.0.0"))
	s, err = Check(dir, "1.0.0")
	require.NoError(t, err)
	require.Equal(t, Stamp{Format: Format, Version: "1.0.0"}, s)

	for _, tc := range []struct{ content, want string }{
		{fmt.Sprintf(`{"format": %d, "version": "9.1.0"}`, Format+1), fmt.Sprintf(
			`data directory from a newer Millwright: %s is in format %d, written by Millwright 9.1.0; this Millwright 1.0.0 reads format %d and older: run Millwright 9.1.0 or newer, or restore a backup made by this version (docs/operations.md "Upgrading")`,
			dir, Format+1, Format)},
		{`{"format": 0}`, fmt.Sprintf(`data directory stamp %s is damaged (want {"format": N, "version": V}): "{\"format\": 0}"`, filepath.Join(dir, StampFile))},
		{`garbage`, fmt.Sprintf(`data directory stamp %s is damaged (want {"format": N, "version": V}): "garbage"`, filepath.Join(dir, StampFile))},
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, StampFile), []byte(tc.content), 0o644))
		_, err := Check(dir, "1.0.0")
		require.EqualError(t, err, tc.want)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, StampFile), []byte(fmt.Sprintf(`{"format": %d}`, Format+1)), 0o644))
	_, err = Check(dir, "1.0.0")
	require.ErrorIs(t, err, ErrNewerFormat)
}
