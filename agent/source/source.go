// Package source holds the device agent's measurement sources: the pieces
// that produce SenML records on the device and hand them to a [Sink], which
// in the agent writes them to the durable spool (package agent/spool) for the
// sender to batch and deliver.
//
// A [Source] runs until its context ends. Three are built in:
//
//   - [System] samples the device itself from /proc and /sys: CPU
//     utilisation, load, memory, disk space, uptime, thermal zones and
//     network byte counters, named system_*.
//   - [Exec] runs a command every interval and reads measurements from its
//     standard output, as SenML JSON or as simple "name value [unit]" lines.
//   - [LocalAPI] accepts SenML JSON from other programs on the device over
//     HTTP on the loopback interface.
//
// Records handed to a Sink are resolved: each carries its full name, a unit
// where one applies, an absolute time in Unix seconds (millisecond
// precision), one value (v, vb or vs; SenML input may also bring vd, or a
// sum s with or without a value), and no base fields or mw_seq. Sampling times come
// from the injected [clock.Clock]. Sources pass their context to the sink,
// so a slow sink delays a source but never blocks it past shutdown, and a
// failing sink is logged and counted, never fatal.
package source

import (
	"context"
	"strconv"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// Class tells a Sink how precious measurements are: whether they may go
// first when the device runs out of room for them. The agent maps it to the
// spool's record class where it connects sources to the spool.
type Class uint8

// The classes of measurements.
const (
	// ClassRaw marks ordinary samples: the first to be dropped when the
	// spool is full.
	ClassRaw Class = iota
	// ClassEvent marks events and alarms, which outlive raw samples when the
	// spool is full.
	ClassEvent
)

// String returns "raw", "event", or "class(N)" for an undefined class.
func (c Class) String() string {
	switch c {
	case ClassRaw:
		return "raw"
	case ClassEvent:
		return "event"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Sink receives measurements. class is ClassRaw for samples, ClassEvent for
// events/alarms that must outlive raw samples when the spool is full.
//
// Write takes ownership of recs: the caller does not touch the slice again.
// A nil error means the records are stored (in the agent: appended to the
// spool). Write must return once ctx is done.
type Sink interface {
	Write(ctx context.Context, recs []protocol.Record, class Class) error
}

// SinkFunc adapts a function to a Sink.
type SinkFunc func(ctx context.Context, recs []protocol.Record, class Class) error

var _ Sink = SinkFunc(nil)

// Write calls f.
func (f SinkFunc) Write(ctx context.Context, recs []protocol.Record, class Class) error {
	return f(ctx, recs, class)
}

// Source produces measurements and writes them to a Sink.
type Source interface {
	// Name identifies the source in logs and metrics.
	Name() string
	// Run produces measurements until ctx ends, then returns nil. It
	// returns an error only when the source cannot run at all (for example
	// when LocalAPI cannot listen). Failures while running (an unreadable
	// file, a failing command, a sink error) are logged and counted.
	Run(ctx context.Context, sink Sink) error
}

// Interface guards.
var (
	_ Source = (*System)(nil)
	_ Source = (*Exec)(nil)
	_ Source = (*LocalAPI)(nil)
)

// SenML units (RFC 8428 §12.1 and RFC 8798) used by the built-in sources.
const (
	unitPercent = "%"   // RFC 8428: 1 (percent)
	unitByte    = "B"   // RFC 8798: byte (information content)
	unitSecond  = "s"   // RFC 8428: second
	unitCelsius = "Cel" // RFC 8428: degrees Celsius
)

// unixSeconds is t in Unix seconds with millisecond precision, the SenML
// time of a record handed to a Sink.
func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// numeric returns a resolved record with a numeric value.
func numeric(name, unit string, t float64, v float64) protocol.Record {
	return protocol.Record{Name: name, Unit: unit, Time: t, Value: &v}
}

// batchRecords turns a decoded batch into resolved records for a Sink. The
// pack's mw_seq, if any, is dropped: sequence numbers belong to the agent's
// own batches.
func batchRecords(b protocol.Batch) []protocol.Record {
	b.Seq, b.HasSeq = 0, false
	return b.Pack()
}

// defaultClock returns c, or the real clock when c is nil.
func defaultClock(c clock.Clock) clock.Clock {
	if c == nil {
		return clock.Real()
	}
	return c
}
