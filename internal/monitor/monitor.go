// Package monitor measures every device's connectivity on the server side — connects,
// disconnects by cause, traffic, batches, ingest delay, time connected — keeps a connection
// history, judges liveness against each device's own reporting interval, and writes it all,
// with the registry's facts about each device (firmware, model, operator, tags, groups), to
// the TSDB as the series of docs/monitoring.md.
package monitor

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/storage"
	ptsdb "github.com/prometheus/prometheus/tsdb"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/logx"
	"github.com/millwright/millwright/internal/registry"
)

// Store is where the series go: the TSDB.
type Store interface {
	Appender(ctx context.Context) (storage.Appender, error)
	// DB is the TSDB now; a new one (after the store reopened) numbers its series anew.
	DB() *ptsdb.DB
}

// Registry is what the monitor reads and writes in the device registry.
type Registry interface {
	FleetSnapshot(ctx context.Context) ([]registry.FleetDevice, error)
	RecordSessions(ctx context.Context, sessions []registry.Session) error
	PruneSessions(ctx context.Context, before time.Time) (int64, error)
}

const shards = 64

// Monitor is the fleet monitor. The gateway reports to it as an Observer, the ingest path
// through Ingester, the HTTPS device routes through HTTPHandler; Run writes what it counted.
type Monitor struct {
	opts  Options
	store Store
	reg   Registry
	clk   clock.Clock
	log   *slog.Logger
	node  string
	seed  maphash.Seed

	shards [shards]shard

	pmu     sync.Mutex
	pending []registry.Session // ended sessions not yet written

	// flushMu serialises flushes; it guards what only a flush touches.
	flushMu   sync.Mutex
	written   map[string]*written // by device: its series, and the facts last written
	epoch     uint64              // flushes so far
	prevWrite int64               // the time of the last write, Unix ms (0 before the first)
	db        *ptsdb.DB           // the TSDB the series references in written belong to
	lastPrune time.Time
	live      *Liveness // the last flush's judgement
	errs      *logx.Every
	liveMu    sync.RWMutex
	met       metrics
}

type shard struct {
	mu   sync.Mutex
	devs map[string]*counters
}

// counters is what the monitor counted of one device since the server started.
type counters struct {
	connects    uint64
	disconnects [numCauses]uint64
	// closed sums the traffic of ended MQTT connections and of HTTPS requests.
	closed         traffic
	live           map[*gateway.Connection]struct{}
	sessionSeconds float64
	batches        map[string]uint64
	feedback       map[string]uint64
	delaySum       float64
	delayCount     uint64
	heard          time.Time
}

type traffic struct{ rxBytes, rxMsgs, txBytes, txMsgs uint64 }

var causeIndex = func() map[gateway.Cause]int {
	m := map[gateway.Cause]int{}
	for i, c := range gateway.Causes {
		m[c] = i
	}
	return m
}()

// numCauses is len(gateway.Causes); an init check keeps them equal.
const numCauses = 7

func init() {
	if len(gateway.Causes) != numCauses {
		panic("monitor: numCauses is not len(gateway.Causes)")
	}
}

type metrics struct {
	flushes         *prometheus.CounterVec
	flushSeconds    prometheus.Histogram
	samples         prometheus.Counter
	sessionsDropped prometheus.Counter
	sessionsWritten prometheus.Counter
}

// New makes a monitor writing to store, reading device facts from reg.
func New(store Store, reg Registry, opts Options, clk clock.Clock, logger *slog.Logger, promReg prometheus.Registerer) *Monitor {
	if clk == nil {
		clk = clock.Real()
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	node, _ := os.Hostname()
	m := &Monitor{opts: opts.withDefaults(), store: store, reg: reg, clk: clk, log: logger, node: node,
		seed: maphash.MakeSeed(), written: map[string]*written{}, live: &Liveness{}, errs: logx.NewEvery(logx.ErrorInterval, clk.Now)}
	for i := range m.shards {
		m.shards[i].devs = map[string]*counters{}
	}
	f := promauto.With(promReg)
	m.met = metrics{
		flushes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "millwright_monitor_flushes_total",
			Help: "Writes of the per-device connectivity series to the TSDB, by result (ok, error).",
		}, []string{"result"}),
		flushSeconds: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "millwright_monitor_flush_seconds",
			Help:    "Time one write of the per-device series took, the registry's snapshot included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		samples: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_monitor_samples_total",
			Help: "Samples of the per-device series written to the TSDB.",
		}),
		sessionsDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_monitor_sessions_dropped_total",
			Help: "Ended sessions not recorded in the connection history because --monitor-max-pending-sessions were already waiting.",
		}),
		sessionsWritten: f.NewCounter(prometheus.CounterOpts{
			Name: "millwright_monitor_sessions_recorded_total",
			Help: "Ended sessions written to the connection history.",
		}),
	}
	m.met.flushes.WithLabelValues("ok")
	m.met.flushes.WithLabelValues("error")
	return m
}

// Options returns the effective options.
func (m *Monitor) Options() Options { return m.opts }

// device returns the counters of id with its shard locked; the caller unlocks it.
func (m *Monitor) device(id string) (*counters, *sync.Mutex) {
	sh := &m.shards[maphash.String(m.seed, id)%shards]
	sh.mu.Lock()
	c := sh.devs[id]
	if c == nil {
		c = &counters{}
		sh.devs[id] = c
	}
	return c, &sh.mu
}

// Connected implements gateway.Observer.
func (m *Monitor) Connected(gc *gateway.Connection) {
	c, mu := m.device(gc.Device)
	c.connects++
	if c.live == nil {
		c.live = map[*gateway.Connection]struct{}{}
	}
	c.live[gc] = struct{}{}
	c.heard = later(c.heard, gc.Start)
	mu.Unlock()
}

// Disconnected implements gateway.Observer: the connection's traffic joins the device's
// totals, and the session joins the connection history at the next flush.
func (m *Monitor) Disconnected(gc *gateway.Connection, cause gateway.Cause, end time.Time) {
	t := loadTraffic(gc.Traffic)
	dur := max(end.Sub(gc.Start), 0)
	c, mu := m.device(gc.Device)
	delete(c.live, gc)
	c.disconnects[causeIndex[cause]]++
	c.closed.add(t)
	c.sessionSeconds += dur.Seconds()
	c.heard = later(c.heard, end)
	mu.Unlock()

	s := registry.Session{DeviceID: gc.Device, ConnectedAt: gc.Start, DisconnectedAt: end, Cause: string(cause),
		ReceivedBytes: int64(t.rxBytes), SentBytes: int64(t.txBytes), ReceivedMessages: int64(t.rxMsgs), SentMessages: int64(t.txMsgs),
		TLSVersion: gc.TLSVersion, MQTTVersion: int(gc.MQTTVersion), Remote: gc.Remote, Node: m.node}
	m.pmu.Lock()
	kept := len(m.pending) < m.opts.MaxPendingSessions
	if kept {
		m.pending = append(m.pending, s)
	}
	m.pmu.Unlock()
	if !kept {
		m.met.sessionsDropped.Inc()
	}
}

// HTTPExchange counts one HTTPS request of a device and its answer: the request body's and
// the response body's bytes, one message each way. It marks the device heard from.
func (m *Monitor) HTTPExchange(device string, received, sent int64, at time.Time) {
	c, mu := m.device(device)
	c.closed.add(traffic{rxBytes: uint64(received), rxMsgs: 1, txBytes: uint64(sent), txMsgs: 1})
	c.heard = later(c.heard, at)
	mu.Unlock()
}

// Batch counts a batch's result and, for one with values stored, the ingest delay of its
// newest value.
func (m *Monitor) Batch(device, result string, newest, arrived time.Time) {
	c, mu := m.device(device)
	if c.batches == nil {
		c.batches = map[string]uint64{}
	}
	c.batches[result]++
	if !newest.IsZero() {
		c.delaySum += max(arrived.Sub(newest), 0).Seconds()
		c.delayCount++
	}
	c.heard = later(c.heard, arrived)
	mu.Unlock()
}

// Forget drops what the monitor keeps of a deleted device — its counters, the series it
// writes, its ended sessions not yet recorded — and runs erase (which deletes the device's
// series) with no flush running, so no flush writes the device's series again afterwards.
func (m *Monitor) Forget(id string, erase func() error) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	delete(m.written, id)
	sh := &m.shards[maphash.String(m.seed, id)%shards]
	sh.mu.Lock()
	delete(sh.devs, id)
	sh.mu.Unlock()
	m.pmu.Lock()
	m.pending = slices.DeleteFunc(m.pending, func(s registry.Session) bool { return s.DeviceID == id })
	m.pmu.Unlock()
	return erase()
}

// Feedback counts a feedback event of kind recorded against device (registry.RecordFeedback),
// for the series millwright_device_feedback_total that rollouts' feedback gate reads.
func (m *Monitor) Feedback(device, kind string) {
	c, mu := m.device(device)
	if c.feedback == nil {
		c.feedback = map[string]uint64{}
	}
	c.feedback[kind]++
	mu.Unlock()
}

func (t *traffic) add(o traffic) {
	t.rxBytes += o.rxBytes
	t.rxMsgs += o.rxMsgs
	t.txBytes += o.txBytes
	t.txMsgs += o.txMsgs
}

func loadTraffic(t *gateway.Traffic) traffic {
	return traffic{rxBytes: t.ReceivedBytes.Load(), rxMsgs: t.ReceivedPackets.Load(), txBytes: t.SentBytes.Load(), txMsgs: t.SentPackets.Load()}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// snapshot is one device's counters at a flush.
type snapshot struct {
	connected      bool
	connects       uint64
	disconnects    [numCauses]uint64
	traffic        traffic
	sessionSeconds float64
	batches        map[string]uint64
	feedback       map[string]uint64
	delaySum       float64
	delayCount     uint64
	heard          time.Time
}

// snapshot copies the counters of id, live connections' traffic and time included; ok is
// false for a device the monitor has not counted.
func (m *Monitor) snapshot(id string, now time.Time) (snapshot, bool) {
	sh := &m.shards[maphash.String(m.seed, id)%shards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.devs[id]
	if c == nil {
		return snapshot{}, false
	}
	s := snapshot{connected: len(c.live) > 0, connects: c.connects, disconnects: c.disconnects, traffic: c.closed,
		sessionSeconds: c.sessionSeconds, delaySum: c.delaySum, delayCount: c.delayCount, heard: c.heard}
	for gc := range c.live {
		s.traffic.add(loadTraffic(gc.Traffic))
		s.sessionSeconds += max(now.Sub(gc.Start), 0).Seconds()
		s.heard = now
	}
	s.batches, s.feedback = maps.Clone(c.batches), maps.Clone(c.feedback)
	return s, true
}

// Run writes the series every Options.Interval until ctx ends, then once more, so that the
// last sessions reach the connection history.
func (m *Monitor) Run(ctx context.Context) error {
	t := m.clk.NewTimer(m.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := m.Flush(fctx); err != nil {
				m.log.Warn("last write of the device series", "error", err)
			}
			return nil
		case <-t.C():
			if err := m.Flush(ctx); err != nil && ctx.Err() == nil {
				m.errs.Log(ctx, m.log, slog.LevelWarn, "flush", "write the device series", "error", err)
			}
			t.Reset(m.opts.Interval)
		}
	}
}

// Flush reads the registry's facts, judges every device's liveness, writes every device's
// series at the clock's time, and records the ended sessions.
func (m *Monitor) Flush(ctx context.Context) (err error) {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	start := time.Now()
	defer func() {
		m.met.flushSeconds.Observe(time.Since(start).Seconds())
		if err != nil {
			m.met.flushes.WithLabelValues("error").Inc()
		} else {
			m.met.flushes.WithLabelValues("ok").Inc()
		}
	}()
	now := m.clk.Now()
	devs, err := m.reg.FleetSnapshot(ctx)
	if err != nil {
		return err
	}
	live := m.judge(devs, now)
	werr := m.write(ctx, devs, live, now)
	m.liveMu.Lock()
	m.live = live
	m.liveMu.Unlock()
	return errors.Join(werr, m.recordSessions(ctx, now))
}

// recordSessions writes the ended sessions waiting, and prunes the history once an hour.
func (m *Monitor) recordSessions(ctx context.Context, now time.Time) error {
	m.pmu.Lock()
	batch := m.pending
	m.pending = nil
	m.pmu.Unlock()
	if err := m.reg.RecordSessions(ctx, batch); err != nil {
		// Put them back, in front of those ended meanwhile, within the bound.
		m.pmu.Lock()
		keep := append(batch, m.pending...)
		if over := len(keep) - m.opts.MaxPendingSessions; over > 0 {
			m.met.sessionsDropped.Add(float64(over))
			keep = keep[over:]
		}
		m.pending = keep
		m.pmu.Unlock()
		return err
	}
	m.met.sessionsWritten.Add(float64(len(batch)))
	if now.Sub(m.lastPrune) >= time.Hour {
		if _, err := m.reg.PruneSessions(ctx, now.Add(-m.opts.SessionRetention)); err != nil {
			return err
		}
		m.lastPrune = now
	}
	return nil
}

// seconds is t as Unix seconds, or NaN for the zero time.
func seconds(t time.Time) float64 {
	if t.IsZero() {
		return math.NaN()
	}
	return float64(t.UnixMilli()) / 1000
}
