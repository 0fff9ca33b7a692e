package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/internal/eventlog"
	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/protocol"
)

// Names of the series the pipeline writes about each device (seq.go has the batch-sequence
// ones). Device metric names beginning with "millwright_" are reserved for these.
const (
	// SeriesRefused counts, per device and reason, the values refused by a per-device limit
	// (series_limit, event_quota).
	SeriesRefused   = "millwright_device_refused_values_total"
	labelReason     = "reason"
	labelDevice     = "device"
	labelUnit       = "unit"
	sumSuffix       = "_sum"
	reasonDuplicate = "duplicate_conflict"
	reasonStorage   = "storage"
)

// committerState is owned by the committer goroutine.
type committerState struct {
	devices map[string]*deviceState
}

type seriesKey struct {
	name, unit string
	sum        bool
}

type seriesEntry struct {
	ref  storage.SeriesRef
	lset labels.Labels
}

type deviceState struct {
	series map[seriesKey]*seriesEntry

	seq seqSeries

	eventWindow  int64 // start (ms) of the hour that eventBytes counts
	eventBytes   int
	refused      [2]float64 // values refused by the series limit, by the event quota
	refusedRefs  [2]storage.SeriesRef
	refusedTouch bool  // refused changed in this commit
	refusedTime  int64 // timestamp of the last refused-values sample
}

// Indexes of deviceState.refused.
const (
	refusedSeries = iota
	refusedEvents
)

var refusedReasons = [2]protocol.Reason{protocol.ReasonSeriesLimit, protocol.ReasonEventQuota}

func newCommitterState() *committerState {
	return &committerState{devices: map[string]*deviceState{}}
}

// commit stores a group of jobs in one transaction, makes it durable and releases the waiters.
// While storage awaits repair after a write error, it refuses the group instead.
func (p *Pipeline) commit(group []*job) {
	if p.fault != nil && !p.repair() {
		why := *p.failing.Load()
		p.finish(group, &why)
		return
	}
	start := time.Now()
	ctx := context.Background()
	app, err := p.store.Appender(ctx)
	if err != nil {
		p.fail(fmt.Errorf("start append: %w", err), true, false)
		p.finish(group, p.failing.Load())
		return
	}
	var events []eventlog.Event
	now := p.clk.Now().UnixMilli()
	for _, j := range group {
		dev := p.state.device(j.device)
		for i := range j.batch.Measurements {
			m := &j.batch.Measurements[i]
			switch m.Kind {
			case protocol.KindString, protocol.KindData:
				if !p.eventBudget(dev, now, len(m.Name)+len(m.Unit)+len(m.String)+len(m.Data)) {
					p.refuseValue(j, dev, refusedEvents, fmt.Sprintf(
						"string and data values over the device's event-log budget of %d bytes an hour refused; drop them",
						p.opts.MaxEventBytesPerHour))
					continue
				}
				e := eventlog.Event{Time: m.Time, Device: j.device, Name: m.Name, Unit: m.Unit}
				if m.Kind == protocol.KindString {
					s := m.String
					e.String = &s
				} else {
					e.Data = m.Data
				}
				events = append(events, e)
				j.res.Stored++
			default:
				if m.HasValue {
					p.appendSample(app, dev, j, seriesKey{name: m.Name, unit: m.Unit}, m.Time, m.Value)
				}
			}
			if m.HasSum {
				p.appendSample(app, dev, j, seriesKey{name: m.Name, unit: m.Unit, sum: true}, m.Time, m.Sum)
			}
		}
		if j.batch.HasSeq {
			p.trackSeq(app, j.device, &dev.seq, j.batch.Seq)
		}
		if dev.refusedTouch {
			p.writeRefused(app, j.device, dev, now)
		}
	}
	var storeErr, eventsErr error
	if err := app.Commit(); err != nil {
		storeErr = fmt.Errorf("commit samples: %w", err)
	}
	if storeErr == nil && len(events) > 0 {
		eventsErr = p.events.Append(events...)
	}
	if storeErr == nil && eventsErr == nil {
		eventsErr = p.events.Flush(p.store.Options().Sync == tsdb.SyncAlways)
	}
	if storeErr == nil && eventsErr == nil {
		syncStart := time.Now()
		storeErr = p.store.Sync()
		p.m.fsyncDuration.Observe(time.Since(syncStart).Seconds())
	}
	p.m.commitDuration.Observe(time.Since(start).Seconds())
	p.m.groupSize.Observe(float64(len(group)))
	if err := errors.Join(storeErr, eventsErr); err != nil {
		p.m.commitErrors.Inc()
		p.errLog.log(p.log, p.clk, "group commit failed; batches refused until storage is repaired",
			"batches", len(group), "error", err)
		// What the transaction held may or may not be on disk: the devices keep their
		// batches and re-send them, and re-sent samples are harmless.
		p.fail(err, storeErr != nil, eventsErr != nil)
		p.finish(group, p.failing.Load())
		return
	}
	p.finish(group, nil)
}

// finish releases the waiters of group: stored, or refused as unavailable with the reason why.
func (p *Pipeline) finish(group []*job, why *string) {
	for _, j := range group {
		if why != nil {
			j.res = Result{Reason: protocol.ReasonUnavailable, Detail: *why}
			p.m.rejectedBatches.WithLabelValues(protocol.ReasonUnavailable.String()).Inc()
		} else {
			p.m.samples.Add(float64(j.res.Stored))
		}
		p.pending.Add(-int64(j.samples))
		close(j.done)
	}
}

func (s *committerState) device(id string) *deviceState {
	d := s.devices[id]
	if d == nil {
		d = &deviceState{series: map[seriesKey]*seriesEntry{}}
		s.devices[id] = d
	}
	return d
}

func (p *Pipeline) appendSample(app storage.Appender, dev *deviceState, j *job, key seriesKey, t int64, v float64) {
	e := dev.series[key]
	if e == nil {
		if len(dev.series) >= p.opts.MaxSeriesPerDevice {
			p.refuseValue(j, dev, refusedSeries, fmt.Sprintf(
				"values of new series refused: the device has %d series, the limit; drop them", len(dev.series)))
			return
		}
		name := MetricName(key.name)
		if key.sum {
			name += sumSuffix
		}
		b := labels.NewScratchBuilder(3)
		b.Add(labels.MetricName, name)
		b.Add(labelDevice, j.device)
		if key.unit != "" {
			b.Add(labelUnit, key.unit)
		}
		b.Sort()
		e = &seriesEntry{lset: b.Labels()}
		dev.series[key] = e
	}
	ref, err := app.Append(e.ref, e.lset, t, v)
	if err != nil {
		j.res.Refused++
		p.m.refusedSamples.WithLabelValues(appendErrorReason(err)).Inc()
		if j.res.Reason == protocol.ReasonNone && errors.Is(err, storage.ErrTooOldSample) {
			j.res.Reason = protocol.ReasonTooOld
			j.res.Detail = "values older than the out-of-order window refused; drop them"
		}
		return
	}
	e.ref = ref
	j.res.Stored++
}

func appendErrorReason(err error) string {
	switch {
	case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
		return reasonDuplicate
	case errors.Is(err, storage.ErrTooOldSample), errors.Is(err, storage.ErrOutOfBounds):
		return protocol.ReasonTooOld.String()
	}
	return reasonStorage
}

// eventBudget charges n bytes to the device's event-log budget for the hour, and reports
// whether they fit.
func (p *Pipeline) eventBudget(d *deviceState, now int64, n int) bool {
	if now-d.eventWindow >= time.Hour.Milliseconds() {
		d.eventWindow, d.eventBytes = now, 0
	}
	if d.eventBytes+n > p.opts.MaxEventBytesPerHour {
		return false
	}
	d.eventBytes += n
	return true
}

// refuseValue refuses one value of j for a per-device limit, counting it for the device.
func (p *Pipeline) refuseValue(j *job, d *deviceState, which int, detail string) {
	j.res.Refused++
	d.refused[which]++
	d.refusedTouch = true
	reason := refusedReasons[which]
	p.m.refusedSamples.WithLabelValues(reason.String()).Inc()
	if j.res.Reason == protocol.ReasonNone {
		j.res.Reason, j.res.Detail = reason, detail
	}
}

// writeRefused writes the device's refusal counters as its series.
func (p *Pipeline) writeRefused(app storage.Appender, device string, d *deviceState, now int64) {
	d.refusedTouch = false
	now = max(now, d.refusedTime+1)
	d.refusedTime = now
	for i, v := range d.refused {
		if v == 0 {
			continue
		}
		lset := labels.FromStrings(labels.MetricName, SeriesRefused, labelDevice, device, labelReason, refusedReasons[i].String())
		ref, err := app.Append(d.refusedRefs[i], lset, now, v)
		if err != nil {
			p.log.Warn("append refused-values series", "device", device, "error", err)
			ref = 0
		}
		d.refusedRefs[i] = ref
	}
}

// MetricName maps a resolved SenML name to a Prometheus metric name: characters outside
// [A-Za-z0-9_:] ('-', '.', '/') become '_', and a name starting with a digit gets a leading '_'.
func MetricName(n string) string {
	ok := n != "" && !(n[0] >= '0' && n[0] <= '9')
	for i := 0; ok && i < len(n); i++ {
		ok = isMetricChar(n[i])
	}
	if ok {
		return n
	}
	var b strings.Builder
	b.Grow(len(n) + 1)
	if n == "" || (n[0] >= '0' && n[0] <= '9') {
		b.WriteByte('_')
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; isMetricChar(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

func isMetricChar(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}
