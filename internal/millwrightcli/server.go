package millwrightcli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/server"
)

func newServerCmd() *cobra.Command { return newServerCommand().cmd }

// serverCommand is millwright server: its flags set the options of a serverConfig, laid over
// the configuration file given with --config.
type serverCommand struct {
	cmd        *cobra.Command
	cfg        serverConfig
	configFile string
}

func newServerCommand() *serverCommand {
	c := &serverCommand{cfg: defaultServerConfig()}
	c.cmd = &cobra.Command{
		Use:   "server",
		Short: "Run the Millwright server (MQTT/TLS, HTTPS API, telemetry store)",
		Long: `Run the Millwright server.

With no flags it makes ./data with a development CA (ca.pem), an admin API token
(admin.token), and a server certificate, then serves MQTT over TLS on :8883 and the
HTTPS API on :8443.

--config reads a YAML file with a key for every flag (docs/operations.md); flags given
on the command line override the file.

SIGHUP reloads the rule files (--rules); a file that does not load is refused with its
file and line, and the rules running stay.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.resolve()
			if err != nil {
				return err
			}
			logger, err := newLogger(cmd.ErrOrStderr(), cfg.LogLevel)
			if err != nil {
				return err
			}
			srv, err := server.New(cfg.Options, clock.Real(), logger)
			if err != nil {
				return err
			}
			ctx, stop := context.WithCancel(cmd.Context())
			defer stop()
			reloadOnHangup(ctx, srv, logger)
			return srv.Run(ctx)
		},
	}
	opts := &c.cfg.Options
	f := c.cmd.Flags()
	f.StringVar(&c.configFile, "config", "", "configuration file (YAML, a key for every flag); flags given here override it")
	f.StringVar(&opts.DataDir, "data", opts.DataDir, "data directory (CA, admin token, telemetry)")
	f.StringVar(&opts.MQTT.Listen, "mqtt-listen", opts.MQTT.Listen, "MQTT over TLS listen address")
	f.StringVar(&opts.MQTT.InsecureListen, "insecure-mqtt-listen", "", "plain MQTT listen address, where the client ID alone names the device (development only)")
	f.StringVar(&opts.HTTPListen, "http-listen", opts.HTTPListen, "HTTPS listen address (API, metrics, batch POSTs)")
	f.StringVar(&opts.Database, "database", "", "registry database: empty for SQLite in the data directory, or a postgres:// URL")
	f.Var(durationFlag{&opts.Enroll.CertValidity}, "cert-validity", "lifetime of device certificates issued at enrollment")
	f.Var(durationFlag{&opts.Enroll.DormantReenrollWindow}, "dormant-reenroll-window", "how long after its certificate expired a device that was powered off may still get a new one by proving it holds the expired certificate's key (0: never)")
	f.StringVar(&opts.CACert, "ca-cert", "", "operator-supplied CA certificate (PEM; an intermediate first, then its chain) instead of the generated development CA")
	f.StringVar(&opts.CAKey, "ca-key", "", "the private key of --ca-cert")
	f.StringVar(&opts.Zone, "zone", opts.Zone, "gateway DNS zone; the server certificate covers *.<zone>")
	f.StringSliceVar(&opts.ServerNames, "server-name", nil, "extra DNS name or IP address for the server certificate (repeatable)")
	f.StringVar(&opts.DNSListen, "dns-listen", "", "UDP and TCP address of the authoritative DNS server for --zone, such as :53 (empty: no DNS served)")
	f.Var(durationFlag{&opts.DNS.TTL}, "dns-ttl", "TTL of the DNS answers for devices (1s to 1h): a moved device's old answer leaves caches within it")
	f.Float64Var(&opts.DNS.RateLimit, "dns-rate-limit", opts.DNS.RateLimit, "UDP DNS answers a second to one source (IPv4 /24, IPv6 /56); beyond, dropped or truncated")
	f.StringArrayVar(&opts.DNS.TSIGKeys, "dns-tsig-key", nil, "TSIG key name:algorithm:base64secret for zone transfers and NOTIFY (repeatable; prefer the configuration file, a command line is visible to other users)")
	f.StringArrayVar(&opts.DNS.Secondaries, "dns-notify", nil, "secondary DNS server host:port sent a NOTIFY at every change of the zone (repeatable)")
	f.Float64Var(&opts.DNS.MoveRate, "dns-move-rate", opts.DNS.MoveRate, "connected devices a second told to reconnect after a DNS change moved them")
	f.Var(durationFlag{&opts.TSDB.Retention}, "retention", "how long telemetry is kept")
	f.Var(durationFlag{&opts.EventRetention}, "event-retention", "how long the event log keeps string and data values, dropped a whole segment at a time (0: as long as --retention)")
	f.Var(durationFlag{&opts.AuditRetention}, "audit-retention", "how long the audit log keeps an entry, deleted hourly (0: forever)")
	f.Var(durationFlag{&opts.TSDB.OutOfOrderWindow}, "out-of-order-window", "how late a sample may arrive and still be stored")
	f.StringVar((*string)(&opts.TSDB.Sync), "fsync", string(opts.TSDB.Sync), "durability before an acknowledgement: always (fsync every group commit; survives power loss) or never (survives a process crash only)")
	f.StringVar(&c.cfg.LogLevel, "log-level", c.cfg.LogLevel, "log level: debug, info, warn, error")
	f.Var(durationFlag{&opts.ShutdownTimeout}, "shutdown-timeout", "longest each part of the server (MQTT, HTTPS, the pipeline, each store) may take to stop at shutdown")
	f.IntVar(&opts.Ingest.MaxSeriesPerDevice, "max-series-per-device", opts.Ingest.MaxSeriesPerDevice, "series one device may write; values of further series are refused (series_limit)")
	f.IntVar(&opts.Ingest.MaxEventBytesPerHour, "max-event-bytes-per-hour", opts.Ingest.MaxEventBytesPerHour, "bytes of string and data values one device may add to the event log per hour; beyond, they are refused (event_quota)")
	f.IntVar(&opts.Ingest.MaxNameLength, "max-name-length", opts.Ingest.MaxNameLength, "longest measurement name, in bytes; a batch with a longer one is refused as invalid")
	f.IntVar(&opts.Ingest.MaxUnitLength, "max-unit-length", opts.Ingest.MaxUnitLength, "longest unit, in bytes; a batch with a longer one is refused as invalid")
	f.IntVar(&opts.Ingest.MaxStringLength, "max-string-length", opts.Ingest.MaxStringLength, "longest string or data value, in bytes; a batch with a longer one is refused as invalid")
	f.IntVar(&opts.API.QueryMaxConcurrency, "query-max-concurrency", opts.API.QueryMaxConcurrency, "PromQL queries evaluated at once, one per CPU by default; more wait for a slot within their timeout, then get 503")
	f.Var(durationFlag{&opts.TSDB.QueryTimeout}, "query-timeout", "longest a PromQL query may take, its wait for a query slot included")
	f.IntVar(&opts.TSDB.QueryMaxSamples, "query-max-samples", opts.TSDB.QueryMaxSamples, "most samples one PromQL query may hold in memory at once")
	f.Var(durationFlag{&opts.Web.SessionTTL}, "web-session-ttl", "longest a dashboard session lasts from its login")
	f.Var(durationFlag{&opts.Web.SessionIdle}, "web-session-idle", "a dashboard session unused this long ends")
	f.IntVar(&opts.Web.MaxSessions, "web-max-sessions", opts.Web.MaxSessions, "dashboard sessions kept at once; a login beyond ends the least recently used")
	f.Var(durationFlag{&opts.HTTP.BodyTimeout}, "http-body-timeout", "longest an HTTPS request, headers and body, may take to arrive (batch uploads excepted)")
	f.Var(durationFlag{&opts.HTTP.UploadTimeout}, "http-upload-timeout", "longest a batch POST's body may take to arrive once its device is authorized")
	f.IntVar(&opts.HTTP.MaxConnections, "http-max-connections", opts.HTTP.MaxConnections, "HTTPS connections open at once (negative: no bound)")
	f.BoolVar(&opts.HTTP.HTTP2, "http2", opts.HTTP.HTTP2, "offer HTTP/2 on the HTTPS listener (off: the Go it is built with has HTTP/2 vulnerabilities, docs/security.md)")
	f.IntVar(&opts.HTTP.MaxConnectionsPerSource, "http-max-connections-per-source", opts.HTTP.MaxConnectionsPerSource, "HTTPS connections one source address (IPv6: /64) may have open at once (negative: no bound)")
	f.Var(durationFlag{&opts.MQTT.HelloTimeout}, "mqtt-hello-timeout", "longest an MQTT/TLS connection may take, from accept, to send its TLS ClientHello")
	f.Var(durationFlag{&opts.MQTT.HandshakeTimeout}, "mqtt-handshake-timeout", "longest an MQTT/TLS handshake may take from its ClientHello, the wait for a handshake slot included")
	f.Var(durationFlag{&opts.MQTT.ConnectTimeout}, "mqtt-connect-timeout", "longest an MQTT connection may take to send its CONNECT once its TLS handshake is done")
	f.IntVar(&opts.MQTT.MaxConcurrentHandshakes, "mqtt-max-handshakes", opts.MQTT.MaxConcurrentHandshakes, "MQTT/TLS handshakes in progress at once (8 per CPU by default); more wait in order")
	f.IntVar(&opts.MQTT.MaxHandshakesPerSource, "mqtt-max-handshakes-per-source", opts.MQTT.MaxHandshakesPerSource, "MQTT/TLS handshakes one source address (IPv6: /64) may have in progress or waiting at once; 0 is half of --mqtt-max-handshakes. Raise it for many devices behind one NAT")
	f.Uint16Var(&opts.MQTT.ReceiveMaximum, "mqtt-receive-maximum", opts.MQTT.ReceiveMaximum, "QoS 2 publishes a device may have unreleased on one connection (MQTT 5 Receive Maximum); beyond, it is disconnected (0x93)")
	f.StringArrayVar(&opts.Alerting.RuleFiles, "rules", nil, "Prometheus rule file (recording and alerting rules; a glob pattern names every file it matches) evaluated on the telemetry store (repeatable); SIGHUP reloads them")
	f.Var(durationFlag{&opts.Alerting.EvaluationInterval}, "rules-interval", "how often each rule group is evaluated, unless the group sets its own interval")
	f.BoolVar(&opts.Alerting.DefaultRules, "default-rules", opts.Alerting.DefaultRules, "evaluate the built-in rule set (docs/monitoring.md \"Alert rules\") besides the --rules files")
	f.StringArrayVar(&opts.Alerting.Alertmanagers, "alertmanager", nil, "Alertmanager URL the alerts are sent to, such as http://127.0.0.1:9093 (repeatable)")
	f.StringArrayVar(&opts.Alerting.Webhooks, "alert-webhook", nil, "URL that gets Alertmanager's webhook JSON when an alert fires and when it resolves, without an Alertmanager or beside one (repeatable)")
	f.Uint16Var(&opts.MQTT.MaxKeepAlive, "mqtt-max-keepalive", opts.MQTT.MaxKeepAlive, "longest MQTT keep-alive, in seconds; a device asking for none or more is held to it")
	f.Var(durationFlag{&opts.Anomaly.Interval}, "anomaly-interval", "how often the anomaly finder looks for a fleet metric that moved and names its cause")
	f.Var(durationFlag{&opts.Anomaly.Window}, "anomaly-window", "the anomaly finder's window, and the length of each baseline window (longer: smaller moves found, later)")
	f.IntVar(&opts.Anomaly.BaselineWindows, "anomaly-baseline-windows", opts.Anomaly.BaselineWindows, "windows just before the current one that make the anomaly baseline (at least 3)")
	f.IntVar(&opts.Anomaly.MinDevices, "anomaly-min-devices", opts.Anomaly.MinDevices, "fewest devices a firmware, model, operator or group must have to be named as an anomaly's cause")
	f.IntVar(&opts.Anomaly.MaxValues, "anomaly-max-values", opts.Anomaly.MaxValues, "values of one dimension the anomaly finder considers (the largest); the rest are counted in its report")
	f.Var(durationFlag{&opts.Anomaly.QueryTimeout}, "anomaly-query-timeout", "longest one anomaly run's (or one trend request's) queries may take together")
	f.IntVar(&opts.Firmware.MaxDownloads, "firmware-max-downloads", opts.Firmware.MaxDownloads, "firmware artifact downloads served to devices at once; beyond, a device is answered 503 with Retry-After and resumes later")
	f.Var(durationFlag{&opts.RolloutInterval}, "rollout-interval", "how often the rollout engine offers releases to the phases that opened, follows updates and judges the health gates")
	f.Var(durationFlag{&opts.Monitor.Interval}, "monitor-interval", "how often every device's connectivity series are written and its liveness judged")
	f.Float64Var(&opts.Monitor.SilentFactor, "silent-factor", opts.Monitor.SilentFactor, "a device unheard for this many times its own reporting interval is silent")
	f.Var(durationFlag{&opts.Monitor.DefaultInterval}, "default-report-interval", "reporting interval of a device that reported none and has none configured")
	f.Var(durationFlag{&opts.Monitor.OfflineAfter}, "offline-after", "a device unheard for longer is offline (gone) rather than silent (late)")
	f.Var(durationFlag{&opts.Monitor.SessionRetention}, "session-retention", "how long the connection history keeps an ended session")
	f.IntVar(&opts.Monitor.MaxPendingSessions, "monitor-max-pending-sessions", opts.Monitor.MaxPendingSessions, "ended sessions waiting to be written to the connection history; beyond, they are counted and dropped")
	return c
}

// serverFlagKeys names, for each flag of millwright server but --config, the key of the
// configuration file that the flag overrides.
var serverFlagKeys = map[string]string{
	"data":                            "data",
	"mqtt-listen":                     "mqtt.listen",
	"insecure-mqtt-listen":            "mqtt.insecure_listen",
	"http-listen":                     "http_listen",
	"database":                        "database",
	"cert-validity":                   "enroll.cert_validity",
	"dormant-reenroll-window":         "enroll.dormant_reenroll_window",
	"ca-cert":                         "ca_cert",
	"ca-key":                          "ca_key",
	"zone":                            "zone",
	"server-name":                     "server_names",
	"dns-listen":                      "dns_listen",
	"dns-ttl":                         "dns.ttl",
	"dns-rate-limit":                  "dns.rate_limit",
	"dns-tsig-key":                    "dns.tsig_keys",
	"dns-notify":                      "dns.secondaries",
	"dns-move-rate":                   "dns.move_rate",
	"retention":                       "tsdb.retention",
	"event-retention":                 "event_retention",
	"audit-retention":                 "audit_retention",
	"out-of-order-window":             "tsdb.out_of_order_window",
	"fsync":                           "tsdb.fsync",
	"log-level":                       "log_level",
	"shutdown-timeout":                "shutdown_timeout",
	"max-series-per-device":           "ingest.max_series_per_device",
	"max-event-bytes-per-hour":        "ingest.max_event_bytes_per_hour",
	"max-name-length":                 "ingest.max_name_length",
	"max-unit-length":                 "ingest.max_unit_length",
	"max-string-length":               "ingest.max_string_length",
	"query-max-concurrency":           "api.query_max_concurrency",
	"query-timeout":                   "tsdb.query_timeout",
	"query-max-samples":               "tsdb.query_max_samples",
	"http-body-timeout":               "http.body_timeout",
	"web-session-ttl":                 "web.session_ttl",
	"web-session-idle":                "web.session_idle",
	"web-max-sessions":                "web.max_sessions",
	"http-upload-timeout":             "http.upload_timeout",
	"http-max-connections":            "http.max_connections",
	"http-max-connections-per-source": "http.max_connections_per_source",
	"http2":                           "http.http2",
	"mqtt-hello-timeout":              "mqtt.hello_timeout",
	"mqtt-handshake-timeout":          "mqtt.handshake_timeout",
	"mqtt-connect-timeout":            "mqtt.connect_timeout",
	"mqtt-max-handshakes":             "mqtt.max_concurrent_handshakes",
	"mqtt-max-handshakes-per-source":  "mqtt.max_handshakes_per_source",
	"mqtt-receive-maximum":            "mqtt.receive_maximum",
	"mqtt-max-keepalive":              "mqtt.max_keepalive",
	"anomaly-interval":                "anomaly.interval",
	"anomaly-window":                  "anomaly.window",
	"anomaly-baseline-windows":        "anomaly.baseline_windows",
	"anomaly-min-devices":             "anomaly.min_devices",
	"anomaly-max-values":              "anomaly.max_values",
	"anomaly-query-timeout":           "anomaly.query_timeout",
	"monitor-interval":                "monitor.interval",
	"rollout-interval":                "rollout_interval",
	"firmware-max-downloads":          "firmware.max_downloads",
	"silent-factor":                   "monitor.silent_factor",
	"default-report-interval":         "monitor.default_interval",
	"offline-after":                   "monitor.offline_after",
	"session-retention":               "monitor.session_retention",
	"monitor-max-pending-sessions":    "monitor.max_pending_sessions",
	"rules":                           "alerting.rule_files",
	"rules-interval":                  "alerting.evaluation_interval",
	"default-rules":                   "alerting.default_rules",
	"alertmanager":                    "alerting.alertmanagers",
	"alert-webhook":                   "alerting.webhooks",
}

// reloadOnHangup reloads the server's rule files at each SIGHUP, from its return until ctx
// ends.
func reloadOnHangup(ctx context.Context, srv *server.Server, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := srv.ReloadRules(); err != nil {
					logger.Error("rule reload refused; the rules running stay", "err", err)
				}
			}
		}
	}()
}
