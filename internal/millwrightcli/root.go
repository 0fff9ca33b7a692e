// Package millwrightcli is the millwright command line: one file per subcommand, all built on cobra.
package millwrightcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Main runs the command line with args and returns the process exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	return mainIO(args, os.Stdin, stdout, stderr)
}

// mainIO is Main reading standard input from stdin.
func mainIO(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root := newRoot(stdout, stderr)
	root.SetIn(stdin)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "millwright:", err)
		var u usageError
		if errors.As(err, &u) {
			return 2
		}
		var x exitError
		if errors.As(err, &x) {
			return x.code
		}
		return 1
	}
	return 0
}

// usageError marks errors in how the command was called.
type usageError struct{ error }

// exitError ends the program with its own exit status.
type exitError struct {
	error
	code int
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "millwright",
		Short:         "Millwright: a self-hosted platform for industrial IoT fleets",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newServerCmd(), newDevCmd(), newTokensCmd(), newDevicesCmd(), newConfigCmd(), newCommandsCmd(), newOperatorsCmd(), newAnomaliesCmd(), newTrendsCmd(), newFirmwareCmd(), newRolloutsCmd(), newFeedbackCmd(), newAuditCmd(), newClustersCmd(), newGatewaysCmd(), newSimCmd())
	root.AddCommand(newVersionCmd(), newBackupCmd(), newRestoreCmd())
	setVersion(root)
	return root
}

// newLogger makes the process logger: text on stderr at the given level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, usageError{fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", level)}
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
