package ingest

import (
	"context"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// Batch sequence accounting: each device numbers its batches (mw_seq); the server counts, per
// device, the numbers skipped (gaps: lost or dropped batches), the ones that arrive after a
// higher one (late: a gap filled) and the ones seen before (repeats: retransmits), and writes
// the highest number and the three counters as series of the device. seqState is the counting
// alone; trackSeq adds the series.

// Names of the batch-sequence series of each device.
const (
	SeriesBatchSeq   = "millwright_device_batch_seq"
	SeriesSeqGaps    = "millwright_device_batch_seq_gaps_total"
	SeriesSeqLate    = "millwright_device_batch_seq_late_total"
	SeriesSeqRepeats = "millwright_device_batch_seq_repeats_total"
	seqWindow        = 64 // sequence numbers remembered below the highest, per device
)

// seqState counts one device's batch sequence numbers.
type seqState struct {
	known               bool
	highest             uint64
	window              uint64 // bit i set: highest-i was seen
	gaps, late, repeats float64
}

// start takes the highest number seen before (stored by an earlier run of the server).
func (s *seqState) start(highest uint64) {
	s.highest, s.window, s.known = highest, 1, true
}

// observe counts seq and returns what it added to each counter.
func (s *seqState) observe(seq uint64) (gaps, late, repeats float64) {
	switch {
	case !s.known:
		s.start(seq)
	case seq > s.highest:
		gaps = float64(seq - s.highest - 1)
		if seq-s.highest >= seqWindow {
			s.window = 0
		} else {
			s.window <<= seq - s.highest
		}
		s.window |= 1
		s.highest = seq
	default:
		back := s.highest - seq
		if back >= seqWindow || s.window&(1<<back) != 0 {
			repeats = 1
		} else {
			late = 1
			s.window |= 1 << back
		}
	}
	s.gaps += gaps
	s.late += late
	s.repeats += repeats
	return gaps, late, repeats
}

// seqSeries is a device's sequence accounting with the references of its series.
type seqSeries struct {
	seqState
	time                            int64 // timestamp of the last batch-seq sample
	seqRef, gapRef, lateRef, repRef storage.SeriesRef
}

// trackSeq counts a device's batch number and writes the batch number and the counters as
// series of that device.
func (p *Pipeline) trackSeq(app storage.Appender, device string, d *seqSeries, seq uint64) {
	t := max(p.clk.Now().UnixMilli(), d.time+1)
	if !d.known {
		if last, ok := p.lastSeq(device); ok {
			d.start(last)
		}
	}
	gaps, late, repeats := d.observe(seq)
	d.time = t
	d.seqRef = p.appendCounter(app, d.seqRef, SeriesBatchSeq, device, t, float64(d.highest))
	if gaps > 0 {
		p.m.seqGaps.Add(gaps)
		d.gapRef = p.appendCounter(app, d.gapRef, SeriesSeqGaps, device, t, d.gaps)
	}
	if late > 0 {
		p.m.seqLate.Add(late)
		d.lateRef = p.appendCounter(app, d.lateRef, SeriesSeqLate, device, t, d.late)
	}
	if repeats > 0 {
		p.m.seqRepeats.Add(repeats)
		d.repRef = p.appendCounter(app, d.repRef, SeriesSeqRepeats, device, t, d.repeats)
	}
}

func (p *Pipeline) appendCounter(app storage.Appender, ref storage.SeriesRef, name, device string, t int64, v float64) storage.SeriesRef {
	newRef, err := app.Append(ref, labels.FromStrings(labels.MetricName, name, labelDevice, device), t, v)
	if err != nil {
		p.log.Warn("append batch sequence series", "device", device, "series", name, "error", err)
		return 0
	}
	return newRef
}

// lastSeq reads the highest batch number stored for device, so counting goes on across a
// restart of the server.
func (p *Pipeline) lastSeq(device string) (uint64, bool) {
	v, ok, err := p.store.MaxValue(context.Background(), SeriesBatchSeq, device)
	if err != nil {
		p.log.Warn("read the last batch number of a device; counting starts afresh", "device", device, "error", err)
		return 0, false
	}
	return uint64(v), ok
}
