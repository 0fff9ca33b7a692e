package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/millwright/millwright/agent"
)

// runCmd runs the agent until SIGINT or SIGTERM.
func runCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs, path := newFlags("run", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := agent.LoadConfig(*path)
	if err != nil {
		return err
	}
	singleProc()
	logger, level := cfg.Log.NewLeveledLogger(stderr)
	a, err := agent.New(cfg, agent.Options{Logger: logger, LogLevel: level})
	if err != nil {
		return err
	}
	logger.Info("millwright-agent starting", "version", Version(), "pid", os.Getpid(), "spool", cfg.Spool.Dir)
	// The agent renews its certificate itself when tls.est_server is set.
	err = a.Run(ctx)
	if errors.Is(err, agent.ErrRestartRequested) {
		// The agent answered the command and closed its spool: start afresh, as the same
		// process (same PID, arguments and environment), so that a service manager sees no
		// exit.
		logger.Info("millwright-agent restarting, as the server asked")
		return reexec()
	}
	if err != nil {
		return fmt.Errorf("stop agent: %w", err)
	}
	logger.Info("millwright-agent stopped")
	return nil
}

// singleProc runs the agent's goroutines on one OS thread at a time
// (GOMAXPROCS=1) unless the GOMAXPROCS environment variable says otherwise.
// The agent's work comes in small bursts (a local API request, a sample, a
// send cycle); with more than one P the Go scheduler wakes idle threads to
// look for work at each burst, which costs more CPU, in futex and
// scheduler time, than the burst itself (measured with bench/agent and
// perf: docs/benchmarks.md).
func singleProc() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
}
