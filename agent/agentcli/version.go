package agentcli

import (
	"io"

	"github.com/millwright/millwright/buildinfo"
)

// Version returns the agent's version: the release build's, else the module version, else
// "devel" (package buildinfo).
func Version() string { return buildinfo.Get().Version }

// printVersion writes what `millwright-agent version` and `--version` print: the same build
// information the server's /api/v1/status/buildinfo reports.
func printVersion(w io.Writer) error { return buildinfo.Get().Print(w, "millwright-agent") }
