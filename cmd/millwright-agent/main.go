// Command millwright-agent is the Millwright device agent: it stores every
// measurement on the device first and delivers it in batches to the server.
// It imports only the agent and protocol packages, never the server.
package main

import (
	"os"

	"github.com/millwright/millwright/agent/agentcli"
)

func main() {
	os.Exit(agentcli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
