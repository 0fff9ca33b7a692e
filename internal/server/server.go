// Package server composes Millwright's long-running parts — device registry, enrollment,
// telemetry store, alert rules, event log, ingest pipeline, MQTT gateway, HTTPS API — into one process, starting them in order and stopping them
// in reverse so that no acknowledged batch is lost on shutdown.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/buildinfo"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/alerting"
	"github.com/millwright/millwright/internal/anomaly"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/datadir"
	"github.com/millwright/millwright/internal/devicechannel"
	"github.com/millwright/millwright/internal/devicepolicy"
	"github.com/millwright/millwright/internal/dnsserver"
	"github.com/millwright/millwright/internal/estserver"
	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/firmware"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/gcpace"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/internal/lifecycle"
	"github.com/millwright/millwright/internal/monitor"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/rollout"
	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/internal/web"
)

// AdminTokenFile holds the admin API token inside the data directory.
const AdminTokenFile = "admin.token"

// Options configure the server.
type Options struct {
	// DataDir holds the CA, the admin token, the TSDB and the event log. Default "./data".
	DataDir string `yaml:"data"`
	// HTTPListen is the HTTPS address for the API, metrics and batch POSTs. Default ":8443".
	HTTPListen string `yaml:"http_listen"`
	// Zone is the gateway DNS zone; devices reach the server as <device-id>.<zone>, so the server
	// certificate covers *.<zone>. Default "gw.millwright.internal".
	Zone string `yaml:"zone"`
	// CACert and CAKey name an operator-supplied CA (typically an intermediate whose root stays
	// offline) instead of the development CA generated in DataDir. Both or neither.
	CACert string `yaml:"ca_cert"`
	CAKey  string `yaml:"ca_key"`
	// ServerNames are extra DNS names or IP addresses for the server certificate.
	ServerNames []string `yaml:"server_names"`
	// DNSListen is the UDP and TCP address of the authoritative DNS server for Zone (e.g.
	// ":53"); empty (the default) serves no DNS. Either way the server moves the devices
	// connected to it whose DNS answer changed (docs/dns.md).
	DNSListen string `yaml:"dns_listen"`
	// DNS configures the DNS server: TTL, limits, TSIG keys, secondaries to notify.
	DNS dnsserver.Options `yaml:"dns"`
	// Database is the registry: empty for SQLite in DataDir/registry.db, or a postgres:// URL.
	Database string              `yaml:"database"`
	MQTT     gateway.MQTTOptions `yaml:"mqtt"`
	Enroll   estserver.Options   `yaml:"enroll"`
	TSDB     tsdb.Options        `yaml:"tsdb"`
	Ingest   ingest.Options      `yaml:"ingest"`
	// HTTP bounds the HTTPS listener: request deadlines and connections open.
	HTTP HTTPOptions `yaml:"http"`
	// API bounds the API's work: the PromQL queries evaluated at once.
	API api.Options `yaml:"api"`
	// Web bounds the dashboard's sessions (docs/dashboard.md).
	Web web.Options `yaml:"web"`
	// Anomaly configures the anomaly finder: how often it runs, its window and baseline, its
	// thresholds and bounds (docs/monitoring.md, "Anomalies").
	Anomaly anomaly.Options `yaml:"anomaly"`
	// Monitor is the fleet monitor: per-device connectivity series, liveness, connection
	// history.
	Monitor monitor.Options `yaml:"monitor"`
	// Firmware bounds the firmware archive (DataDir/firmware): an artifact's size, an upload's
	// time.
	Firmware firmware.Options `yaml:"firmware"`
	// Alerting is the rule files evaluated on the telemetry store and where their alerts go
	// (docs/monitoring.md "Alert rules").
	Alerting alerting.Options `yaml:"alerting"`
	// RolloutInterval is how often the rollout engine steps every active rollout: offers to
	// the phases that opened, follows each device's update, judges the health gates.
	// Default 30 s.
	RolloutInterval time.Duration `yaml:"rollout_interval"`
	// EventRetention is how long the event log keeps events: whole segments whose every
	// event is older are dropped, checked once an hour on the server's clock. Default (zero):
	// the TSDB's retention, so that events go with the telemetry they belong to.
	EventRetention time.Duration `yaml:"event_retention"`
	// EventSegmentBytes is the size in bytes at which the event log closes a segment and
	// indexes it. Default 8 MiB.
	EventSegmentBytes int64 `yaml:"event_segment_bytes"`
	// AuditRetention is how long the audit log keeps an entry: older entries are deleted once
	// an hour on the server's clock, 1000 per transaction. Default zero: kept forever.
	AuditRetention time.Duration `yaml:"audit_retention"`
	// ConfigFile is the configuration file these options were read from, if any; backups
	// include it. Not a key of the file.
	ConfigFile string `yaml:"-"`
	// ShutdownTimeout bounds how long each part of the server may take to stop at shutdown,
	// one after the other: the MQTT listeners and their sessions, the HTTPS listener and its
	// requests, the pipeline storing what it accepted, then each store. Default 10 s. A part
	// that takes longer is reported and the next is stopped all the same; storage refuses
	// writes once closed, so a batch still in flight then is answered "retry", never
	// acknowledged.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		DataDir:    "data",
		HTTPListen: ":8443",
		Zone:       "gw.millwright.internal",
		MQTT:       gateway.DefaultMQTTOptions(),
		Enroll:     estserver.DefaultOptions(),
		TSDB:       tsdb.DefaultOptions(),
		Ingest:     ingest.DefaultOptions(),
		HTTP:       DefaultHTTPOptions(),
		API:        api.DefaultOptions(),
		Web:        web.DefaultOptions(),
		Anomaly:    anomaly.DefaultOptions(),
		Monitor:    monitor.DefaultOptions(),
		Firmware:   firmware.DefaultOptions(),
		Alerting:   alerting.DefaultOptions(),
		DNS:        dnsserver.DefaultOptions(),

		RolloutInterval: 30 * time.Second,

		EventSegmentBytes: eventlog.DefaultOptions().SegmentBytes,

		ShutdownTimeout: 10 * time.Second,
	}
}

// Server is a Millwright server: made by New, served by Run, or released unrun by Close.
type Server struct {
	opts     Options
	log      *slog.Logger
	lock     *datadir.Lock
	clk      clock.Clock
	ca       *pki.CA
	token    string
	reg      *prometheus.Registry
	registry *registry.Registry
	authz    *devicepolicy.RegistryAuthorizer
	enroll   *estserver.Server
	store    *tsdb.Store
	alerting *alerting.Manager
	anomaly  *anomaly.Finder
	events   *eventlog.Log
	pipeline *ingest.Pipeline
	monitor  *monitor.Monitor
	firmware *firmware.Store
	facts    *devicepolicy.FactRecorder
	channel  *devicechannel.Service
	rollouts *rollout.Engine
	// rolloutLead is the lock that lets one of the servers sharing a registry run rollouts.
	rolloutLead *registry.Leadership
	mqtt        *gateway.MQTT
	dns         *dnsserver.Server
	mover       *mover
	httpLn      net.Listener
	http        *http.Server
	pacer       *gcpace.Pacer
	group       *lifecycle.Group
	// serving is set once every listener serves, cleared when shutdown begins (/-/ready).
	serving atomic.Bool
}

// New validates opts, prepares the data directory (CA, admin token, server certificate on
// first start), opens storage and binds the listeners. Run serves; Close releases a server
// that will not run.
func New(opts Options, clk clock.Clock, logger *slog.Logger) (_ *Server, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if clk == nil {
		clk = clock.Real()
	}
	s := &Server{opts: opts, log: logger, clk: clk, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.parts().Close())
		}
	}()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	dir := opts.DataDir
	// One server per data directory, and only of a format this build knows.
	if s.lock, err = datadir.Acquire(dir); err != nil {
		return nil, err
	}
	stamp, err := datadir.Check(dir, buildinfo.Get().Version)
	if err != nil {
		return nil, err
	}
	if err := removeBackupLeftovers(dir); err != nil {
		return nil, err
	}
	ca, err := loadCA(opts, clk, logger)
	if err != nil {
		return nil, err
	}
	s.ca = ca
	if opts.MQTT.InsecureListen != "" {
		if err := checkInsecureListen(opts, ca); err != nil {
			return nil, err
		}
		logger.Warn("INSECURE development listener: plain MQTT where a client ID alone names the device; never use it for a fleet",
			"address", opts.MQTT.InsecureListen)
	}
	if s.token, err = loadOrCreateToken(filepath.Join(dir, AdminTokenFile)); err != nil {
		return nil, err
	}
	names, ips := pki.ServerNames(opts.Zone, opts.ServerNames)
	cert, err := pki.EnsureServerCert(dir, ca, names, ips, clk.Now())
	if err != nil {
		return nil, err
	}

	if s.registry, err = registry.Open(context.Background(), opts.Database, dir, clk); err != nil {
		return nil, err
	}
	s.authz = devicepolicy.NewRegistryAuthorizer(s.registry, devicepolicy.DefaultAuthorizationTTL, clk)
	s.enroll = estserver.New(ca, s.registry, clk, opts.Enroll, logger.With("component", "enroll"), s.reg)
	if s.store, err = tsdb.Open(filepath.Join(dir, "tsdb"), opts.TSDB, logger, s.reg); err != nil {
		return nil, err
	}
	// The rules engine ticks on the process's real time, so its senders' retries do too.
	if s.alerting, err = alerting.New(opts.Alerting, s.store, alerting.Config{
		Logger: logger.With("component", "alerting"), Registerer: s.reg, Clock: clock.Real(),
	}); err != nil {
		return nil, err
	}
	if s.anomaly, err = anomaly.New(s.store, opts.Anomaly, clk, logger.With("component", "anomaly")); err != nil {
		return nil, err
	}
	if s.events, err = eventlog.OpenOptions(filepath.Join(dir, "events"), eventlog.Options{SegmentBytes: opts.EventSegmentBytes}); err != nil {
		return nil, err
	}
	if n := s.events.TornBytes(); n > 0 {
		logger.Warn("event log had a torn tail from a crash; cut off", "bytes", n)
	}
	s.pipeline = ingest.New(s.store, s.events, clk, opts.Ingest, logger.With("component", "ingest"), s.reg)
	if s.firmware, err = firmware.Open(filepath.Join(dir, "firmware"), opts.Firmware.MaxArtifactBytes); err != nil {
		return nil, err
	}
	s.monitor = monitor.New(s.store, s.registry, opts.Monitor, clk, logger.With("component", "monitor"), s.reg)

	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
	fo := devicepolicy.DefaultFactOptions()
	fo.Clock = clk
	s.facts = devicepolicy.NewFactRecorder(s.registry, fo, logger.With("component", "facts"), s.reg)
	s.channel = devicechannel.New(s.registry, s.facts, devicechannel.Options{Clock: clk}, logger, s.reg)
	if s.mqtt, err = gateway.NewMQTT(opts.MQTT, tlsCfg, s.ingester(), s.authz, s.facts, logger, s.reg); err != nil {
		_ = s.facts.Close()
		return nil, err
	}
	s.mqtt.SetChannel(s.channel)
	s.mqtt.SetObserver(s.monitor)
	s.channel.SetTransport(s.mqtt)
	s.rollouts = rollout.NewEngine(s.registry, s.store, clk, logger.With("component", "rollout"), s.reg)
	s.rollouts.SetDeliver(s.channel.Queued)
	s.rolloutLead = s.registry.Leadership("rollout-engine")
	s.rollouts.SetLeader(s.rolloutLead)
	dnsOpts := opts.DNS
	dnsOpts.Zone, dnsOpts.Listen = opts.Zone, opts.DNSListen
	if s.dns, err = dnsserver.New(dnsOpts, s.registry, clk, logger.With("component", "dns"), s.reg); err != nil {
		return nil, err
	}
	s.mover = newMover(s.dns, s.mqtt, clk, logger.With("component", "dns"), s.reg, opts.Zone, opts.DNS.MoveRate)

	if err := s.listenHTTP(tlsCfg); err != nil {
		return nil, err
	}
	// Keep the collector's headroom to the live heap: idle device connections hold as much
	// goroutine stack as heap, and the stacks would otherwise double the garbage allowed. The
	// collector runs on the process's real time, whatever clock the server's logic is given.
	s.pacer = gcpace.New(clock.Real(), s.reg)
	if err := datadir.Write(dir, buildinfo.Get().Version); err != nil {
		return nil, err
	}
	if stamp.Version != buildinfo.Get().Version {
		logger.Info("data directory stamped", "format", datadir.Format, "version", buildinfo.Get().Version, "previous", stamp.Version)
	}
	s.group = s.parts()
	return s, nil
}

// parts composes the server's parts, those New has made so far, into one lifecycle. They
// start in this order and stop in reverse, which is what keeps every acknowledged batch:
// the listeners stop first, closing their sessions and finishing their requests while the
// pipeline still answers them; then the pipeline stores what it accepted; then storage
// closes. A part that is not stopped within Options.ShutdownTimeout is reported, and the
// next is stopped all the same.
func (s *Server) parts() *lifecycle.Group {
	// Shutdown is bounded in the process's real time, like systemd's stop timeout.
	g := lifecycle.New(clock.Real(), s.opts.ShutdownTimeout, s.log)
	closer := func(close func() error) func(context.Context) error {
		return func(context.Context) error { return close() }
	}
	if s.lock != nil {
		// Released last, once every store is closed.
		g.Add(lifecycle.Part{Name: "data directory lock", Stop: closer(s.lock.Release)})
	}
	if s.registry != nil {
		g.Add(lifecycle.Part{Name: "registry", Stop: closer(s.registry.Close)})
	}
	if s.store != nil {
		g.Add(lifecycle.Part{Name: "tsdb", Stop: closer(s.store.Close)})
	}
	if s.alerting != nil {
		// Started once the store is open, stopped before it closes: the rules read it and
		// write their series to it.
		g.Add(lifecycle.Part{Name: "alerting", Start: s.alerting.Start, Stop: s.alerting.Stop})
	}
	if s.anomaly != nil {
		// Reads and writes the store: stopped before it.
		g.Add(lifecycle.Part{Name: "anomaly finder", Run: s.anomaly.Run})
	}
	if s.events != nil {
		g.Add(lifecycle.Part{Name: "event log", Stop: closer(s.events.Close)})
	}
	if s.events != nil && s.registry != nil {
		// Drops old events and audit entries: stopped before the stores it prunes.
		g.Add(lifecycle.Part{Name: "retention", Run: s.runRetention})
	}
	if s.monitor != nil {
		// Stopped after the listeners and the pipeline, so that its last write has every
		// session the shutdown ended, and before the stores it writes to.
		g.Add(lifecycle.Part{Name: "monitor", Run: s.monitor.Run})
	}
	if s.channel != nil {
		// Stopped after the listeners, whose sessions acknowledge its messages, and before
		// the registry, where it writes the last delivery steps.
		g.Add(lifecycle.Part{Name: "device channel", Start: func() error { s.channel.Start(); return nil }, Stop: closer(s.channel.Close)})
	}
	if s.rollouts != nil {
		// Reads the registry and the store and queues offers for the device channel.
		// Of the servers sharing a registry, the one holding the lock steps; it gives the lock
		// up when it stops, and another takes over at its next step.
		g.Add(lifecycle.Part{Name: "rollout engine", Run: func(ctx context.Context) error {
			err := s.rollouts.Run(ctx, s.opts.RolloutInterval)
			return errors.Join(err, s.rolloutLead.Close())
		}})
	}
	if s.dns != nil {
		// Reads the registry: started after it opened, stopped before it closes.
		g.Add(lifecycle.Part{Name: "dns", Start: func() error { return s.dns.Start(context.Background()) },
			Stop: func(context.Context) error { return s.dns.Stop() }})
	}
	if s.mover != nil {
		g.Add(lifecycle.Part{Name: "dns mover", Run: s.mover.Run})
	}
	if s.pacer != nil {
		g.Add(lifecycle.Part{Name: "gc pacer", Run: func(ctx context.Context) error { s.pacer.Run(ctx); return nil }})
	}
	if s.pipeline != nil {
		// Run returns once the context ends and it has stored every batch it accepted.
		g.Add(lifecycle.Part{Name: "ingest", Run: s.pipeline.Run})
	}
	if s.http != nil {
		g.Add(lifecycle.Part{
			Name: "https",
			Run: func(context.Context) error {
				if err := s.http.Serve(s.httpLn); !errors.Is(err, http.ErrServerClosed) {
					return fmt.Errorf("serve HTTPS: %w", err)
				}
				return nil
			},
			// Shutdown closes the listener and waits for the requests in progress, and past
			// the deadline the connections still open are closed; the listener is closed
			// here too for a server that never served.
			Stop: func(ctx context.Context) error {
				if err := s.http.Shutdown(ctx); err != nil {
					return errors.Join(err, s.http.Close())
				}
				return ignoreNetClosed(s.httpLn.Close())
			},
		})
	}
	if s.mqtt != nil {
		g.Add(lifecycle.Part{
			Name: "mqtt",
			Start: func() error {
				if err := s.mqtt.Start(); err != nil {
					return err
				}
				s.serving.Store(true)
				s.log.Info("millwright server running",
					"mqtt", s.MQTTAddr().String(), "https", s.HTTPAddr().String(), "data", s.opts.DataDir,
					"admin_token", filepath.Join(s.opts.DataDir, AdminTokenFile), "ca", filepath.Join(s.opts.DataDir, pki.CAFile))
				return nil
			},
			// Close waits until every session has ended: each publish in progress has had its
			// answer from the pipeline.
			Stop: func(context.Context) error {
				s.serving.Store(false)
				return s.mqtt.Close()
			},
		})
	}
	return g
}

// deviceChanged applies a status change at once: the gateway forgets its cached answer, a
// device that may no longer connect loses its live session, and the CRL is rebuilt.
func (s *Server) deviceChanged(id string, status registry.Status) {
	s.authz.Invalidate(id)
	if status != registry.StatusActive && s.mqtt.DisconnectDevice(id) {
		s.log.Info("closed the session of a device that may no longer connect", "device", id, "status", status)
	}
	s.enroll.InvalidateCRL()
}

// deviceDeleted erases what the server keeps of a device deleted from the registry, beyond
// the registry: its live session is closed, then its events and its series (with the monitor
// holding its flushes, so none writes them again) are erased. It says how many events went.
func (s *Server) deviceDeleted(ctx context.Context, id string) (int, error) {
	s.deviceChanged(id, registry.StatusRevoked)
	events, err := s.events.Erase(id)
	if err != nil {
		return 0, err
	}
	err = s.monitor.Forget(id, func() error {
		return s.store.DeleteSeries(ctx, labels.MustNewMatcher(labels.MatchEqual, "device", id))
	})
	if err != nil {
		return events, err
	}
	s.log.Info("erased a deleted device's data", "device", id, "events", events)
	return events, nil
}

// ingester is the gateway's Ingester: the pipeline, and each accepted batch marks its device
// seen (written in batches by the fact recorder) and is counted by the monitor.
func (s *Server) ingester() gateway.Ingester {
	return s.monitor.Ingester(devicepolicy.SeenIngester(devicepolicy.Ingester(s.pipeline), s.facts, s.clk))
}

// Monitor is the fleet monitor.
func (s *Server) Monitor() *monitor.Monitor { return s.monitor }

// Channel is the device channel: the mailbox's delivery to devices.
func (s *Server) Channel() *devicechannel.Service { return s.channel }

// Store is the telemetry store.
func (s *Server) Store() *tsdb.Store { return s.store }

// Anomaly is the anomaly finder.
func (s *Server) Anomaly() *anomaly.Finder { return s.anomaly }

// Rollouts returns the rollout engine.
func (s *Server) Rollouts() *rollout.Engine { return s.rollouts }

// DNS is the authoritative DNS server of the gateway zone (serving only with
// Options.DNSListen).
func (s *Server) DNS() *dnsserver.Server { return s.dns }

// Registry is the device registry.
func (s *Server) Registry() *registry.Registry { return s.registry }

// Alerting is the rules engine and its senders.
func (s *Server) Alerting() *alerting.Manager { return s.alerting }

// ReloadRules reads the rule files again (millwright server does on SIGHUP). Files that do not
// load are refused with their file and line, and the rules running stay.
func (s *Server) ReloadRules() error {
	if err := s.alerting.Reload(); err != nil {
		return err
	}
	s.log.Info("rules reloaded", "files", s.alerting.Files())
	return nil
}

func (s *Server) pipelineMaxPayload() int {
	if n := s.opts.Ingest.Limits.MaxPayload; n > 0 {
		return n
	}
	return ingest.DefaultOptions().Limits.MaxPayload
}

// DataDir is the data directory the server uses.
func (s *Server) DataDir() string { return s.opts.DataDir }

// MQTTAddr is the MQTT/TLS listener's address.
func (s *Server) MQTTAddr() net.Addr { return s.mqtt.Addr() }

// MQTT is the gateway serving device sessions: the server sends messages to devices through
// its Publish.
func (s *Server) MQTT() *gateway.MQTT { return s.mqtt }

// InsecureMQTTAddr is the plain MQTT listener's address, or nil.
func (s *Server) InsecureMQTTAddr() net.Addr { return s.mqtt.InsecureAddr() }

// HTTPAddr is the HTTPS listener's address.
func (s *Server) HTTPAddr() net.Addr { return s.httpLn.Addr() }

// CA is the server's certificate authority.
func (s *Server) CA() *pki.CA { return s.ca }

// AdminToken is the admin API token.
func (s *Server) AdminToken() string { return s.token }

// Run serves until ctx ends, a part fails or Close is called, then shuts down: the listeners
// first, then the pipeline (which stores what it already accepted), then storage (see
// parts). Run may be called once.
func (s *Server) Run(ctx context.Context) error { return s.group.Run(ctx) }

// Close releases what New opened, for a server that will not run: the listeners, the
// pipeline, storage. On a running server it shuts down as the end of Run's context would,
// and returns once Run has. Closing again does nothing.
func (s *Server) Close() error { return s.group.Close() }

func ignoreNetClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// checkInsecureListen admits the plain development listener only where it cannot expose a
// fleet: with the development CA the server made in its data directory (never an operator's
// CA) and on a loopback address.
func checkInsecureListen(opts Options, ca *pki.CA) error {
	addr := opts.MQTT.InsecureListen
	if opts.CACert != "" || !ca.IsDevelopment() {
		return fmt.Errorf("--insecure-mqtt-listen %s refused: the plain listener is for development only and needs the development CA the server makes in its data directory, not an operator's CA", addr)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--insecure-mqtt-listen %s: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--insecure-mqtt-listen %s refused: the plain listener is for development only and binds a loopback address only (for example 127.0.0.1:1884)", addr)
	}
	return nil
}

// loadCA loads the operator's CA when one is given, writing its bundle to DataDir/ca.pem for
// devices and tools, or else the development CA of the data directory, creating it on first
// start.
func loadCA(opts Options, clk clock.Clock, logger *slog.Logger) (*pki.CA, error) {
	if opts.CACert != "" { // Validate saw that CAKey is given too
		ca, err := pki.LoadCAFiles(opts.CACert, opts.CAKey)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		if err := atomicfile.Write(filepath.Join(opts.DataDir, pki.CAFile), ca.PEM, 0o644); err != nil {
			return nil, err
		}
		logger.Info("using operator-supplied CA", "subject", ca.Cert.Subject.String(), "intermediate", ca.Intermediate())
		return ca, nil
	}
	ca, created, err := pki.LoadOrCreateCA(opts.DataDir, clk.Now())
	if err != nil {
		return nil, err
	}
	if created {
		logger.Info("created development CA", "path", filepath.Join(opts.DataDir, pki.CAFile))
	}
	return ca, nil
}

// loadOrCreateToken reads the admin token, creating a random one (mode 0600) when absent.
func loadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("admin token file %s is empty: delete it to make a new token", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read admin token: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("make admin token: %w", err)
	}
	tok := hex.EncodeToString(raw)
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}
