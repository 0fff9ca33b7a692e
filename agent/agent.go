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
	"sync"
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
}

// Agent is a device agent: it stores measurements in the durable spool and
// sends them in batches on a scattered schedule. Create it with New, then
// call Run.
type Agent struct {
	cfg     Config
	device  string
	log     *slog.Logger
	clk     clock.Clock
	rnd     func(int64) int64
	sp      *spool.Spool
	seq     *seqCounter
	sink    *spoolSink  // the spool writer; health goes here directly
	in      source.Sink // what sources write to: sink, or agg wrapping it
	agg     *aggregate.Aggregator
	up      uplink
	m       *counters
	sources []source.Source
	rot     *estclient.Rotator // nil without tls.est_server

	// sender state, owned by the send loop (window also read by Stats)
	winMu   sync.Mutex
	window  *Window
	sched   *Schedule
	retries *backoff.Backoff
	pending *batch
	flush   chan struct{} // Flush's request to the send loop

	closeOnce sync.Once
	closeErr  error
}

// New checks the configuration, loads the credentials, opens the spool and
// prepares the sources. It does not touch the network; Run does.
func New(cfg Config, opts Options) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, m: newCounters(), flush: make(chan struct{}, 1)}
	a.clk = opts.Clock
	if a.clk == nil {
		a.clk = clock.Real()
	}
	a.log = opts.Logger
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.rnd = lockedRand(opts.Rand)
	tc, device, err := buildTLS(cfg, opts)
	if err != nil {
		return nil, err
	}
	a.device = device
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

	dialer := opts.Dialer
	if dialer == nil {
		dialer = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	switch cfg.Uplink.Transport {
	case TransportHTTPS:
		a.up = newHTTPSUplink(cfg.Uplink, device, tc, dialer, a.clk, a.m)
	default:
		a.up = &mqttUplink{
			device:  device,
			topic:   protocol.BatchTopic(device),
			addr:    endpoint(cfg.Uplink, device, cfg.Uplink.MQTTPort),
			cfg:     cfg.Uplink,
			props:   cfg.Identity.userProperties(),
			tls:     tc,
			dialer:  dialer,
			clk:     a.clk,
			log:     a.log.With("component", "mqtt"),
			rnd:     a.rnd,
			m:       a.m,
			backoff: backoff.New(cfg.Uplink.Backoff, a.rnd),
		}
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
	a.sink = &spoolSink{sp: a.sp, clk: a.clk}
	a.in = a.sink
	if len(cfg.Sources.Aggregate) > 0 {
		a.agg = aggregate.Wrap(a.sink, cfg.Sources.Aggregate, a.clk)
		a.agg.SetLogger(a.log.With("component", "aggregate"))
		a.in = a.agg
	}
	a.window = NewWindow(cfg.Batch)
	a.sched = NewSchedule(cfg.Schedule, a.rnd)
	a.retries = backoff.New(cfg.Uplink.Backoff, a.rnd)

	srcs, err := buildSources(cfg.Sources, a.clk, a.log)
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
func (a *Agent) Sink() source.Sink { return a.in }

// Stats returns a snapshot of the agent's counters and spool.
func (a *Agent) Stats() Stats {
	st := Stats{DeviceID: a.device, Spool: a.sp.Stats(), Seq: a.seq.current()}
	a.m.snapshot(&st)
	st.MeasurementsStored, st.MeasurementsInvalid = a.sink.written.Load(), a.sink.rejected.Load()
	if _, ok := a.up.(*httpsUplink); ok {
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

// Run runs the sources, the connection and the send schedule until ctx
// ends, then closes the spool. A source that cannot start is logged and the
// rest keep running: measurements already stored must still be delivered.
// With tls.est_server set it also renews the certificate files: at
// two-thirds of the certificate's lifetime, and by dormant re-enrollment
// once the certificate has expired (the device was off); the connection
// picks up the new pair at its next attempt. Run returns the error of
// closing the spool, if any.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.log.Info("agent running", "transport", a.cfg.Uplink.Transport.String(), "sources", len(a.sources))
	var wg sync.WaitGroup
	wg.Go(func() { a.up.run(ctx) })
	wg.Go(func() { a.sendLoop(ctx) })
	wg.Go(func() { a.healthLoop(ctx) })
	if a.rot != nil {
		wg.Go(func() {
			if err := a.rot.Run(ctx); err != nil {
				a.log.Error("certificate renewal stopped", "error", err)
			}
		})
	}
	var srcs sync.WaitGroup
	for _, s := range a.sources {
		srcs.Go(func() {
			if err := s.Run(ctx, a.in); err != nil && ctx.Err() == nil {
				a.log.Error("source stopped", "source", s.Name(), "error", err)
			}
		})
	}
	<-ctx.Done()
	srcs.Wait()
	var err error
	if a.agg != nil {
		// Write the open aggregation windows before the spool closes.
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = a.agg.Flush(fctx)
		fcancel()
	}
	wg.Wait()
	return errors.Join(err, a.Close())
}

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
