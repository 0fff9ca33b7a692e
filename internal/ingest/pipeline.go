// Package ingest turns device batches into stored telemetry: decode → validate → append, with
// an acknowledgement only once the batch is durable.
//
// Transports (the MQTT device sessions, the HTTPS handler) call Pipeline.Ingest from their own
// goroutines. Decoding and validation run there, in parallel. The valid measurements then go to
// a single committer goroutine that gathers every batch waiting at that moment into one group
// commit: one TSDB append transaction, one event-log write, one fsync for all of them. Each
// caller waits until the commit that holds its batch is durable, so many connections share one
// fsync and a device's acknowledgement always follows durability.
//
// When the committer falls behind, Ingest refuses new batches at once with ReasonBusy
// (MQTT 5 "quota exceeded", HTTP 429) instead of queueing without bound.
//
// When a commit fails (a full disk, an I/O error), the store may end in a torn record that the
// next open would "repair" by cutting off everything after it, acknowledged batches included.
// So after any write error the pipeline refuses every batch with ReasonUnavailable until it has
// made storage consistent again — the event log truncated to its last whole line, the TSDB
// closed and reopened, which repairs its write-ahead log — and only then acknowledges again
// (fault.go).
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/protocol"
)

// Store is what the pipeline needs of the telemetry store; *tsdb.Store is the one in use.
type Store interface {
	// Appender starts an append transaction.
	Appender(ctx context.Context) (storage.Appender, error)
	// Sync makes what was committed durable according to the store's policy.
	Sync() error
	// Reopen closes and opens the store again, repairing a log a failed write left torn.
	Reopen() error
	// MinAppendable is the oldest timestamp (ms) the store accepts now.
	MinAppendable() int64
	// MaxValue is the largest recent value of a device's series.
	MaxValue(ctx context.Context, metric, device string) (float64, bool, error)
	// Options are the store's effective options.
	Options() tsdb.Options
}

// EventLog is what the pipeline needs of the event log; *eventlog.Log is the one in use.
type EventLog interface {
	Append(events ...eventlog.Event) error
	Flush(sync bool) error
	// Repair drops what was not flushed whole, after a failed Append or Flush.
	Repair() error
}

var (
	_ Store    = (*tsdb.Store)(nil)
	_ EventLog = (*eventlog.Log)(nil)
)

// Options configure the pipeline.
type Options struct {
	// Limits bound what one batch may be; zero fields take protocol.DefaultLimits.
	Limits protocol.Limits `yaml:"limits"`
	// MaxPendingBatches is how many batches may wait for the committer before new ones are
	// refused as busy. Default 16,384.
	MaxPendingBatches int `yaml:"max_pending_batches"`
	// MaxPendingSamples is how many samples may wait for the committer before new batches are
	// refused as busy. Default 4,000,000.
	MaxPendingSamples int `yaml:"max_pending_samples"`
	// MaxCommitSamples caps the samples in one group commit. Default 200,000.
	MaxCommitSamples int `yaml:"max_commit_samples"`
	// FutureTolerance is how far ahead of the server's clock a sample may be. Default 10 minutes.
	FutureTolerance time.Duration `yaml:"future_tolerance"`

	// What one device may make the server keep. A device is untrusted input: these bound the
	// memory, index and disk one device's key can cost.

	// MaxNameLength bounds a measurement's name (base name included), in bytes. Default 256;
	// a longer name gets the batch refused as invalid.
	MaxNameLength int `yaml:"max_name_length"`
	// MaxUnitLength bounds a unit, in bytes. Default 32; a longer one gets the batch refused
	// as invalid.
	MaxUnitLength int `yaml:"max_unit_length"`
	// MaxStringLength bounds a string (vs) or data (vd) value, in bytes. Default 4,096; a
	// longer one gets the batch refused as invalid.
	MaxStringLength int `yaml:"max_string_length"`
	// MaxSeriesPerDevice bounds the series one device writes, counted since the server
	// started. Default 10,000; values of further series are refused (series_limit) and the
	// rest of the batch stored.
	MaxSeriesPerDevice int `yaml:"max_series_per_device"`
	// MaxEventBytesPerHour bounds the string and data values one device adds to the event log
	// in an hour, in bytes (names and values). Default 1 MiB; values beyond it are refused
	// (event_quota) and the rest of the batch stored.
	MaxEventBytesPerHour int `yaml:"max_event_bytes_per_hour"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{
		Limits:            protocol.DefaultLimits(),
		MaxPendingBatches: 16_384,
		MaxPendingSamples: 4_000_000,
		MaxCommitSamples:  200_000,
		FutureTolerance:   10 * time.Minute,

		MaxNameLength:        256,
		MaxUnitLength:        32,
		MaxStringLength:      4096,
		MaxSeriesPerDevice:   10_000,
		MaxEventBytesPerHour: 1 << 20,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Limits.MaxPayload <= 0 {
		o.Limits.MaxPayload = d.Limits.MaxPayload
	}
	if o.Limits.MaxDecompressed <= 0 {
		o.Limits.MaxDecompressed = d.Limits.MaxDecompressed
	}
	if o.Limits.MaxRecords <= 0 {
		o.Limits.MaxRecords = d.Limits.MaxRecords
	}
	if o.MaxPendingBatches <= 0 {
		o.MaxPendingBatches = d.MaxPendingBatches
	}
	if o.MaxPendingSamples <= 0 {
		o.MaxPendingSamples = d.MaxPendingSamples
	}
	if o.MaxCommitSamples <= 0 {
		o.MaxCommitSamples = d.MaxCommitSamples
	}
	if o.FutureTolerance <= 0 {
		o.FutureTolerance = d.FutureTolerance
	}
	for _, f := range []struct{ v, d *int }{
		{&o.MaxNameLength, &d.MaxNameLength}, {&o.MaxUnitLength, &d.MaxUnitLength},
		{&o.MaxStringLength, &d.MaxStringLength}, {&o.MaxSeriesPerDevice, &d.MaxSeriesPerDevice},
		{&o.MaxEventBytesPerHour, &d.MaxEventBytesPerHour},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	return o
}

// ErrStopped is the cause given to batches that arrive after the pipeline stopped.
var ErrStopped = errors.New("ingest pipeline stopped")

// Result is the outcome of one batch.
type Result struct {
	// Reason is ReasonNone when every value was stored. ReasonTooOld and ReasonTooNew mean the
	// other values were stored and the refused ones are counted; every other reason means
	// nothing of the batch was stored.
	Reason protocol.Reason
	// Detail explains the reason for a person.
	Detail string
	// Stored counts samples and events written; Refused counts values refused.
	Stored, Refused int
	// Newest is the time of the batch's newest measurement within the times the store takes,
	// in Unix milliseconds; 0 when it had none.
	Newest int64
}

// Err returns the result as a *protocol.Error, or nil on full success.
func (r Result) Err() error {
	if r.Reason == protocol.ReasonNone {
		return nil
	}
	return &protocol.Error{Reason: r.Reason, Err: errors.New(r.Detail)}
}

// Pipeline ingests batches. Create it with New, start Run, then call Ingest.
type Pipeline struct {
	store  Store
	events EventLog
	clk    clock.Clock
	opts   Options
	log    *slog.Logger
	m      *metrics

	queue   chan *job
	pending atomic.Int64 // samples queued or being committed
	stopped chan struct{}
	state   *committerState
	fault   *fault                 // owned by the committer; nil while storage is healthy
	failing atomic.Pointer[string] // why batches are refused while fault is set, for Ingest
	errLog  rateLimited            // commit failures, logged at most once per interval
	healthy prometheus.GaugeFunc   // 0 while failing
}

type job struct {
	device   string
	batch    protocol.Batch
	received time.Time
	samples  int
	res      Result
	done     chan struct{}
}

// New makes a pipeline writing to store and events. The clock gives sample times their
// reference and paces storage repair after a write error.
func New(store Store, events EventLog, clk clock.Clock, opts Options, logger *slog.Logger, reg prometheus.Registerer) *Pipeline {
	opts = opts.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		store:   store,
		events:  events,
		clk:     clk,
		opts:    opts,
		log:     logger,
		m:       newMetrics(reg),
		queue:   make(chan *job, opts.MaxPendingBatches),
		stopped: make(chan struct{}),
		state:   newCommitterState(),
		errLog:  rateLimited{every: 10 * time.Second},
	}
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_ingest_pending_batches",
		Help: "Batches waiting for the committer.",
	}, func() float64 { return float64(len(p.queue)) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_ingest_pending_values",
		Help: "Values waiting for the committer or being committed.",
	}, func() float64 { return float64(p.pending.Load()) })
	p.healthy = f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "millwright_ingest_storage_healthy",
		Help: "1 while batches are acknowledged; 0 after a storage write error, until storage is repaired.",
	}, func() float64 {
		if p.failing.Load() != nil {
			return 0
		}
		return 1
	})
	return p
}

// Ingest decodes, validates and stores one batch from device, returning once it is durable
// or refused. It is safe for concurrent use.
func (p *Pipeline) Ingest(ctx context.Context, device string, payload []byte) Result {
	received := time.Now()
	now := p.clk.Now()
	if why := p.failing.Load(); why != nil {
		return p.unavailable(*why)
	}
	batch, _, err := protocol.Decode(payload, now, p.opts.Limits)
	if err != nil {
		return p.refuse(err)
	}
	if err := p.validateValues(batch); err != nil {
		return p.refuse(err)
	}
	j := &job{device: device, batch: batch, received: received, done: make(chan struct{})}
	p.validateTimes(j, now)
	if len(j.batch.Measurements) == 0 && !j.batch.HasSeq {
		p.m.batches.WithLabelValues(resultLabel(j.res)).Inc()
		return j.res
	}
	j.samples = len(j.batch.Measurements)
	if p.pending.Add(int64(j.samples)) > int64(p.opts.MaxPendingSamples) && j.samples > 0 {
		p.pending.Add(-int64(j.samples))
		return p.busy("too many samples waiting to be stored")
	}
	select {
	case <-p.stopped:
		p.pending.Add(-int64(j.samples))
		return p.unavailable(ErrStopped.Error())
	default:
	}
	select {
	case p.queue <- j:
	default:
		p.pending.Add(-int64(j.samples))
		return p.busy("too many batches waiting to be stored")
	}
	select {
	case <-j.done:
	case <-p.stopped:
		// Run drains the queue before it closes stopped, so a job still not done was
		// enqueued after the drain and was never stored.
		select {
		case <-j.done:
		default:
			return p.unavailable(ErrStopped.Error())
		}
	case <-ctx.Done():
		return p.unavailable("gave up waiting for storage: " + ctx.Err().Error())
	}
	p.m.ackLatency.Observe(time.Since(received).Seconds())
	p.m.batches.WithLabelValues(resultLabel(j.res)).Inc()
	return j.res
}

// ReservedPrefix begins the names of the series the server writes about devices; a device's
// measurement names may not begin with it (nor with "millwright" and a character that maps
// to '_').
const ReservedPrefix = "millwright_"

// validateValues refuses a batch with a name, unit or string over its limit, or a reserved
// name.
func (p *Pipeline) validateValues(b protocol.Batch) error {
	for i := range b.Measurements {
		m := &b.Measurements[i]
		var why string
		switch {
		case len(m.Name) > p.opts.MaxNameLength:
			why = fmt.Sprintf("name is %d bytes, the limit is %d", len(m.Name), p.opts.MaxNameLength)
		case reservedName(m.Name):
			why = fmt.Sprintf("name %q: names beginning %q are reserved for the server", m.Name, ReservedPrefix)
		case len(m.Unit) > p.opts.MaxUnitLength:
			why = fmt.Sprintf("unit is %d bytes, the limit is %d", len(m.Unit), p.opts.MaxUnitLength)
		case len(m.String) > p.opts.MaxStringLength:
			why = fmt.Sprintf("string value is %d bytes, the limit is %d", len(m.String), p.opts.MaxStringLength)
		case len(m.Data) > p.opts.MaxStringLength:
			why = fmt.Sprintf("data value is %d bytes, the limit is %d", len(m.Data), p.opts.MaxStringLength)
		default:
			continue
		}
		return &protocol.Error{Reason: protocol.ReasonInvalid, Err: fmt.Errorf("measurement %d: %s", i, why)}
	}
	return nil
}

// reservedName reports whether name maps to a metric name beginning with ReservedPrefix.
func reservedName(name string) bool {
	const stem = "millwright"
	return len(name) > len(stem) && name[:len(stem)] == stem && (name[len(stem)] == '_' || !isMetricChar(name[len(stem)]))
}

// validateTimes removes samples the store cannot take (older than the out-of-order window, or
// too far in the future) and records them as refused.
func (p *Pipeline) validateTimes(j *job, now time.Time) {
	minT := now.Add(-p.store.Options().OutOfOrderWindow).UnixMilli()
	minT = max(minT, p.store.MinAppendable())
	maxT := now.Add(p.opts.FutureTolerance).UnixMilli()
	var tooOld, tooNew int
	kept := j.batch.Measurements[:0]
	for _, m := range j.batch.Measurements {
		switch {
		case m.Time < minT:
			tooOld++
		case m.Time > maxT:
			tooNew++
		default:
			kept = append(kept, m)
			j.res.Newest = max(j.res.Newest, m.Time)
		}
	}
	j.batch.Measurements = kept
	if tooOld > 0 {
		p.m.refusedSamples.WithLabelValues(protocol.ReasonTooOld.String()).Add(float64(tooOld))
		j.res.Reason = protocol.ReasonTooOld
		j.res.Detail = fmt.Sprintf("%d values older than the out-of-order window (%s) refused; drop them", tooOld, p.store.Options().OutOfOrderWindow)
	}
	if tooNew > 0 {
		p.m.refusedSamples.WithLabelValues(protocol.ReasonTooNew.String()).Add(float64(tooNew))
		if j.res.Reason == protocol.ReasonNone {
			j.res.Reason = protocol.ReasonTooNew
			j.res.Detail = fmt.Sprintf("%d values more than %s ahead of the server clock refused; check the device clock", tooNew, p.opts.FutureTolerance)
		}
	}
	j.res.Refused = tooOld + tooNew
}

func (p *Pipeline) refuse(err error) Result {
	var perr *protocol.Error
	r := Result{Reason: protocol.ReasonMalformed, Detail: err.Error()}
	if errors.As(err, &perr) {
		r.Reason = perr.Reason
		if perr.Err != nil {
			r.Detail = perr.Err.Error()
		}
	}
	p.m.rejectedBatches.WithLabelValues(r.Reason.String()).Inc()
	p.m.batches.WithLabelValues(resultLabel(r)).Inc()
	return r
}

func (p *Pipeline) busy(detail string) Result {
	p.m.rejectedBatches.WithLabelValues(protocol.ReasonBusy.String()).Inc()
	return Result{Reason: protocol.ReasonBusy, Detail: detail}
}

func (p *Pipeline) unavailable(detail string) Result {
	p.m.rejectedBatches.WithLabelValues(protocol.ReasonUnavailable.String()).Inc()
	return Result{Reason: protocol.ReasonUnavailable, Detail: detail}
}

func resultLabel(r Result) string {
	switch r.Reason {
	case protocol.ReasonNone:
		return "stored"
	case protocol.ReasonTooOld, protocol.ReasonTooNew:
		return "partial"
	}
	return "refused"
}

// Run commits batches until ctx ends, then commits what is still queued and returns. Ingest
// calls after that fail with ReasonUnavailable.
func (p *Pipeline) Run(ctx context.Context) error {
	defer close(p.stopped)
	group := make([]*job, 0, 256)
	for {
		select {
		case <-p.repairDue():
			p.repair()
		case j := <-p.queue:
			group = p.gather(append(group[:0], j))
			p.commit(group)
		case <-ctx.Done():
			for {
				select {
				case j := <-p.queue:
					group = p.gather(append(group[:0], j))
					p.commit(group)
				default:
					return nil
				}
			}
		}
	}
}

// gather adds every job waiting now to group, up to the commit size.
func (p *Pipeline) gather(group []*job) []*job {
	n := group[0].samples
	for n < p.opts.MaxCommitSamples {
		select {
		case j := <-p.queue:
			group = append(group, j)
			n += j.samples
		default:
			return group
		}
	}
	return group
}
