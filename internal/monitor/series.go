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

// written is what was last written of a device's facts: the info, tag and group series,
// which get a stale marker when they change (a firmware update must not leave two info
// series for one device, which would break every join for five minutes).
type written struct {
	static []labels.Labels
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

func (w *batchWriter) add(l labels.Labels, v float64) {
	if w.err != nil {
		return
	}
	if w.app == nil {
		if w.app, w.err = w.store.Appender(w.ctx); w.err != nil {
			return
		}
	}
	if _, err := w.app.Append(0, l, w.t, v); err != nil && !isDuplicate(err) {
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
	w := &batchWriter{ctx: ctx, store: m.store, t: now.UnixMilli()}
	seen := make(map[string]struct{}, len(live.Devices))
	j := 0
	for i := range devs {
		d := &devs[i]
		if d.Status != registry.StatusActive {
			continue
		}
		dl := &live.Devices[j]
		j++
		seen[d.ID] = struct{}{}
		static := staticSeries(d)
		if prev := m.written[d.ID]; prev != nil {
			for _, l := range prev.static {
				if !slices.ContainsFunc(static, func(n labels.Labels) bool { return labels.Equal(n, l) }) {
					w.add(l, stale)
				}
			}
			prev.static = static
		} else {
			m.written[d.ID] = &written{static: static}
		}
		for _, l := range static {
			w.add(l, 1)
		}
		if !d.CertificateExpiry.IsZero() {
			w.add(deviceSeries(SeriesCertificateExpiry, d.ID), seconds(d.CertificateExpiry))
		}
		s, _ := m.snapshot(d.ID, now)
		w.add(deviceSeries(SeriesConnected, d.ID), b2f(s.connected))
		w.add(deviceSeries(SeriesConnects, d.ID), float64(s.connects))
		for ci, c := range gateway.Causes {
			w.add(series(SeriesDisconnects, "cause", string(c), "device", d.ID), float64(s.disconnects[ci]))
		}
		w.add(deviceSeries(SeriesReceivedBytes, d.ID), float64(s.traffic.rxBytes))
		w.add(deviceSeries(SeriesSentBytes, d.ID), float64(s.traffic.txBytes))
		w.add(deviceSeries(SeriesReceivedMessages, d.ID), float64(s.traffic.rxMsgs))
		w.add(deviceSeries(SeriesSentMessages, d.ID), float64(s.traffic.txMsgs))
		for result, n := range s.batches {
			w.add(series(SeriesBatches, "device", d.ID, "result", result), float64(n))
		}
		w.add(deviceSeries(SeriesIngestDelaySum, d.ID), s.delaySum)
		w.add(deviceSeries(SeriesIngestDelayCount, d.ID), float64(s.delayCount))
		w.add(deviceSeries(SeriesSessionSeconds, d.ID), s.sessionSeconds)
		if !dl.LastHeard.IsZero() {
			w.add(deviceSeries(SeriesLastSeen, d.ID), seconds(dl.LastHeard))
		}
		w.add(deviceSeries(SeriesExpectedInterval, d.ID), dl.Interval.Seconds())
		w.add(deviceSeries(SeriesOnline, d.ID), b2f(dl.State == Online))
		w.add(deviceSeries(SeriesSilent, d.ID), b2f(dl.State == Silent))
	}
	for id, prev := range m.written {
		if _, ok := seen[id]; ok {
			continue
		}
		for _, l := range prev.static {
			w.add(l, stale)
		}
		for _, name := range []string{SeriesConnected, SeriesOnline, SeriesSilent} {
			w.add(deviceSeries(name, id), stale)
		}
		delete(m.written, id)
	}
	w.commit()
	m.met.samples.Add(float64(w.total))
	return w.err
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
