package agentcli

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/millwright/millwright/agent"
)

// checkCmd loads the configuration and the credentials and reports what the
// agent would do, without opening the spool or the network.
func checkCmd(args []string, stdout, stderr io.Writer) error {
	fs, path := newFlags("check", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		return err
	}
	info, err := agent.Describe(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "configuration %s is valid\n", filepath.Clean(*path))
	fmt.Fprintf(stdout, "device:      %s\n", info.DeviceID)
	fmt.Fprintf(stdout, "endpoint:    %s (%s)\n", info.Endpoint, cfg.Uplink.Transport)
	fmt.Fprintf(stdout, "server name: %s\n", info.ServerName)
	fmt.Fprintf(stdout, "spool:       %s\n", cfg.Spool.Dir)
	fmt.Fprintf(stdout, "schedule:    every %v + up to %v\n", cfg.Schedule.Interval, cfg.Schedule.Jitter)
	return nil
}
