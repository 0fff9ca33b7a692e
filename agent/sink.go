package agent

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// minAbsoluteTime is 2^28 s: SenML times below it are relative to "now".
const minAbsoluteTime = 1 << 28

// spoolSink is the agent's Sink: it stores each measurement in the spool as
// its own record, a one-record SenML pack in CBOR (uncompressed), with an
// absolute time. Batching, compression and the sequence number are applied
// when records are sent, so the spool never holds a half-built batch and a
// batch can be cut differently after a restart.
type spoolSink struct {
	sp  *spool.Spool
	clk clock.Clock

	written  atomic.Uint64 // records stored
	rejected atomic.Uint64 // records refused as invalid
}

var _ source.Sink = (*spoolSink)(nil)

// Write validates and stores the records. Invalid records are refused
// before anything is stored (so one bad record cannot make the server
// refuse a whole batch later); the error names the first bad one. A
// relative time (below 2^28 s) is taken as relative to the agent's clock.
func (s *spoolSink) Write(ctx context.Context, recs []protocol.Record, class source.Class) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	sc, err := spoolClass(class)
	if err != nil {
		return err
	}
	payloads := make([][]byte, len(recs))
	now := s.clk.Now()
	for i := range recs {
		r := recs[i]
		r.Seq = nil
		if r.BaseVersion != nil || r.BaseName != "" || r.BaseTime != 0 || r.BaseUnit != "" || r.BaseValue != nil || r.BaseSum != nil {
			// Resolve the base fields, so each stored record stands alone.
			b, err := protocol.Resolve(protocol.Pack{r}, now)
			if err != nil {
				s.rejected.Add(uint64(len(recs)))
				return fmt.Errorf("write measurement %d: %w: %w", i, ErrInvalidMeasurement, err)
			}
			if len(b.Measurements) == 0 {
				continue
			}
			r = b.Pack()[0] // absolute time
		} else if r.Time < minAbsoluteTime {
			r.Time = float64(now.UnixMilli())/1000 + r.Time
		}
		p, err := encodeRecord(r, now)
		if err != nil {
			s.rejected.Add(uint64(len(recs)))
			return fmt.Errorf("write measurement %d (%q): %w: %w", i, r.Name, ErrInvalidMeasurement, err)
		}
		payloads[i] = p
	}
	// One append for the whole call (a local API request, a source's sample
	// set): one write(2) instead of one per measurement.
	kept := payloads[:0]
	for _, p := range payloads {
		if p != nil {
			kept = append(kept, p)
		}
	}
	_, stored, err := s.sp.AppendBatch(sc, kept)
	s.written.Add(uint64(stored))
	if err != nil {
		return fmt.Errorf("write measurements: %d of %d stored: %w", stored, len(kept), err)
	}
	return nil
}

// spoolClass is the spool's record class for a source's class of
// measurements: the one place where sources meet the spool.
func spoolClass(c source.Class) (spool.Class, error) {
	switch c {
	case source.ClassRaw:
		return spool.ClassRaw, nil
	case source.ClassEvent:
		return spool.ClassEvent, nil
	}
	return 0, fmt.Errorf("write measurements: %w: %s", spool.ErrUnknownClass, c)
}

// encodeRecord checks one resolved record with the server's own rules and
// encodes it as the spool payload.
func encodeRecord(r protocol.Record, now time.Time) ([]byte, error) {
	b, err := protocol.Resolve(protocol.Pack{r}, now)
	if err != nil {
		return nil, err
	}
	if len(b.Measurements) != 1 {
		return nil, errors.New("a measurement needs a name and a value")
	}
	return protocol.Encode(protocol.Pack{r}, protocol.Encoding{Format: protocol.FormatCBOR})
}

// ErrInvalidMeasurement is wrapped when a Sink refuses a measurement.
var ErrInvalidMeasurement = errors.New("invalid measurement")
