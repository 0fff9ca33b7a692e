// Package agentcli is the millwright-agent command line: one file per
// subcommand, built on the standard flag package to keep the device binary
// small. cmd/millwright-agent hands os.Args to Main.
package agentcli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
)

// Main runs the command line with args (without the program name) and
// returns the process exit code: 0 on success, 1 on failure, 2 on a usage
// error.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCmd(ctx, args[1:], stdout, stderr)
	case "enroll":
		err = enrollCmd(ctx, args[1:], stdout, stderr)
	case "check":
		err = checkCmd(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		err = printVersion(stdout)
	case "help", "-h", "-help", "--help":
		usage(stdout)
	default:
		fmt.Fprintf(stderr, "millwright-agent: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "millwright-agent:", err)
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// usageError marks errors in how the command was called.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usage(w io.Writer) {
	fmt.Fprint(w, `millwright-agent: the Millwright device agent

Usage:
  millwright-agent enroll --server URL --ca FILE --token T [--dir DIR] [--model M]
                                         make the device key and enroll it with a one-time token
  millwright-agent run --config FILE     run the agent
  millwright-agent check --config FILE   check the configuration and credentials, then exit
  millwright-agent version               print the version, revision, build date and Go version
                                         (also --version)

docs/agent.md describes every configuration key.
`)
}

// newFlags returns a flag set for a subcommand with its --config flag.
func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", "/etc/millwright/agent.yml", "configuration `FILE`")
	return fs, cfg
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}
