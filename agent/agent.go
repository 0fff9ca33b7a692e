package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/agent/estclient"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// Options are what a program embedding the agent passes besides the
// configuration. Every field may be left zero.
type Options struct {
	// Clock drives the send schedule, the batch window, backoff waits,
	// health reports and the spool. Network timeouts (connect, ack) use
	// real time. Default clock.Real().
	Clock clock.Clock
	// Logger receives the agent's logs. Default: discard.
	Logger *slog.Logger
	// Rand draws a uniform integer in [0, n) for scatter and backoff
	// jitter; it is called under a lock, so it need not be safe for
	// concurrent use. Default math/rand/v2.
	Rand func(n int64) int64
	// Dialer opens TCP connections. Default a net.Dialer with TCP
	// keepalive.
	Dialer Dialer
	// Sources run in addition to the configured ones.
	Sources []source.Source
	// Certificate is the device certificate with its key, used instead of
	// tls.cert_file and tls.key_file. Such a certificate is not renewed:
	// renewal through tls.est_server writes the files.
	Certificate *tls.Certificate
	// RootCAs verify the server's certificate, used instead of tls.ca_file.
	RootCAs *x509.CertPool
	// LogLevel is the level variable of Logger's handler (LogConfig.NewLeveledLogger
	// returns both). With it, the server's remote configuration may set log.level while
	// the agent runs; without it, log.level is refused remotely.
	LogLevel *slog.LevelVar
	// LogLines is how many recent log lines the agent keeps in memory for the diag.logs
	// command (at most 32 KiB of them). Default DefaultLogLines (200); negative keeps none.
	LogLines int
	// Installer installs firmware images for the firmware.update command and commits or
	// rolls back an installed one. Default: the programs of ota.install_command,
	// ota.commit_command and ota.rollback_command.
	Installer Installer
}

// Agent is a device agent: it stores measurements in the durable spool and
// sends them in batches on a scattered schedule. Create it with New, then
// call Run.
type Agent struct {
	local   Config // the configuration file's
	device  string
	log     *slog.Logger
	level   *slog.LevelVar // nil: the embedding program's logger has a fixed level
	ring    *logRing
	clk     clock.Clock
	rnd     func(int64) int64
	tls     *tls.Config
	dialer  Dialer
	sp      *spool.Spool
	seq     *seqCounter
	sink    *spoolSink    // the spool writer; health goes here directly
	stage   *stageSink    // what sources write to: sink, or an aggregator in front of it
	system  source.Source // the system source at start, nil when off
	up      uplink
	m       *counters
	sources []source.Source    // every other source: exec, local_api, Options.Sources
	rot     *estclient.Rotator // nil without tls.est_server
	cmds    *cmdStore
	parts   runParts
	ota     *ota

	// connected is poked when a connection to the server comes up (MQTT).
	connected chan struct{}
	// updateHook, if set, sees every update report the server took (tests).
	updateHook func(protocol.UpdateReport)

	// applyMu serialises remote configurations; cfg is the configuration in effect (the
	// local one with the remote keys applied), remote what the server set.
	applyMu sync.Mutex
	cfg     Config
	remote  remoteState

	stateBody   []byte        // the State message; nil when identity says nothing
	mailboxPoke chan struct{} // HTTPS: fetch the mailbox now
	restartReq  chan struct{} // closed by agent.restart
	restartOnce sync.Once

	// sender state, owned by the send loop; the settings may be swapped by a remote
	// configuration under winMu (window also read by Stats)
	winMu       sync.Mutex
	window      *Window
	sched       *Schedule
	batchCfg    BatchConfig
	maxPerCycle int
	retries     *backoff.Backoff
	pending     *batch
	flush       chan struct{} // Flush's request to the send loop

	closeOnce sync.Once
	closeErr  error
}

// New checks the configuration, loads the credentials, opens the spool, applies the
// remote configuration kept there over cfg and prepares the sources. It does not touch the
// network; Run does.
func New(cfg Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if f := cfg.Identity.FirmwareVersionFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, configErr("identity.firmware_version_file", "%v", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" || len(v) > 256 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return nil, configErr("identity.firmware_version_file", "%s does not hold a version (one line, at most 256 bytes)", f)
		}
		cfg.Identity.FirmwareVersion = v
	}
	a := &Agent{local: cfg, m: newCounters(), flush: make(chan struct{}, 1), restartReq: make(chan struct{}), level: opts.LogLevel,
		connected: make(chan struct{}, 1)}
	a.clk = opts.Clock
	if a.clk == nil {
		a.clk = clock.Real()
	}
	lines := opts.LogLines
	if lines == 0 {
		lines = DefaultLogLines
	}
	a.ring = newLogRing(max(lines, 0))
	base := opts.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	a.log = base
	if lines > 0 {
		a.log = slog.New(newTeeHandler(base.Handler(), a.ring))
	}
	a.rnd = lockedRand(opts.Rand)
	tc, device, err := buildTLS(cfg, opts)
	if err != nil {
		return nil, err
	}
	a.device, a.tls = device, tc
	a.log = a.log.With("device", device)
	if cfg.TLS.ESTServer != "" {
		if opts.Certificate != nil {
			a.log.Warn("tls.est_server is set, but the certificate passed in Options.Certificate is not renewed: renewal writes tls.cert_file and tls.key_file")
		} else {
			a.rot = &estclient.Rotator{
				CertPath: cfg.TLS.CertFile,
				KeyPath:  cfg.TLS.KeyFile,
				Client:   &estclient.Client{Server: cfg.TLS.ESTServer, Roots: tc.RootCAs},
				Clock:    a.clk,
				Log:      a.log.With("component", "renewal"),
			}
		}
	}

	a.dialer = opts.Dialer
	if a.dialer == nil {
		a.dialer = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	if err := a.setupOTA(cfg, opts); err != nil {
		return nil, err
	}

	so := cfg.Spool.Options
	so.Clock = a.clk
	so.Logger = a.log.With("component", "spool")
	if a.sp, err = spool.Open(cfg.Spool.Dir, so); err != nil {
		return nil, fmt.Errorf("spool.dir %s: %w", cfg.Spool.Dir, err)
	}
	if a.seq, err = openSeq(cfg.Spool.Dir); err != nil {
		return nil, errors.Join(fmt.Errorf("spool.dir %s: %w", cfg.Spool.Dir, err), a.sp.Close())
	}
	if a.cmds, err = openCmdStore(cfg.Spool.Dir); err != nil {
		a.log.Error("command record", "error", err)
	}
	a.cfg = cfg
	if dc, err := loadRemoteConfig(cfg.Spool.Dir); err != nil {
		a.log.Error("the remote configuration kept in the spool directory is ignored", "error", err)
	} else if dc.Version > 0 {
		ov := overlayRemote(cfg, dc.Config, a.level != nil)
		a.cfg = ov.cfg
		a.remote = remoteState{version: dc.Version, applied: ov.applied, refused: ov.refused}
		a.m.setConfig(dc.Version, len(ov.refused))
		if a.level != nil {
			l, _ := parseLevel(a.cfg.Log.Level)
			a.level.Set(l)
		}
		a.log.Info("remote configuration applied over the local file", "version", dc.Version,
			"applied", len(ov.applied), "refused", len(ov.refused))
	}
	eff := a.cfg

	a.stateBody = stateBody(cfg.Identity)
	switch cfg.Uplink.Transport {
	case TransportHTTPS:
		a.up = newHTTPSUplink(cfg.Uplink, device, tc, a.dialer, a.clk, a.m)
		a.mailboxPoke = make(chan struct{}, 1)
	default:
		mu := &mqttUplink{
			device:  device,
			topic:   protocol.BatchTopic(device),
			addr:    endpoint(cfg.Uplink, device, cfg.Uplink.MQTTPort),
			cfg:     cfg.Uplink,
			props:   append(cfg.Identity.userProperties(), sendIntervalProperty(eff.Schedule)),
			tls:     tc,
			dialer:  a.dialer,
			clk:     a.clk,
			log:     a.log.With("component", "mqtt"),
			rnd:     a.rnd,
			m:       a.m,
			backoff: backoff.New(cfg.Uplink.Backoff, a.rnd),
			recv:    a.receiveMQTT,
			state:   a.stateBody,
			onOpen:  a.pokeConnected,
		}
		mu.keepalive.Store(int64(eff.Uplink.Keepalive))
		a.up = mu
	}

	a.sink = &spoolSink{sp: a.sp, clk: a.clk}
	a.stage = &stageSink{spool: a.sink}
	if len(eff.Sources.Aggregate) > 0 {
		agg := aggregate.Wrap(a.sink, eff.Sources.Aggregate, a.clk)
		agg.SetLogger(a.log.With("component", "aggregate"))
		a.stage.swap(agg)
	}
	a.window = NewWindow(eff.Batch)
	a.sched = NewSchedule(eff.Schedule, a.rnd)
	a.batchCfg, a.maxPerCycle = eff.Batch, eff.Schedule.MaxBatchesPerCycle
	a.retries = backoff.New(cfg.Uplink.Backoff, a.rnd)

	if eff.Sources.System != nil {
		if a.system, err = buildSystem(eff.Sources.System, a.clk, a.log); err != nil {
			return nil, errors.Join(err, a.Close())
		}
	}
	srcs, err := buildSources(eff.Sources, a.clk, a.log)
	if err != nil {
		return nil, errors.Join(err, a.Close())
	}
	a.sources = append(srcs, opts.Sources...)
	return a, nil
}

// lockedRand serialises rnd (default math/rand/v2).
func lockedRand(rnd func(int64) int64) func(int64) int64 {
	if rnd == nil {
		return rand.Int64N
	}
	var mu sync.Mutex
	return func(n int64) int64 {
		mu.Lock()
		defer mu.Unlock()
		return rnd(n)
	}
}

// DeviceID returns the device's ID (the certificate's common name).
func (a *Agent) DeviceID() string { return a.device }

// Sink returns the sink that stores measurements in the spool (through the
// configured aggregation rules, if any), the one the sources write to.
// Programs embedding the agent write their own measurements through it; it
// works from New until Close. Records must be resolved (no base fields
// needed) with a name and one value; a time below 2^28 s is relative to the
// agent's clock. Invalid records are refused with an error wrapping
// ErrInvalidMeasurement, before anything of the call is stored.
func (a *Agent) Sink() source.Sink { return a.stage }

// Stats returns a snapshot of the agent's counters and spool.
func (a *Agent) Stats() Stats {
	st := Stats{DeviceID: a.device, Spool: a.sp.Stats(), Seq: a.seq.current()}
	a.m.snapshot(&st)
	st.MeasurementsStored, st.MeasurementsInvalid = a.sink.written.Load(), a.sink.rejected.Load()
	if a.local.Uplink.Transport == TransportHTTPS {
		st.Connected = true
	}
	a.winMu.Lock()
	st.Window = a.window.Current()
	a.winMu.Unlock()
	if n := st.Spool.DroppedOverflow; n > 0 {
		st.Dropped[dropOverflow] += n
	}
	if n := st.Spool.DroppedOverflowEvents; n > 0 {
		st.Dropped[dropOverflowEvent] += n
	}
	if n := st.Spool.TornRecords; n > 0 {
		st.Dropped[dropTorn] += n
	}
	return st
}

// Run runs the sources, the connection, the send schedule and the device channel until ctx
// ends, then closes the spool. A source that cannot start is logged and the rest keep
// running: measurements already stored must still be delivered. With tls.est_server set it
// also renews the certificate files: at two-thirds of the certificate's lifetime, and by
// dormant re-enrollment once the certificate has expired (the device was off); the connection
// picks up the new pair at its next attempt. Run returns the error of closing the spool, if
// any; after the server's agent.restart command it stops by itself and returns an error that
// wraps ErrRestartRequested.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.log.Info("agent running", "transport", a.local.Uplink.Transport.String(), "sources", len(a.sources)+boolInt(a.system != nil))
	a.parts.begin(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.up.run(ctx) })
	wg.Go(func() { a.sendLoop(ctx) })
	if a.rot != nil {
		wg.Go(func() {
			if err := a.rot.Run(ctx); err != nil {
				a.log.Error("certificate renewal stopped", "error", err)
			}
		})
	}
	if u, ok := a.up.(*httpsUplink); ok {
		wg.Go(func() { a.mailboxLoop(ctx, u) })
	}
	a.parts.goWork(a.otaConfirm)
	a.applyMu.Lock()
	if iv := a.cfg.Health.Interval; iv > 0 {
		a.parts.restart(&a.parts.health, func(ctx context.Context) { a.healthLoop(ctx, iv) })
	}
	if a.system != nil {
		a.parts.restart(&a.parts.system, a.runSource(a.system))
	}
	a.applyMu.Unlock()
	var srcs sync.WaitGroup
	for _, s := range a.sources {
		srcs.Go(func() { a.runSource(s)(ctx) })
	}
	restart := false
	select {
	case <-ctx.Done():
	case <-a.restartReq:
		restart = true
		a.log.Info("stopping to restart, as the server asked")
		cancel()
	}
	srcs.Wait()
	a.parts.end()
	var err error
	if agg := a.stage.current(); agg != nil {
		// Write the open aggregation windows before the spool closes.
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = agg.Flush(fctx)
		fcancel()
	}
	wg.Wait()
	a.ota.httpc.CloseIdleConnections()
	err = errors.Join(err, a.Close())
	if restart {
		return errors.Join(ErrRestartRequested, err)
	}
	return err
}

// runSource returns the function that runs s until its context ends.
func (a *Agent) runSource(s source.Source) func(context.Context) {
	return func(ctx context.Context) {
		if err := s.Run(ctx, a.stage); err != nil && ctx.Err() == nil {
			a.log.Error("source stopped", "source", s.Name(), "error", err)
		}
	}
}

// requestRestart makes Run stop and return ErrRestartRequested.
func (a *Agent) requestRestart() { a.restartOnce.Do(func() { close(a.restartReq) }) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runParts starts the parts of a running agent that come and go while it runs: the health
// loop and the system source (restarted by a remote configuration), and the work of the
// device channel (a command, a configuration to apply). Nothing starts before Run or after
// it stopped.
type runParts struct {
	mu     sync.Mutex
	ctx    context.Context // Run's; nil outside Run
	wg     sync.WaitGroup
	health *part
	system *part
}

// part is one started part.
type part struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *runParts) begin(ctx context.Context) {
	p.mu.Lock()
	p.ctx = ctx
	p.mu.Unlock()
}

// end stops starting parts and waits for those running (Run's context has ended).
func (p *runParts) end() {
	p.mu.Lock()
	p.ctx = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// goWork runs f on a goroutine of its own with Run's context, if the agent runs.
func (p *runParts) goWork(f func(context.Context)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		return
	}
	ctx := p.ctx
	p.wg.Go(func() { f(ctx) })
}

// restart stops the part in *slot, waiting for it, and starts f in its place (none when f
// is nil). Callers serialise restarts of one slot (applyMu).
func (p *runParts) restart(slot **part, f func(context.Context)) {
	p.mu.Lock()
	old := *slot
	*slot = nil
	p.mu.Unlock()
	if old != nil {
		old.cancel()
		<-old.done
	}
	if f == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	pt := &part{cancel: cancel, done: make(chan struct{})}
	*slot = pt
	p.wg.Go(func() {
		defer close(pt.done)
		defer cancel()
		f(ctx)
	})
}

// stageSink is what the sources write to: the spool, or the aggregation stage in front of
// it, which a remote configuration may replace while the sources run.
type stageSink struct {
	spool source.Sink
	agg   atomic.Pointer[aggregate.Aggregator]
}

var _ source.Sink = (*stageSink)(nil)

func (s *stageSink) Write(ctx context.Context, recs []protocol.Record, class source.Class) error {
	if agg := s.agg.Load(); agg != nil {
		return agg.Write(ctx, recs, class)
	}
	return s.spool.Write(ctx, recs, class)
}

func (s *stageSink) current() *aggregate.Aggregator { return s.agg.Load() }

// swap puts agg (nil: none) in place and returns the one before.
func (s *stageSink) swap(agg *aggregate.Aggregator) *aggregate.Aggregator { return s.agg.Swap(agg) }

// Close releases the spool and the sequence counter (fsyncing both). Run
// calls it; call it only for an agent whose Run was never called.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		a.closeErr = errors.Join(a.seq.close(), a.sp.Close())
	})
	return a.closeErr
}

// Info describes where a configured agent would connect.
type Info struct {
	// DeviceID is the device's ID, from the certificate.
	DeviceID string
	// Endpoint is the host:port the agent dials.
	Endpoint string
	// ServerName is the name the server's certificate must carry.
	ServerName string
}

// Describe loads the configuration's credentials and says where the agent
// would connect, without opening the spool or the network.
func Describe(cfg Config) (Info, error) {
	if err := cfg.Validate(); err != nil {
		return Info{}, err
	}
	tc, device, err := buildTLS(cfg, Options{})
	if err != nil {
		return Info{}, err
	}
	port := cfg.Uplink.MQTTPort
	if cfg.Uplink.Transport == TransportHTTPS {
		port = cfg.Uplink.HTTPSPort
	}
	return Info{DeviceID: device, Endpoint: endpoint(cfg.Uplink, device, port), ServerName: tc.ServerName}, nil
}
