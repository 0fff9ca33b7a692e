// Package sim is the fleet simulator behind `millwright sim`: it runs many real device agents
// (package agent, the same code as millwright-agent) in one process against a server, each
// with its own certificate, spool and schedule, sampling simulated sensors, over a network
// whose latency, loss, outages and NAT timeouts are simulated in the agents' dialer, on
// firmware that may misbehave.
//
// Devices are drawn from profiles (hardware model, network operator, firmware version,
// metric set, schedule, network), read from a YAML file or made from flags. Their credentials
// come either from the server's development CA (the simulator issues them, and a Registrar —
// the command line's API client — registers them with the server in bulk) or from EST
// enrollment with one-time tokens; either way they are stored, so a second run reuses them.
// The simulator never opens the server's registry. Run reports live progress and ends with a
// Summary built from the agents' own counters.
package sim

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/agent/estclient"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
	"github.com/millwright/millwright/protocol/firmware"
)

// Registrar records device certificates with the server, so that it admits their devices:
// the command line passes its client of the server's API (POST /api/v1/certificates).
type Registrar interface {
	// RegisterCertificates records certs (a certificate already recorded for its device is
	// skipped) and returns how many were newly recorded.
	RegisterCertificates(ctx context.Context, certs []*x509.Certificate) (int, error)
}

// ErrConfig is wrapped by errors in a Config; the message names the flag.
var ErrConfig = errors.New("invalid simulation")

// Config is one simulation run. Zero values mean the documented defaults.
type Config struct {
	// Server is the server's MQTT/TLS address, host:port. Its host is also the name the
	// server's certificate must carry.
	Server string
	// DataDir is the server's data directory: its development CA issues the devices'
	// certificates. Used unless Token or TokenFile is set.
	DataDir string
	// Registrar registers the devices issued from the development CA with the server; every
	// device's certificate is offered again on each run, so a server with a fresh registry
	// gets the whole fleet. Nil leaves registration out: the server knows the devices already,
	// or is not Millwright (another broker trusting the same CA). Unused with tokens: the
	// server registers the devices it enrolls.
	Registrar Registrar
	// TokenFile holds one-time enrollment tokens, one per line, the i-th for device i (blank
	// and # lines skipped); Token is a single token (one device). With either, devices enroll
	// over EST, stating their profile's hardware model, and get the IDs the server assigns.
	TokenFile, Token string
	// CAFile is the CA certificate that verifies the server when the devices enroll; required
	// with tokens. With the development CA the devices trust that CA.
	CAFile string
	// ESTServer is the server's HTTPS base URL for enrollment. Default https://<server
	// host>:8443.
	ESTServer string
	// CredsDir stores the devices' credentials, <CredsDir>/<IDPrefix>.pem. Default
	// <DataDir>/sim with the development CA, ./sim-credentials with tokens.
	CredsDir string
	// Devices is how many devices run. Required, at least 1.
	Devices int
	// IDPrefix names the devices <IDPrefix>-<n>, n from 1. Default "sim".
	IDPrefix string
	// Duration is how long the devices run before the simulation drains and stops; 0 until
	// ctx ends.
	Duration time.Duration
	// SpoolDir holds the spools, one directory per device; default a temporary directory
	// removed at the end. A kept spool directory is used again by the next run.
	SpoolDir string
	// SpoolSync is the spools' fsync policy. Default never: a thousand spools fsyncing would
	// measure the disk, not the server.
	SpoolSync *spool.SyncPolicy
	// Profiles are the device profiles; default one profile from the overrides alone.
	Profiles File
	// Overrides apply to every profile.
	Overrides Overrides
	// Sync starts every device at once with no scatter: no schedule jitter, first send at
	// start. It shows what scatter prevents.
	Sync bool
	// Backoff is the agents' reconnect backoff; zero fields mean the agent's defaults.
	Backoff backoff.Policy
	// SourceAddrs are local addresses to bind outgoing connections to, device i using
	// SourceAddrs[i mod len]; more addresses allow more connections than one address's
	// ephemeral port range. Default: let the system choose.
	SourceAddrs []string
	// ProgressInterval is how often a progress line is written when Progress is not a
	// terminal. Default 5 s.
	ProgressInterval time.Duration
	// DrainTimeout bounds the drain at the end, when sampling has stopped and the agents flush
	// their spools. Default 15 s.
	DrainTimeout time.Duration
	// FirmwareKey is a file of trusted firmware signing keys (PEM public keys, --firmware-key):
	// with it the devices take signed firmware updates (firmware.update), download them from
	// the server's device HTTPS port (ESTServer's port), "install" them by changing their
	// firmware version — their connect facts and their firmware's misbehaviour follow — and
	// restart their agent. Default none: firmware.update is refused.
	FirmwareKey string
	// Seed makes the random draws repeatable; 0 draws a seed.
	Seed uint64
	// Clock drives the agents, the sensors and the simulated faults. Default real.
	Clock clock.Clock
	// Logger receives the simulator's logs, AgentLogger the agents'. Default discard; the
	// agents' default is Logger.
	Logger, AgentLogger *slog.Logger
	// Progress receives the live status; nil for none. Terminal makes it a refreshing line.
	Progress io.Writer
	Terminal bool
}

// Defaults.
const (
	DefaultServer           = "localhost:8883"
	DefaultIDPrefix         = "sim"
	DefaultProgressInterval = 5 * time.Second
	DefaultDrainTimeout     = 15 * time.Second
	fdsPerDevice            = 4 // the connection, the spool's lock file and open segment, the sequence counter
)

func cfgErr(flag, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, flag, fmt.Sprintf(format, args...))
}

func (c *Config) setDefaults() error {
	if c.Server == "" {
		c.Server = DefaultServer
	}
	host, _, err := net.SplitHostPort(c.Server)
	if err != nil || host == "" {
		return cfgErr("--server", "%q is not host:port", c.Server)
	}
	if c.Devices < 1 {
		return cfgErr("--devices", "want at least 1, got %d", c.Devices)
	}
	if c.IDPrefix == "" {
		c.IDPrefix = DefaultIDPrefix
	}
	if err := protocol.ValidateDeviceID(c.IDPrefix + "-" + strconv.Itoa(c.Devices)); err != nil {
		return cfgErr("--id-prefix", "%q does not make valid device IDs: %v", c.IDPrefix, err)
	}
	if c.Duration < 0 {
		return cfgErr("--duration", "must not be negative, got %v", c.Duration)
	}
	if c.Token != "" && c.TokenFile != "" {
		return cfgErr("--token", "give --token or --token-file, not both")
	}
	if c.Token != "" && c.Devices != 1 {
		return cfgErr("--token", "a token enrolls one device; use --token-file with one token per device for --devices %d", c.Devices)
	}
	if c.enrolling() && c.CAFile == "" {
		return cfgErr("--ca", "required with enrollment tokens (the CA that verifies the server)")
	}
	if !c.enrolling() && c.DataDir == "" {
		return cfgErr("--data", "required without enrollment tokens")
	}
	if c.ESTServer == "" {
		c.ESTServer = "https://" + net.JoinHostPort(host, "8443")
	}
	if c.FirmwareKey != "" {
		if _, err := os.Stat(c.FirmwareKey); err != nil {
			return cfgErr("--firmware-key", "%v", err)
		}
		if _, err := c.httpsPort(); err != nil {
			return cfgErr("--est-server", "%v", err)
		}
	}
	if c.CredsDir == "" {
		if c.enrolling() {
			c.CredsDir = "sim-credentials"
		} else {
			c.CredsDir = filepath.Join(c.DataDir, "sim")
		}
	}
	if c.SpoolSync == nil {
		p := spool.SyncNever
		c.SpoolSync = &p
	}
	for _, a := range c.SourceAddrs {
		if net.ParseIP(a) == nil {
			return cfgErr("--source-addrs", "%q is not an IP address", a)
		}
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = DefaultProgressInterval
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	if c.Clock == nil {
		c.Clock = clock.Real()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.AgentLogger == nil {
		c.AgentLogger = c.Logger
	}
	if len(c.Profiles.Profiles) == 0 {
		c.Profiles.Profiles = []Profile{{Name: "default"}}
	}
	// The overrides are laid over a copy: the caller's profiles stay as given.
	c.Profiles.Profiles = slices.Clone(c.Profiles.Profiles)
	for i := range c.Profiles.Profiles {
		c.Overrides.apply(&c.Profiles.Profiles[i])
	}
	if err := c.Profiles.Validate(); err != nil {
		return err
	}
	if c.Backoff.Jitter > backoff.JitterNone {
		return cfgErr("--backoff-jitter", "%d is not a jitter mode", c.Backoff.Jitter)
	}
	if need, limit := uint64(c.Devices)*fdsPerDevice+200, openFileLimit(); need > limit {
		return cfgErr("--devices", "%d devices need about %d open files (%d each: connection, spool lock, spool segment, sequence file) but this process may open %d; run several simulators with distinct --id-prefix",
			c.Devices, need, fdsPerDevice, limit)
	}
	return nil
}

func (c *Config) enrolling() bool { return c.Token != "" || c.TokenFile != "" }

// httpsPort is the server's device HTTPS port: ESTServer's.
func (c *Config) httpsPort() (int, error) {
	u, err := url.Parse(c.ESTServer)
	if err != nil {
		return 0, err
	}
	port := u.Port()
	if port == "" {
		return 443, nil
	}
	return strconv.Atoi(port)
}

// device is one simulated device.
type device struct {
	name    string // <prefix>-<n>
	profile int

	mu     sync.Mutex
	cur    *agent.Agent // replaced when the server restarts the agent (agent.restart)
	before agent.Stats  // the counters of the agents it replaced, summed
	fw     string       // the firmware version a firmware update installed; "" the profile's
}

// firmware is the version the device runs (installed by an update), "" for its profile's.
func (d *device) firmware() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fw
}

func (d *device) setFirmware(v string) {
	d.mu.Lock()
	d.fw = v
	d.mu.Unlock()
}

// simInstaller is a simulated device's firmware installer: installing an image changes the
// version the device runs after its agent restarts; a rollback changes it back.
type simInstaller struct{ d *device }

func (i simInstaller) Install(_ context.Context, _ string, m firmware.Manifest) error {
	i.d.setFirmware(m.Version)
	return nil
}

func (i simInstaller) Commit(context.Context, agent.PendingUpdate) error { return nil }

func (i simInstaller) Rollback(_ context.Context, u agent.PendingUpdate) error {
	i.d.setFirmware(u.From)
	return nil
}

func (d *device) agent() *agent.Agent {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// replace puts a new agent for the device in place of the one that stopped.
func (d *device) replace(a *agent.Agent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.cur.Stats()
	b := &d.before
	b.ConnectAttempts += st.ConnectAttempts
	b.Connects += st.Connects
	b.MeasurementsStored += st.MeasurementsStored
	b.MeasurementsInvalid += st.MeasurementsInvalid
	b.RecordsSent += st.RecordsSent
	b.BatchesSent += st.BatchesSent
	b.BytesSent += st.BytesSent
	b.ConnectFailures = addCounts(b.ConnectFailures, st.ConnectFailures)
	b.Reconnects = addCounts(b.Reconnects, st.Reconnects)
	b.Dropped = addCounts(b.Dropped, st.Dropped)
	d.cur = a
}

// stats returns the device's counters across its agents, and its current agent's state.
func (d *device) stats() agent.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.cur.Stats()
	b := d.before
	st.ConnectAttempts += b.ConnectAttempts
	st.Connects += b.Connects
	st.MeasurementsStored += b.MeasurementsStored
	st.MeasurementsInvalid += b.MeasurementsInvalid
	st.RecordsSent += b.RecordsSent
	st.BatchesSent += b.BatchesSent
	st.BytesSent += b.BytesSent
	st.ConnectFailures = addCounts(maps.Clone(st.ConnectFailures), b.ConnectFailures)
	st.Reconnects = addCounts(maps.Clone(st.Reconnects), b.Reconnects)
	st.Dropped = addCounts(maps.Clone(st.Dropped), b.Dropped)
	return st
}

func addCounts(dst, src map[string]uint64) map[string]uint64 {
	if dst == nil {
		dst = map[string]uint64{}
	}
	for k, n := range src {
		dst[k] += n
	}
	return dst
}

// Run runs the simulation until cfg.Duration has passed or ctx ends, then stops sampling,
// lets the agents flush their spools (at most cfg.DrainTimeout), stops them and returns the
// summary. An error before the devices start is returned as such.
func Run(ctx context.Context, cfg Config) (*Summary, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	clk := cfg.Clock
	host, _, _ := net.SplitHostPort(cfg.Server)

	names := make([]string, cfg.Devices)
	for i := range names {
		names[i] = cfg.IDPrefix + "-" + strconv.Itoa(i+1)
	}
	assigned := assign(cfg.Profiles.Profiles, len(names))
	models := make([]string, len(names))
	for i, pi := range assigned {
		models[i] = cfg.Profiles.Profiles[pi].HardwareModel
	}
	until := time.Now().Add(cfg.Duration + 24*time.Hour)
	certs, roots, prov, err := credentials(ctx, &cfg, names, models, until)
	if err != nil {
		return nil, err
	}
	log.Info("devices ready", "devices", len(names), "reused", prov.Reused, "issued", prov.Issued,
		"enrolled", prov.Enrolled, "registered", prov.Registered, "took", prov.Took.Round(time.Millisecond))

	spoolBase := cfg.SpoolDir
	if spoolBase == "" {
		if spoolBase, err = os.MkdirTemp("", "millwright-sim-"); err != nil {
			return nil, fmt.Errorf("make spool directory: %w", err)
		}
		defer os.RemoveAll(spoolBase)
	}

	fl := &faults{}
	profiles := make([]*resolved, len(cfg.Profiles.Profiles))
	for i, p := range cfg.Profiles.Profiles {
		profiles[i] = resolve(p, cfg.Profiles.Firmware)
		if o := p.Network.Outage; o != nil {
			profiles[i].outage = newOutage(*o, fl)
		}
	}
	stopSampling := make(chan struct{})
	devs := make([]*device, len(names))
	closeAll := func() {
		for _, d := range devs {
			if d != nil && d.cur != nil {
				_ = d.cur.Close()
			}
		}
	}
	for i, pi := range assigned {
		d := &device{name: names[i], profile: pi}
		if d.cur, err = newAgent(&cfg, i, d, profiles[pi], certs[i], roots, host, spoolBase, fl, stopSampling); err != nil {
			closeAll()
			return nil, fmt.Errorf("device %s: %w", d.name, err)
		}
		devs[i] = d
	}

	// Run.
	start := clk.Now()
	actx, stopAgents := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAgents()
	var wg sync.WaitGroup
	for _, p := range profiles {
		if p.outage != nil {
			p.outage.start = start
			wg.Go(func() { p.outage.run(actx, clk) })
		}
	}
	errs := make([]error, len(devs))
	for i, d := range devs {
		wg.Go(func() {
			for {
				err := d.agent().Run(actx)
				if !errors.Is(err, agent.ErrRestartRequested) || actx.Err() != nil {
					errs[i] = ignoreRestart(err)
					return
				}
				// The server sent agent.restart: the device's agent starts afresh in this
				// process, on the same spool, as millwright-agent would execute itself anew.
				a, err := newAgent(&cfg, i, d, profiles[d.profile], certs[i], roots, host, spoolBase, fl, stopSampling)
				if err != nil {
					errs[i] = fmt.Errorf("device %s: restart: %w", d.name, err)
					return
				}
				log.Info("agent restarted, as the server asked", "device", d.name)
				d.replace(a)
			}
		})
	}
	mon := newMonitor(&cfg, devs, profiles, fl, start)
	log.Info("simulation running", "devices", len(devs), "server", cfg.Server, "duration", cfg.Duration, "seed", cfg.Seed)

	runCtx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = contextTimeout(ctx, clk, cfg.Duration)
		defer cancel()
	}
	mon.watch(runCtx, false)
	interrupted := ctx.Err() != nil

	// Drain: sampling stops, the agents send what they hold.
	close(stopSampling)
	drainStart := clk.Now()
	dctx, cancelDrain := contextTimeout(context.Background(), clk, cfg.DrainTimeout)
	go func() {
		defer cancelDrain()
		for dctx.Err() == nil {
			left := 0
			for _, d := range devs {
				if a := d.agent(); a.Stats().Spool.Records > 0 {
					left++
					a.Flush()
				}
			}
			if left == 0 {
				return
			}
			clock.Sleep(dctx, clk, 200*time.Millisecond)
		}
	}()
	mon.watch(dctx, true)
	drained := clk.Now().Sub(drainStart)

	final := mon.sample() // the state before the connections close
	stopAgents()
	wg.Wait()
	mon.finish()
	s := mon.summary(final, drainStart, drained, interrupted, prov)
	return s, errors.Join(errs...)
}

// ignoreRestart drops ErrRestartRequested from the error of an agent that was asked to
// restart as the simulation ended: it stopped as it should.
func ignoreRestart(err error) error {
	if !errors.Is(err, agent.ErrRestartRequested) {
		return err
	}
	var rest []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !errors.Is(e, agent.ErrRestartRequested) {
				rest = append(rest, e)
			}
		}
	}
	return errors.Join(rest...)
}

// credentials provisions the devices and returns their certificates and the pool that
// verifies the server. models[i] is the hardware model device i states when it enrolls.
func credentials(ctx context.Context, cfg *Config, names, models []string, until time.Time) ([]tls.Certificate, *x509.CertPool, provision, error) {
	path := credsFile(cfg.CredsDir, cfg.IDPrefix)
	if !cfg.enrolling() {
		ca, err := pki.LoadCA(cfg.DataDir)
		if err != nil {
			return nil, nil, provision{}, fmt.Errorf("%w (start the server once with --data %s, or give enrollment tokens)", err, cfg.DataDir)
		}
		certs, p, err := provisionDev(ctx, ca, cfg.Registrar, path, names, until)
		return certs, ca.Pool(), p, err
	}
	caPEM, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return nil, nil, provision{}, fmt.Errorf("read --ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, nil, provision{}, cfgErr("--ca", "%s holds no certificate", cfg.CAFile)
	}
	tokens := tokenList{source: "--token", tokens: []token{{value: cfg.Token, where: "--token"}}}
	if cfg.TokenFile != "" {
		if tokens, err = readTokens(cfg.TokenFile); err != nil {
			return nil, nil, provision{}, err
		}
	}
	c := &estclient.Client{Server: cfg.ESTServer, Roots: roots}
	certs, p, err := provisionEnroll(ctx, c, tokens, models, path, names, until)
	return certs, roots, p, err
}

// token is one enrollment token and where it was given, for error messages.
type token struct {
	value string
	where string // "the token on line 4 of tokens.txt", or "--token"
}

// tokenList is the tokens of a run in device order, and where they came from.
type tokenList struct {
	source string // the token file, or "--token"
	tokens []token
}

// readTokens reads one token per line; blank lines and lines starting with # are skipped.
func readTokens(path string) (tokenList, error) {
	l := tokenList{source: path}
	data, err := os.ReadFile(path)
	if err != nil {
		return l, fmt.Errorf("read --token-file: %w", err)
	}
	for n, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && line[0] != '#' {
			l.tokens = append(l.tokens, token{value: line, where: fmt.Sprintf("the token on line %d of %s", n+1, path)})
		}
	}
	if len(l.tokens) == 0 {
		return l, cfgErr("--token-file", "%s holds no token", path)
	}
	return l, nil
}

// newAgent makes device i's agent, running the firmware dev runs.
func newAgent(cfg *Config, i int, dev *device, p *resolved, cert tls.Certificate, roots *x509.CertPool, host, spoolBase string, fl *faults, stop <-chan struct{}) (*agent.Agent, error) {
	if v := dev.firmware(); v != "" && v != p.FirmwareVersion {
		// An update installed another version: the device reports it, and misbehaves as it
		// does.
		q := *p
		q.FirmwareVersion, q.fwDrop = v, 0
		for _, f := range cfg.Profiles.Firmware {
			if f.Version == v {
				q.fwDrop = f.DropInterval
			}
		}
		p = &q
	}
	ac := agent.DefaultConfig()
	ac.TLS.ServerName = host
	ac.Uplink.DevAddress = cfg.Server
	ac.Uplink.Keepalive = p.keepalive
	if cfg.Backoff.Base > 0 {
		ac.Uplink.Backoff.Base = cfg.Backoff.Base
	}
	if cfg.Backoff.Cap > 0 {
		ac.Uplink.Backoff.Cap = cfg.Backoff.Cap
	}
	ac.Uplink.Backoff.Jitter = cfg.Backoff.Jitter
	ac.Spool.Dir = filepath.Join(spoolBase, cert.Leaf.Subject.CommonName)
	ac.Spool.Sync = *cfg.SpoolSync
	ac.Schedule.Interval = p.Interval
	ac.Schedule.Jitter = p.jitter
	if cfg.Sync {
		ac.Schedule.Jitter = 0
		ac.Schedule.FirstSend = agent.FirstSendImmediate
	}
	ac.Health.Interval = p.healthInterval
	ac.Identity = agent.IdentityConfig{HardwareModel: p.HardwareModel, NetworkOperator: p.NetworkOperator, FirmwareVersion: p.FirmwareVersion}

	rnd := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
	d := &dialer{clk: cfg.Clock, net: p.Network, fwDrop: p.fwDrop, outage: p.outage, faults: fl,
		rnd: &lockedRand{r: rand.New(rand.NewPCG(cfg.Seed^0x5eed, uint64(i)))}}
	d.base.KeepAlive = 30 * time.Second
	if n := len(cfg.SourceAddrs); n > 0 {
		d.base.LocalAddr = &net.TCPAddr{IP: net.ParseIP(cfg.SourceAddrs[i%n])}
	}
	var srcs []source.Source
	if len(p.metrics) > 0 {
		srcs = append(srcs, newSensors(cfg.Clock, p.SampleInterval, p.metrics, rand.New(rand.NewPCG(cfg.Seed^0xda7a, uint64(i))), stop))
	}
	opts := agent.Options{Clock: cfg.Clock, Logger: cfg.AgentLogger, Rand: rnd.Int64N, Dialer: d,
		Sources: srcs, Certificate: &cert, RootCAs: roots}
	if cfg.FirmwareKey != "" {
		ac.OTA.TrustedKeysFile = cfg.FirmwareKey
		ac.Uplink.HTTPSPort, _ = cfg.httpsPort()
		opts.Installer = simInstaller{dev}
	}
	return agent.New(ac, opts)
}

// contextTimeout is context.WithTimeout on clk.
func contextTimeout(parent context.Context, clk clock.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	t := clk.AfterFunc(d, cancel)
	return ctx, func() { t.Stop(); cancel() }
}
