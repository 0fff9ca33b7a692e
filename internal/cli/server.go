package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/tsdb"
)

func newServerCmd() *cobra.Command {
	opts := server.DefaultOptions()
	var (
		fsync    string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Millwright server (MQTT/TLS, HTTPS API, telemetry store)",
		Long: `Run the Millwright server.

With no flags it makes ./data with a development CA (ca.pem), an admin API token
(admin.token), and a server certificate, then serves MQTT over TLS on :8883 and the
HTTPS API on :8443.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			p, err := tsdb.ParseSyncPolicy(fsync)
			if err != nil {
				return usageError{fmt.Errorf("invalid --fsync: %w", err)}
			}
			opts.TSDB.Sync = p
			if opts.TSDB.Retention <= 0 {
				return usageError{fmt.Errorf("invalid --retention %s: must be positive", opts.TSDB.Retention)}
			}
			if opts.TSDB.OutOfOrderWindow <= 0 {
				return usageError{fmt.Errorf("invalid --out-of-order-window %s: must be positive", opts.TSDB.OutOfOrderWindow)}
			}
			srv, err := server.New(opts, clock.Real(), logger)
			if err != nil {
				return err
			}
			return srv.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data", opts.DataDir, "data directory (CA, admin token, telemetry)")
	f.StringVar(&opts.MQTT.Listen, "mqtt-listen", opts.MQTT.Listen, "MQTT over TLS listen address")
	f.StringVar(&opts.MQTT.InsecureListen, "insecure-mqtt-listen", "", "plain MQTT listen address, where the client ID alone names the device (development only)")
	f.StringVar(&opts.HTTPListen, "http-listen", opts.HTTPListen, "HTTPS listen address (API, metrics, batch POSTs)")
	f.StringVar(&opts.Database, "database", "", "registry database: empty for SQLite in the data directory, or a postgres:// URL")
	f.Var(durationFlag{&opts.Enroll.CertValidity}, "cert-validity", "lifetime of device certificates issued at enrollment")
	f.StringVar(&opts.CACert, "ca-cert", "", "operator-supplied CA certificate (PEM; an intermediate first, then its chain) instead of the generated development CA")
	f.StringVar(&opts.CAKey, "ca-key", "", "the private key of --ca-cert")
	f.StringVar(&opts.Zone, "zone", opts.Zone, "gateway DNS zone; the server certificate covers *.<zone>")
	f.StringSliceVar(&opts.ServerNames, "server-name", nil, "extra DNS name or IP address for the server certificate (repeatable)")
	f.Var(durationFlag{&opts.TSDB.Retention}, "retention", "how long telemetry is kept")
	f.Var(durationFlag{&opts.TSDB.OutOfOrderWindow}, "out-of-order-window", "how late a sample may arrive and still be stored")
	f.StringVar(&fsync, "fsync", string(opts.TSDB.Sync), "durability before an acknowledgement: always (fsync every group commit; survives power loss) or never (survives a process crash only)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}
