package agentcli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/estclient"
)

// rotator renews the certificate named in the configuration through tls.est_server.
func rotator(cfg agent.Config, logger *slog.Logger) (*estclient.Rotator, error) {
	var roots *x509.CertPool
	if cfg.TLS.CAFile != "" {
		pem, err := os.ReadFile(cfg.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s holds no certificate", cfg.TLS.CAFile)
		}
	}
	return &estclient.Rotator{
		CertPath: cfg.TLS.CertFile,
		KeyPath:  cfg.TLS.KeyFile,
		Client:   &estclient.Client{Server: cfg.TLS.ESTServer, Roots: roots},
		Log:      logger.With("component", "renewal"),
	}, nil
}

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
	var rotErr chan error
	stopRotator := func() {}
	if cfg.TLS.ESTServer != "" {
		rot, err := rotator(cfg, logger)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rotErr = make(chan error, 1)
		go func() { rotErr <- rot.Run(rctx) }()
		stopRotator = func() {
			cancel()
			if err := <-rotErr; err != nil && !errors.Is(err, context.Canceled) {
				logger.Error("certificate renewal stopped", "error", err)
			}
		}
	}
	err = a.Run(ctx)
	if errors.Is(err, agent.ErrRestartRequested) {
		// The agent answered the command and closed its spool: start afresh, as the same
		// process (same PID, arguments and environment), so that a service manager sees no
		// exit.
		stopRotator()
		logger.Info("millwright-agent restarting, as the server asked")
		return reexec()
	}
	if err != nil {
		return fmt.Errorf("stop agent: %w", err)
	}
	if rotErr != nil {
		select {
		case err := <-rotErr:
			if err != nil {
				logger.Error("certificate renewal stopped", "error", err)
			}
		default:
		}
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
