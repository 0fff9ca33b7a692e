package millwrightcli

import (
	"errors"
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
			if err := checkServerLimits(opts); err != nil {
				return usageError{err}
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
	f.IntVar(&opts.Ingest.MaxSeriesPerDevice, "max-series-per-device", opts.Ingest.MaxSeriesPerDevice, "series one device may write; values of further series are refused (series_limit)")
	f.IntVar(&opts.Ingest.MaxEventBytesPerHour, "max-event-bytes-per-hour", opts.Ingest.MaxEventBytesPerHour, "bytes of string and data values one device may add to the event log per hour; beyond, they are refused (event_quota)")
	f.IntVar(&opts.Ingest.MaxNameLength, "max-name-length", opts.Ingest.MaxNameLength, "longest measurement name, in bytes; a batch with a longer one is refused as invalid")
	f.IntVar(&opts.Ingest.MaxUnitLength, "max-unit-length", opts.Ingest.MaxUnitLength, "longest unit, in bytes; a batch with a longer one is refused as invalid")
	f.IntVar(&opts.Ingest.MaxStringLength, "max-string-length", opts.Ingest.MaxStringLength, "longest string or data value, in bytes; a batch with a longer one is refused as invalid")
	f.IntVar(&opts.API.QueryMaxConcurrency, "query-max-concurrency", opts.API.QueryMaxConcurrency, "PromQL queries evaluated at once, one per CPU by default; more wait for a slot within their timeout, then get 503")
	f.Var(durationFlag{&opts.TSDB.QueryTimeout}, "query-timeout", "longest a PromQL query may take, its wait for a query slot included")
	f.IntVar(&opts.TSDB.QueryMaxSamples, "query-max-samples", opts.TSDB.QueryMaxSamples, "most samples one PromQL query may hold in memory at once")
	f.Var(durationFlag{&opts.HTTP.BodyTimeout}, "http-body-timeout", "longest an HTTPS request, headers and body, may take to arrive (batch uploads excepted)")
	f.Var(durationFlag{&opts.HTTP.UploadTimeout}, "http-upload-timeout", "longest a batch POST's body may take to arrive once its device is authorized")
	f.IntVar(&opts.HTTP.MaxConnections, "http-max-connections", opts.HTTP.MaxConnections, "HTTPS connections open at once (negative: no bound)")
	f.IntVar(&opts.HTTP.MaxConnectionsPerSource, "http-max-connections-per-source", opts.HTTP.MaxConnectionsPerSource, "HTTPS connections one source address (IPv6: /64) may have open at once (negative: no bound)")
	f.Var(durationFlag{&opts.MQTT.HelloTimeout}, "mqtt-hello-timeout", "longest an MQTT/TLS connection may take, from accept, to send its TLS ClientHello")
	f.Var(durationFlag{&opts.MQTT.HandshakeTimeout}, "mqtt-handshake-timeout", "longest an MQTT/TLS handshake may take from its ClientHello, the wait for a handshake slot included")
	f.Var(durationFlag{&opts.MQTT.ConnectTimeout}, "mqtt-connect-timeout", "longest an MQTT connection may take to send its CONNECT once its TLS handshake is done")
	f.IntVar(&opts.MQTT.MaxConcurrentHandshakes, "mqtt-max-handshakes", opts.MQTT.MaxConcurrentHandshakes, "MQTT/TLS handshakes in progress at once (8 per CPU by default); more wait in order")
	f.IntVar(&opts.MQTT.MaxHandshakesPerSource, "mqtt-max-handshakes-per-source", opts.MQTT.MaxHandshakesPerSource, "MQTT/TLS handshakes one source address (IPv6: /64) may have in progress or waiting at once; 0 is half of --mqtt-max-handshakes. Raise it for many devices behind one NAT")
	f.Uint16Var(&opts.MQTT.ReceiveMaximum, "mqtt-receive-maximum", opts.MQTT.ReceiveMaximum, "QoS 2 publishes a device may have unreleased on one connection (MQTT 5 Receive Maximum); beyond, it is disconnected (0x93)")
	f.Uint16Var(&opts.MQTT.MaxKeepAlive, "mqtt-max-keepalive", opts.MQTT.MaxKeepAlive, "longest MQTT keep-alive, in seconds; a device asking for none or more is held to it")
	return cmd
}

// checkServerLimits refuses limits that would turn a bound off by accident: a zero or negative
// query bound or HTTPS deadline, a zero connection bound (a negative one is no bound).
func checkServerLimits(opts server.Options) error {
	for _, c := range []struct {
		flag string
		ok   bool
		val  any
	}{
		{"--query-max-concurrency", opts.API.QueryMaxConcurrency > 0, opts.API.QueryMaxConcurrency},
		{"--query-timeout", opts.TSDB.QueryTimeout > 0, opts.TSDB.QueryTimeout},
		{"--query-max-samples", opts.TSDB.QueryMaxSamples > 0, opts.TSDB.QueryMaxSamples},
		{"--http-body-timeout", opts.HTTP.BodyTimeout > 0, opts.HTTP.BodyTimeout},
		{"--http-upload-timeout", opts.HTTP.UploadTimeout > 0, opts.HTTP.UploadTimeout},
		{"--max-series-per-device", opts.Ingest.MaxSeriesPerDevice > 0, opts.Ingest.MaxSeriesPerDevice},
		{"--max-event-bytes-per-hour", opts.Ingest.MaxEventBytesPerHour > 0, opts.Ingest.MaxEventBytesPerHour},
		{"--max-name-length", opts.Ingest.MaxNameLength > 0, opts.Ingest.MaxNameLength},
		{"--max-unit-length", opts.Ingest.MaxUnitLength > 0, opts.Ingest.MaxUnitLength},
		{"--max-string-length", opts.Ingest.MaxStringLength > 0, opts.Ingest.MaxStringLength},
		{"--mqtt-hello-timeout", opts.MQTT.HelloTimeout > 0, opts.MQTT.HelloTimeout},
		{"--mqtt-handshake-timeout", opts.MQTT.HandshakeTimeout > 0, opts.MQTT.HandshakeTimeout},
		{"--mqtt-connect-timeout", opts.MQTT.ConnectTimeout > 0, opts.MQTT.ConnectTimeout},
		{"--mqtt-max-handshakes", opts.MQTT.MaxConcurrentHandshakes > 0, opts.MQTT.MaxConcurrentHandshakes},
		{"--mqtt-max-handshakes-per-source", opts.MQTT.MaxHandshakesPerSource >= 0, opts.MQTT.MaxHandshakesPerSource},
		{"--mqtt-receive-maximum", opts.MQTT.ReceiveMaximum > 0, opts.MQTT.ReceiveMaximum},
		{"--mqtt-max-keepalive", opts.MQTT.MaxKeepAlive > 0, opts.MQTT.MaxKeepAlive},
	} {
		if !c.ok {
			return fmt.Errorf("invalid %s %v: must be positive", c.flag, c.val)
		}
	}
	if opts.HTTP.MaxConnections == 0 || opts.HTTP.MaxConnectionsPerSource == 0 {
		return errors.New("invalid --http-max-connections or --http-max-connections-per-source 0: give a bound, or a negative value for none")
	}
	return nil
}
