package agent

import (
	"fmt"
	"time"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/protocol"
)

// Window is the dynamic batch window: how long the oldest measurement of a
// batch that is not full may wait before the batch is sent anyway. It moves
// between BatchConfig.MinWindow and MaxWindow after every send cycle (see
// Adapt), trading latency for efficiency: longer batches compress better
// and cost fewer round trips, which matters while a backlog drains or the
// link is slow; shorter ones deliver sooner when the agent is idle. A
// Window is not safe for concurrent use.
type Window struct {
	min, max, slow time.Duration
	cur            time.Duration
}

// windowStep is the smallest non-zero window growth starts from.
const windowStep = time.Second

// NewWindow returns a window at cfg.MinWindow.
func NewWindow(cfg BatchConfig) *Window {
	return &Window{min: cfg.MinWindow, max: cfg.MaxWindow, slow: cfg.SlowLink, cur: cfg.MinWindow}
}

// reconfigure takes new bounds, keeping the current window within them.
func (w *Window) reconfigure(cfg BatchConfig) {
	w.min, w.max, w.slow = cfg.MinWindow, cfg.MaxWindow, cfg.SlowLink
	w.cur = min(max(w.cur, w.min), w.max)
}

// Current returns the window.
func (w *Window) Current() time.Duration { return w.cur }

// CycleOutcome is what one send cycle saw, the input of Window.Adapt.
type CycleOutcome struct {
	// Attempted is false when the cycle did not reach the server (no
	// connection); the window then stays as it is.
	Attempted bool
	// Backlog is true when the cycle's budget of batches ran out with full
	// batches still waiting, or a batch was refused for retry (busy).
	Backlog bool
	// MaxRTT is the longest acknowledgement latency of the cycle's batches.
	MaxRTT time.Duration
}

// Adapt moves the window after a send cycle:
//
//   - backlog or slow link (MaxRTT ≥ SlowLink): the window doubles (from at
//     least 1 s), up to MaxWindow;
//   - otherwise (idle: everything due was sent, acks were fast): it halves,
//     down to MinWindow; below 1 s it drops to MinWindow;
//   - a cycle that did not reach the server leaves it unchanged.
func (w *Window) Adapt(o CycleOutcome) {
	switch {
	case !o.Attempted:
	case o.Backlog || o.MaxRTT >= w.slow:
		w.cur = min(w.max, max(2*w.cur, windowStep, w.min))
	default:
		w.cur = max(w.min, w.cur/2)
		if w.cur < windowStep {
			w.cur = w.min
		}
	}
}

// Due reports whether a batch of recs may be sent now: when it is full
// (full is true: it reached max records or max bytes and more records
// wait), when it holds an event, or when its oldest record is at least one
// window old. If the wall clock went back (the oldest record seems to come
// from the future) the batch is due too, rather than held until the clock
// catches up.
func (w *Window) Due(recs []spool.Record, full bool, now time.Time) bool {
	if len(recs) == 0 {
		return false
	}
	if full {
		return true
	}
	for _, r := range recs {
		if r.Class != spool.ClassRaw {
			return true
		}
	}
	age := now.Sub(recs[0].Time)
	return age >= w.cur || age < 0
}

// batch is a batch being sent: its records' spool IDs, its sequence number
// and its encoded payload. A retransmission sends the same payload, with
// the same sequence number.
type batch struct {
	ids     []uint64
	seq     uint64
	payload []byte
	records int       // measurements in the payload
	oldest  time.Time // append time of the oldest record
	bad     int       // spool records that could not be decoded (dropped)
}

// buildBatch decodes the spooled records and encodes them as one compact
// SenML pack (CBOR, zstd; see protocol.EncodeCompact), with the sequence
// number on the first record. Records that do not decode (written
// by a buggy or foreign writer) are left out and counted in bad; they are
// still acknowledged with the batch, since they can never be sent.
func buildBatch(recs []spool.Record, seq uint64, now time.Time) (*batch, error) {
	b := &batch{seq: seq, ids: make([]uint64, len(recs))}
	if len(recs) > 0 {
		b.oldest = recs[0].Time
	}
	// Fast path: splice the one-record packs into one array and decode it
	// in one call; fall back to one call per record to isolate bad ones.
	var ms []protocol.Measurement
	joined := joinPacks(recs)
	if joined != nil {
		if res, _, err := protocol.Decode(joined, now, decodeLimits); err == nil && len(res.Measurements) == len(recs) {
			ms = res.Measurements
		}
	}
	if ms == nil {
		ms = make([]protocol.Measurement, 0, len(recs))
		for _, r := range recs {
			res, _, err := protocol.Decode(r.Payload, now, decodeLimits)
			if err != nil || len(res.Measurements) != 1 {
				b.bad++
				continue
			}
			ms = append(ms, res.Measurements[0])
		}
	}
	for i, r := range recs {
		b.ids[i] = r.ID
	}
	b.records = len(ms)
	if len(ms) == 0 {
		return b, nil
	}
	// The compact layout (protocol.EncodeCompact): base fields re-set per
	// run of a common time or per series, decimal fractions with one
	// exponent per series. On the typical batch of BenchmarkWireBytes it
	// halves the compressed size of the plain resolved pack.
	payload, err := protocol.EncodeCompact(protocol.Batch{Seq: seq, HasSeq: true, Measurements: ms}, true)
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	b.payload = payload
	return b, nil
}

// decodeLimits are the limits for reading the agent's own spool records.
var decodeLimits = protocol.Limits{MaxPayload: 64 << 20, MaxDecompressed: 64 << 20, MaxRecords: 1 << 20}

// joinPacks turns n one-record CBOR packs (0x81 followed by a map) into one
// CBOR array of n maps, or returns nil when a payload is not in that form.
func joinPacks(recs []spool.Record) []byte {
	size := 9
	for _, r := range recs {
		if len(r.Payload) < 2 || r.Payload[0] != 0x81 {
			return nil
		}
		size += len(r.Payload) - 1
	}
	out := appendCBORHead(make([]byte, 0, size), 4, uint64(len(recs)))
	for _, r := range recs {
		out = append(out, r.Payload[1:]...)
	}
	return out
}

// appendCBORHead appends a CBOR initial byte and argument (RFC 8949 §3).
func appendCBORHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}
