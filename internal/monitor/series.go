package monitor

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/registry"
)

// The series names, as docs/monitoring.md lists them.
const (
	SeriesInfo              = "millwright_device_info"
	SeriesTag               = "millwright_device_tag"
	SeriesGroup             = "millwright_device_group"
	SeriesConnected         = "millwright_device_connected"
	SeriesConnects          = "millwright_device_connects_total"
	SeriesDisconnects       = "millwright_device_disconnects_total"
	SeriesReceivedBytes     = "millwright_device_received_bytes_total"
	SeriesSentBytes         = "millwright_device_sent_bytes_total"
	SeriesReceivedMessages  = "millwright_device_received_messages_total"
	SeriesSentMessages      = "millwright_device_sent_messages_total"
	SeriesBatches           = "millwright_device_batches_total"
	SeriesFeedback          = "millwright_device_feedback_total"
	SeriesIngestDelaySum    = "millwright_device_ingest_delay_seconds_sum"
	SeriesIngestDelayCount  = "millwright_device_ingest_delay_seconds_count"
	SeriesSessionSeconds    = "millwright_device_session_seconds_total"
	SeriesLastSeen          = "millwright_device_last_seen_timestamp_seconds"
	SeriesExpectedInterval  = "millwright_device_expected_interval_seconds"
	SeriesCertificateExpiry = "millwright_device_certificate_expiry_timestamp_seconds"
	SeriesOnline            = "millwright_device_online"
	SeriesSilent            = "millwright_device_silent"
)

// commitEvery bounds the samples one append transaction holds.
const commitEvery = 20_000

// ref is one series the monitor writes: its labels, built once, and the TSDB's reference to
// it, which spares the head a lookup by labels at every write.
type ref struct {
	l   labels.Labels
	ref storage.SeriesRef
}

// fixed series of every device, in this order; then one per disconnect cause.
const (
	fxConnected = iota
	fxConnects
	fxReceivedBytes
	fxSentBytes
	fxReceivedMessages
	fxSentMessages
	fxDelaySum
	fxDelayCount
	fxSessionSeconds
	fxLastSeen
	fxExpected
	fxOnline
	fxSilent
	fxCertificateExpiry
	fxDisconnects // first of numCauses
	numFixed      = fxDisconnects + numCauses
)

var fixedNames = [fxDisconnects]string{
	fxConnected: SeriesConnected, fxConnects: SeriesConnects, fxReceivedBytes: SeriesReceivedBytes, fxSentBytes: SeriesSentBytes,
	fxReceivedMessages: SeriesReceivedMessages, fxSentMessages: SeriesSentMessages, fxDelaySum: SeriesIngestDelaySum,
	fxDelayCount: SeriesIngestDelayCount, fxSessionSeconds: SeriesSessionSeconds, fxLastSeen: SeriesLastSeen,
	fxExpected: SeriesExpectedInterval, fxOnline: SeriesOnline, fxSilent: SeriesSilent, fxCertificateExpiry: SeriesCertificateExpiry,
}

// written is what the monitor writes of one device: its series, labels built once, and the
// facts last written — the info, tag and group series, which get a stale marker when they
// change (a firmware update must not leave two info series for one device, which would break
// every join for five minutes).
type written struct {
	fixed    [numFixed]ref
	causes   [numCauses]bool // the disconnect causes whose series were begun
	batches  map[string]*ref
	feedback map[string]*ref
	static   []ref
	epoch    uint64 // the last flush that wrote the device
}

func newWritten(id string) *written {
	w := &written{}
	for i, name := range fixedNames {
		w.fixed[i].l = deviceSeries(name, id)
	}
	for i, c := range gateway.Causes {
		w.fixed[fxDisconnects+i].l = series(SeriesDisconnects, "device", id, "cause", string(c))
	}
	return w
}

// batchWriter appends samples at one time, committing every commitEvery.
type batchWriter struct {
	ctx   context.Context
	store Store
	app   storage.Appender
	t     int64
	n     int
	total int
	err   error
}

func (w *batchWriter) add(r *ref, v float64) { w.addAt(r, w.t, v) }

// addAt appends a sample at time t (Unix ms; 0 adds nothing): before the write's own time only
// to begin a counter's series with the 0 it had at the previous write, which the store takes
// within its out-of-order window.
func (w *batchWriter) addAt(r *ref, t int64, v float64) {
	if w.err != nil || t == 0 {
		return
	}
	if w.app == nil {
		if w.app, w.err = w.store.Appender(w.ctx); w.err != nil {
			return
		}
	}
	got, err := w.app.Append(r.ref, r.l, t, v)
	switch {
	case err == nil:
		r.ref = got
	case !isDuplicate(err):
		w.err = err
		return
	}
	w.n++
	w.total++
	if w.n >= commitEvery {
		w.commit()
	}
}

// isDuplicate: a flush at the same millisecond as the last (a fake clock that did not move)
// rewrites the same samples; that is not an error.
func isDuplicate(err error) bool {
	return errors.Is(err, storage.ErrDuplicateSampleForTimestamp) || errors.Is(err, storage.ErrOutOfOrderSample) || errors.Is(err, storage.ErrTooOldSample)
}

func (w *batchWriter) commit() {
	if w.app == nil {
		return
	}
	if w.err != nil {
		_ = w.app.Rollback()
	} else {
		w.err = w.app.Commit()
	}
	w.app, w.n = nil, 0
}

var stale = math.Float64frombits(value.StaleNaN)

// write appends every active device's series at now, and stale markers for facts that
// changed and for devices that left the fleet.
func (m *Monitor) write(ctx context.Context, devs []registry.FleetDevice, live *Liveness, now time.Time) error {
	if db := m.store.DB(); db != m.db {
		// A store reopened after a write error numbers its series anew: forget every reference.
		for _, wr := range m.written {
			for i := range wr.fixed {
				wr.fixed[i].ref = 0
			}
			for _, r := range wr.batches {
				r.ref = 0
			}
			for _, r := range wr.feedback {
				r.ref = 0
			}
			for i := range wr.static {
				wr.static[i].ref = 0
			}
		}
		m.db = db
	}
	m.epoch++
	w := &batchWriter{ctx: ctx, store: m.store, t: now.UnixMilli()}
	j := 0
	for i := range devs {
		d := &devs[i]
		if d.Status != registry.StatusActive {
			continue
		}
		dl := &live.Devices[j]
		j++
		wr := m.written[d.ID]
		if wr == nil {
			wr = newWritten(d.ID)
			m.written[d.ID] = wr
		}
		wr.epoch = m.epoch
		m.writeStatic(w, wr, d)
		s, _ := m.snapshot(d.ID, now)
		f := &wr.fixed
		if !d.CertificateExpiry.IsZero() {
			w.add(&f[fxCertificateExpiry], seconds(d.CertificateExpiry))
		}
		w.add(&f[fxConnected], b2f(s.connected))
		w.add(&f[fxConnects], float64(s.connects))
		for ci := range numCauses {
			// A cause's series begins with its first disconnect (most devices never see most
			// causes, and every series costs the TSDB's head memory), with a 0 at the
			// previous write so that increase() counts that first one.
			if s.disconnects[ci] == 0 && !wr.causes[ci] {
				continue
			}
			if !wr.causes[ci] {
				wr.causes[ci] = true
				w.addAt(&f[fxDisconnects+ci], m.prevWrite, 0)
			}
			w.add(&f[fxDisconnects+ci], float64(s.disconnects[ci]))
		}
		w.add(&f[fxReceivedBytes], float64(s.traffic.rxBytes))
		w.add(&f[fxSentBytes], float64(s.traffic.txBytes))
		w.add(&f[fxReceivedMessages], float64(s.traffic.rxMsgs))
		w.add(&f[fxSentMessages], float64(s.traffic.txMsgs))
		m.writeCounters(w, &wr.batches, SeriesBatches, d.ID, "result", s.batches)
		m.writeCounters(w, &wr.feedback, SeriesFeedback, d.ID, "kind", s.feedback)
		w.add(&f[fxDelaySum], s.delaySum)
		w.add(&f[fxDelayCount], float64(s.delayCount))
		w.add(&f[fxSessionSeconds], s.sessionSeconds)
		if !dl.LastHeard.IsZero() {
			w.add(&f[fxLastSeen], seconds(dl.LastHeard))
		}
		w.add(&f[fxExpected], dl.Interval.Seconds())
		w.add(&f[fxOnline], b2f(dl.State == Online))
		w.add(&f[fxSilent], b2f(dl.State == Silent))
	}
	for id, wr := range m.written {
		if wr.epoch == m.epoch {
			continue
		}
		for i := range wr.static {
			w.add(&wr.static[i], stale)
		}
		for _, fx := range []int{fxConnected, fxOnline, fxSilent} {
			w.add(&wr.fixed[fx], stale)
		}
		delete(m.written, id)
	}
	w.commit()
	m.met.samples.Add(float64(w.total))
	if w.err == nil {
		m.prevWrite = w.t
	}
	return w.err
}

// writeCounters writes a device's counters of name, one series per value of label, each
// begun as a disconnect cause's is: with a 0 at the previous write, so that increase() counts
// its first event.
func (m *Monitor) writeCounters(w *batchWriter, refs *map[string]*ref, name, device, label string, counts map[string]uint64) {
	for v, n := range counts {
		r := (*refs)[v]
		if r == nil {
			if *refs == nil {
				*refs = map[string]*ref{}
			}
			r = &ref{l: series(name, "device", device, label, v)}
			(*refs)[v] = r
			w.addAt(r, m.prevWrite, 0)
		}
		w.add(r, float64(n))
	}
}

// writeStatic writes a device's fact series — info, one per tag, one per group — with a
// stale marker on each one it wrote last time and no longer has.
func (m *Monitor) writeStatic(w *batchWriter, wr *written, d *registry.FleetDevice) {
	want := staticSeries(d)
	if !sameLabels(wr.static, want) {
		next := make([]ref, len(want))
		for i, l := range want {
			next[i].l = l
		}
		for i := range wr.static {
			if !slices.ContainsFunc(want, func(l labels.Labels) bool { return labels.Equal(l, wr.static[i].l) }) {
				w.add(&wr.static[i], stale)
			} else if k := slices.IndexFunc(want, func(l labels.Labels) bool { return labels.Equal(l, wr.static[i].l) }); k >= 0 {
				next[k].ref = wr.static[i].ref
			}
		}
		wr.static = next
	}
	for i := range wr.static {
		w.add(&wr.static[i], 1)
	}
}

func sameLabels(have []ref, want []labels.Labels) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if !labels.Equal(have[i].l, want[i]) {
			return false
		}
	}
	return true
}

// staticSeries are a device's fact series: info, one per tag, one per group.
func staticSeries(d *registry.FleetDevice) []labels.Labels {
	out := make([]labels.Labels, 0, 1+len(d.Tags)+len(d.Groups))
	out = append(out, series(SeriesInfo, "device", d.ID, "firmware", d.Firmware, "model", d.Model, "operator", d.Operator))
	for _, k := range slices.Sorted(maps.Keys(d.Tags)) {
		out = append(out, series(SeriesTag, "device", d.ID, "key", k, "value", d.Tags[k]))
	}
	for _, g := range d.Groups {
		out = append(out, series(SeriesGroup, "device", d.ID, "group", g))
	}
	return out
}

func deviceSeries(name, device string) labels.Labels {
	return series(name, "device", device)
}

// series is the label set of metric name with the label pairs kv, those with an empty value
// left out (PromQL treats a label with an empty value as absent).
func series(name string, kv ...string) labels.Labels {
	b := labels.NewScratchBuilder(1 + len(kv)/2)
	b.Add(labels.MetricName, name)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			b.Add(kv[i], kv[i+1])
		}
	}
	b.Sort()
	return b.Labels()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
