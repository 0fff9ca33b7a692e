//go:build unix

package source

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// OwnProcessGroup puts the command in a process group of its own, so that a
// timeout kills the whole tree it started (a shell and its children), not
// just the process the agent started.
func OwnProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
}

// killGroup kills what is left of the command's process group after it
// exited: background children that would otherwise pile up, one set per
// run.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil && cmd.Process.Pid > 0 {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
