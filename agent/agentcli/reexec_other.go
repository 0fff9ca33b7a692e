//go:build !unix

package agentcli

import "errors"

// reexec cannot replace the process here: the agent exits with an error, and its service
// manager starts it again.
func reexec() error {
	return errors.New("restart requested by the server: this system cannot re-execute a process; exiting for the service manager to restart it")
}
