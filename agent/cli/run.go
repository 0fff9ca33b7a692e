package cli

import (
	"context"
	"fmt"
	"io"
	"os"

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
	logger := cfg.Log.NewLogger(stderr)
	a, err := agent.New(cfg, agent.Options{Logger: logger})
	if err != nil {
		return err
	}
	logger.Info("millwright-agent starting", "version", Version(), "pid", os.Getpid(), "spool", cfg.Spool.Dir)
	if err := a.Run(ctx); err != nil {
		return fmt.Errorf("stop agent: %w", err)
	}
	logger.Info("millwright-agent stopped")
	return nil
}
