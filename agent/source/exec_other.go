//go:build !unix

package source

import "os/exec"

// prepareCommand leaves the command as it is: without process groups a
// timeout kills only the process the agent started.
func prepareCommand(*exec.Cmd) {}

func killGroup(*exec.Cmd) {}
