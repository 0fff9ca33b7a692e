//go:build unix

package agentcli

import (
	"fmt"
	"os"
	"syscall"
)

// reexec replaces the process with a new run of the same executable, with the same
// arguments and environment (execve(2)). It returns only on failure.
func reexec() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: find the executable: %w", err)
	}
	if err := syscall.Exec(exe, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("restart: execute %s: %w", exe, err)
	}
	return nil
}
