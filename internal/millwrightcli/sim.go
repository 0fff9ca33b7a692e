package millwrightcli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/internal/sim"
)

func newSimCmd() *cobra.Command {
	var (
		cfg                               sim.Config
		profile, spoolSync, backoffJitter string
		logLevel, agentLogLevel           string
		jitter, keepalive                 time.Duration
		asJSON, register                  bool
		api                               clientFlags
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate a fleet: many real device agents in this process against a server",
		Long: `Run a simulated fleet against a server: --devices real device agents (the same code
as millwright-agent), each with its own certificate, durable spool, send schedule and
simulated sensors, over a simulated network.

With --data (default ./data) the devices get certificates from that server data
directory's development CA and are registered through the API of the running server
(--api-server, with the admin token of --data or --api-token-file; --register=false
leaves that out); with --token-file (one enrollment token per line, the n-th for device
n) and --ca they enroll over EST instead.
Credentials are kept (<data>/sim/<id-prefix>.pem, or --creds-dir), so a second run
reuses the same devices. Profiles (--profile FILE) set hardware model, network operator,
firmware, metric set, schedule, network faults and faulty firmware; docs/sim.md
describes the file and every flag.

At --duration (or on SIGINT/SIGTERM) sampling stops, the agents flush their spools for
at most --drain-timeout, and a summary is printed (--json for a machine-readable one).`,
		Example: `  millwright sim --devices 1000 --duration 60s
  millwright sim --devices 5000 --metrics idle --duration 5m --json
  millwright sim --profile fleet.yml --devices 2000 --interval 10s --jitter 5s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			agentLogger, err := newLogger(cmd.ErrOrStderr(), agentLogLevel)
			if err != nil {
				return usageError{fmt.Errorf("invalid --agent-log-level %q: want debug, info, warn or error", agentLogLevel)}
			}
			cfg.Logger, cfg.AgentLogger = logger, agentLogger
			f := cmd.Flags()
			if f.Changed("jitter") {
				cfg.Overrides.Jitter = &jitter
			}
			if f.Changed("keepalive") {
				cfg.Overrides.Keepalive = &keepalive
			}
			var sp spool.SyncPolicy
			if err := sp.UnmarshalText([]byte(spoolSync)); err != nil {
				return usageError{fmt.Errorf("invalid --spool-sync: %w", err)}
			}
			cfg.SpoolSync = &sp
			if err := cfg.Backoff.Jitter.UnmarshalText([]byte(backoffJitter)); err != nil {
				return usageError{fmt.Errorf("invalid --backoff-jitter: %w", err)}
			}
			if profile != "" {
				if cfg.Profiles, err = sim.LoadFile(profile); err != nil {
					return usageError{err}
				}
			}
			if err := removedDatabaseFlag(cmd); err != nil {
				return err
			}
			if !f.Changed("data") && (cfg.Token != "" || cfg.TokenFile != "") {
				cfg.DataDir = ""
			}
			if register && cfg.Token == "" && cfg.TokenFile == "" && cfg.DataDir != "" {
				if api.server == "" {
					api.server = defaultHTTPS(cfg.Server)
				}
				dataDir, caFile := cfg.DataDir, cfg.CAFile
				// The client is made when the devices are registered, after the simulation's
				// own checks: a wrong flag is named before a missing token file.
				cfg.Registrar = registrarFunc(func(ctx context.Context, certs []*x509.Certificate) (int, error) {
					c, err := newAPIClient(api.server, dataDir, caFile, api.tokenFile, "--api-token-file")
					if err == nil {
						var n int
						if n, err = c.RegisterCertificates(ctx, certs); err == nil {
							return n, nil
						}
					}
					return 0, fmt.Errorf("%w (the simulator registers its devices through the API of the running server, --api-server %s; --register=false leaves that out)", err, api.server)
				})
			}
			progress := cmd.OutOrStdout()
			if asJSON {
				progress = cmd.ErrOrStderr()
			}
			cfg.Progress, cfg.Terminal = progress, isTerminal(progress)
			s, err := sim.Run(cmd.Context(), cfg)
			if errors.Is(err, sim.ErrConfig) || errors.Is(err, sim.ErrProfile) {
				return usageError{err}
			}
			if s == nil {
				return err
			}
			if asJSON {
				if perr := printJSON(cmd.OutOrStdout(), s); perr != nil {
					return errors.Join(err, perr)
				}
			} else if perr := s.WriteTable(cmd.OutOrStdout()); perr != nil {
				return errors.Join(err, perr)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", sim.DefaultServer, "the server's MQTT/TLS address host:port (host is also the name its certificate must carry)")
	f.StringVar(&cfg.DataDir, "data", "data", "the server's data directory: its development CA issues the devices' certificates, its ca.pem and admin.token reach the API")
	f.StringVar(&api.server, "api-server", "", "the server's HTTPS API, where devices issued from the development CA are registered (default https://<server host>:8443)")
	f.StringVar(&api.tokenFile, "api-token-file", "", "file holding the API token that registers the devices (default $MILLWRIGHT_TOKEN, else <data>/admin.token)")
	f.BoolVar(&register, "register", true, "register the devices issued from the development CA through the API (false: the server knows them already, or is another broker)")
	addRemovedDatabaseFlag(cmd)
	f.StringVar(&cfg.TokenFile, "token-file", "", "enroll over EST instead, with one one-time token per line (the n-th for device n; blank and # lines skipped)")
	f.StringVar(&cfg.Token, "token", "", "enroll one device (--devices 1) over EST with this token")
	f.StringVar(&cfg.CAFile, "ca", "", "CA certificate that verifies the server (required with tokens; otherwise default <data>/ca.pem, for the API)")
	f.StringVar(&cfg.ESTServer, "est-server", "", "the server's HTTPS base URL for enrollment (default https://<server host>:8443)")
	f.StringVar(&cfg.CredsDir, "creds-dir", "", "where the devices' credentials are kept (default <data>/sim, or ./sim-credentials with tokens)")
	f.IntVar(&cfg.Devices, "devices", 10, "number of devices")
	f.StringVar(&cfg.IDPrefix, "id-prefix", sim.DefaultIDPrefix, "devices are named <id-prefix>-<n>")
	f.Var(durationFlag{&cfg.Duration}, "duration", "how long to run before draining and stopping (0: until interrupted)")
	f.StringVar(&cfg.SpoolDir, "spool-dir", "", "directory for the devices' spools, kept and reused (default a temporary directory, removed)")
	f.StringVar(&spoolSync, "spool-sync", "never", "spool fsync policy: never, batch or always")
	f.StringVar(&profile, "profile", "", "YAML file of device profiles (docs/sim.md)")
	f.StringVar(&cfg.Overrides.HardwareModel, "hardware-model", "", "hardware model every device reports")
	f.StringVar(&cfg.Overrides.NetworkOperator, "network-operator", "", "network operator every device reports")
	f.StringVar(&cfg.Overrides.FirmwareVersion, "firmware", "", "firmware version every device reports")
	f.StringVar(&cfg.Overrides.Metrics, "metrics", "", "metric set of every device: machine (default), environment or idle (no sampling)")
	agentDefaults := agent.DefaultConfig()
	f.Var(overrideDuration(&cfg.Overrides.SampleInterval, sim.DefaultSampleInterval), "sample-interval", "sampling interval of every device, overriding its profile's")
	f.Var(overrideDuration(&cfg.Overrides.Interval, agentDefaults.Schedule.Interval), "interval", "send schedule interval of every device, overriding its profile's")
	f.Var(overrideDuration(&jitter, agentDefaults.Schedule.Jitter), "jitter", "send schedule jitter of every device, overriding its profile's")
	f.Var(overrideDuration(&keepalive, agentDefaults.Uplink.Keepalive), "keepalive", "MQTT keepalive of every device, whole seconds, overriding its profile's")
	f.BoolVar(&cfg.Sync, "sync", false, "start every device at once with no scatter (no jitter, first send at start)")
	f.StringVar(&backoffJitter, "backoff-jitter", "full", "reconnect backoff: full (jitter) or none (plain exponential)")
	f.Var(overrideDuration(&cfg.Backoff.Base, agentDefaults.Uplink.Backoff.Base), "backoff-base", "reconnect backoff base")
	f.Var(overrideDuration(&cfg.Backoff.Cap, agentDefaults.Uplink.Backoff.Cap), "backoff-cap", "reconnect backoff cap")
	f.StringSliceVar(&cfg.SourceAddrs, "source-addrs", nil, "local addresses to spread outgoing connections over, e.g. 127.0.0.2,127.0.0.3")
	cfg.ProgressInterval = sim.DefaultProgressInterval
	f.Var(durationFlag{&cfg.ProgressInterval}, "progress-interval", "progress line interval when stdout is not a terminal")
	cfg.DrainTimeout = sim.DefaultDrainTimeout
	f.Var(durationFlag{&cfg.DrainTimeout}, "drain-timeout", "longest wait at the end for the agents to flush their spools")
	f.StringVar(&cfg.FirmwareKey, "firmware-key", "", "file of trusted firmware signing keys (PEM, firmware.pub of firmware keygen): the devices take signed firmware updates, downloaded from --est-server's port")
	f.Uint64Var(&cfg.Seed, "seed", 0, "seed of the random draws (0: a random seed, printed in the summary)")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON (progress goes to stderr)")
	f.StringVar(&logLevel, "log-level", "info", "simulator log level: debug, info, warn, error")
	f.StringVar(&agentLogLevel, "agent-log-level", "warn", "the agents' log level: debug, info, warn, error")
	return cmd
}

// defaultHTTPS is the server's HTTPS base URL on the host of its MQTT address, at the default
// port; "" when the address is not host:port (the simulator then names the flag at fault).
func defaultHTTPS(mqttAddr string) string {
	if mqttAddr == "" {
		mqttAddr = sim.DefaultServer
	}
	host, _, err := net.SplitHostPort(mqttAddr)
	if err != nil || host == "" {
		return ""
	}
	return "https://" + net.JoinHostPort(host, "8443")
}

var (
	_ sim.Registrar = (*apiClient)(nil)
	_ sim.Registrar = registrarFunc(nil)
)

// registrarFunc is a function that is a sim.Registrar.
type registrarFunc func(ctx context.Context, certs []*x509.Certificate) (int, error)

func (f registrarFunc) RegisterCertificates(ctx context.Context, certs []*x509.Certificate) (int, error) {
	return f(ctx, certs)
}
