package protocol

import (
	"fmt"
	"math"
	"sync"
	"unicode/utf8"

	"github.com/klauspost/compress/zstd"
)

// EncodeCompact encodes a resolved batch as a compact SenML CBOR pack, zstd
// compressed when compress is set: the form the device agent sends. It
// decodes, with Decode or any RFC 8428 reader that understands decimal
// fractions, to exactly b's measurements (the same names, units, float64
// values bit for bit, and millisecond times), though not always in b's
// order: the order within each series (name and unit) is kept. The first
// record carries b.Seq when b.HasSeq.
//
// The pack is laid out for zstd, which finds repeated bytes but cannot
// subtract: what stays the same from one sample to the next should be the
// same bytes, and what changes should be few bytes. RFC 8428 lets base
// fields be set again on any record; EncodeCompact uses that in one of two
// layouts:
//
//   - by time, when the measurements come in runs of a common time (a
//     source sampling several metrics at once), on average at least two to
//     a run: records keep b's order, each with its name and unit; the first
//     record of a run sets bt to the run's time, and no record has t.
//   - by series, otherwise (one or a few metrics sampled at high rate):
//     records are grouped by series, in the order each series first
//     appears; the first record sets bt to the first measurement's time;
//     the first record of each series sets bn to its name and bu to its
//     unit (bu "" to clear a unit), and each record has only its value and
//     t, its time as an offset from bt.
//
// Numbers are written so that their bytes repeat (RFC 8949 §3.4.4, RFC 8428
// §6 allows decimal fractions as long as the value converted to a float64 is
// the original). All values of a series share one decimal exponent, the
// smallest among their shortest decimals (21.3 and 21.5 are 4([-1, 213])
// and 4([-1, 215]), 45 is 4([-1, 450]) in a series that also has 45.1);
// integers are plain integers. A value whose mantissa at that exponent does
// not fit in 32 bits, a negative zero, and a value of no short decimal (a
// computed mean like 21.333333333333332) are written in their shortest
// exact form instead, as Encode does. Times are integer seconds when every
// time of the batch is whole seconds, else decimal fractions with the
// batch's common exponent (4([-3, ms]) for millisecond times, 4([-2, cs])
// for times on 10 ms steps).
//
// Exactness: a decimal written with a common exponent is the same number as
// the value's shortest decimal, which converts back to the value (Decode
// converts decimal fractions with correct rounding). A time as bt alone is
// the float64 nearest to ms/1000, which rounds back to ms. bt+t is within
// 1.5 ulp of it, below 10^-4 s for any time before year 10000, so it rounds
// back to ms too; the encoder checks each offset all the same, and a record
// whose bt+t would not resolve to its time exactly (near 2^28 s, where it
// may round below the bound and become relative) sets bt itself.
//
// The result, with compress, is one zstd frame made at the fastest level
// with a small window, which compresses these packs as well as the higher
// levels (measured: docs/benchmarks.md) and costs the device little memory.
// Errors are *Error with ReasonInvalid: an empty batch without Seq, or a
// measurement that Decode would refuse (a bad name, a non-finite number).
func EncodeCompact(b Batch, compress bool) ([]byte, error) {
	if len(b.Measurements) == 0 && !b.HasSeq {
		return nil, invalidf("empty pack")
	}
	for i := range b.Measurements {
		if err := b.Measurements[i].check(i); err != nil {
			return nil, err
		}
	}
	out := appendCompactPack(make([]byte, 0, 16*len(b.Measurements)+64), b, planCompact(b.Measurements))
	if !compress {
		return out, nil
	}
	e, err := compactEncoder()
	if err != nil {
		return nil, fmt.Errorf("encode: zstd: %w", err)
	}
	return e.EncodeAll(out, make([]byte, 0, len(out)/4+32)), nil
}

// compactEncoder compresses compact packs: the fastest level with a 64 KiB
// window and lower memory use allocates about 0.3 MiB against 1.6 MiB for
// the default level, and gave the same sizes on agent batches. The frame
// carries no content checksum (4 bytes a batch, 0.04 B a measurement of a
// 100-measurement batch): every batch crosses TLS, whose AEAD tag already
// authenticates each byte, was stored under the spool's CRC32C on the device,
// and is a CBOR pack the server parses strictly; a checksum adds nothing
// that these miss. Decoders accept frames with or without one.
var compactEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderCRC(false),
		zstd.WithWindowSize(64<<10),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderConcurrency(1),
	)
})

// check tests m against the rules Decode applies to a resolved record.
func (m *Measurement) check(i int) error {
	if err := checkName(m.Name); err != nil {
		return invalidf("measurement %d: %v", i, err)
	}
	if m.Time < minTimeMs || m.Time >= maxTimeMs {
		return invalidf("measurement %d: time %d ms is outside 1978-07-04T21:24:16Z .. 9999-12-31T23:59:59Z", i, m.Time)
	}
	if m.HasValue && m.Kind == KindFloat && !finite(m.Value) {
		return invalidf("measurement %d: value is not a finite number", i)
	}
	if m.HasSum && !finite(m.Sum) {
		return invalidf("measurement %d: sum is not a finite number", i)
	}
	if !m.HasValue && !m.HasSum {
		return invalidf("measurement %d has neither a value nor a sum", i)
	}
	if !utf8.ValidString(m.Unit) {
		return invalidf("measurement %d: unit is not UTF-8", i)
	}
	if m.HasValue && m.Kind == KindString && !utf8.ValidString(m.String) {
		return invalidf("measurement %d: string value is not UTF-8", i)
	}
	return nil
}

// compactLayout is the plan of a compact pack.
type compactLayout struct {
	bySeries bool
	// order is the measurements' indexes in pack order.
	order []int
	// valueExp is the common decimal exponent of each measurement's series
	// (by index), or noExp.
	valueExp []int64
	// timeExp is the exponent of times: 0 (integer seconds), -1, -2 or -3.
	timeExp int64
}

const noExp = math.MaxInt64

type seriesKey struct{ name, unit string }

func planCompact(ms []Measurement) compactLayout {
	l := compactLayout{order: make([]int, 0, len(ms)), valueExp: make([]int64, len(ms))}
	runs := 0
	trailing := int64(3) // zero digits common to the times' milliseconds
	for i := range ms {
		if i == 0 || ms[i].Time != ms[i-1].Time {
			runs++
		}
		for trailing > 0 && ms[i].Time%pow10i[trailing] != 0 {
			trailing--
		}
	}
	l.timeExp = trailing - 3
	l.bySeries = 2*runs > len(ms)

	// Series in order of first appearance, each with its members and
	// common exponent.
	index := make(map[seriesKey]int, 8)
	var members [][]int
	var exps []int64
	for i := range ms {
		k := seriesKey{ms[i].Name, ms[i].Unit}
		s, ok := index[k]
		if !ok {
			s = len(members)
			index[k] = s
			members = append(members, nil)
			exps = append(exps, noExp)
		}
		members[s] = append(members[s], i)
		if m := &ms[i]; m.HasValue && m.Kind == KindFloat && m.Value != 0 {
			if e, mant, ok := shortestDecimal(m.Value); ok && fitsCompact(mant) {
				exps[s] = min(exps[s], e)
			}
		}
	}
	for s, idx := range members {
		for _, i := range idx {
			l.valueExp[i] = exps[s]
		}
		if l.bySeries {
			l.order = append(l.order, idx...)
		}
	}
	if !l.bySeries {
		for i := range ms {
			l.order = append(l.order, i)
		}
	}
	return l
}

var pow10i = [...]int64{1, 10, 100, 1000}

// fitsCompact reports whether a mantissa is short enough for the common
// exponent form: a CBOR argument of at most 4 bytes.
func fitsCompact(mant int64) bool { return mant > -1<<32 && mant < 1<<32 }

func appendCompactPack(b []byte, bt Batch, l compactLayout) []byte {
	ms := bt.Measurements
	if len(ms) == 0 { // only the sequence number
		b = appendCBORHead(b, cborArray, 1)
		b = appendCBORHead(b, cborMap, 1)
		return appendCBORHead(appendCBORText(b, "mw_seq"), cborUint, bt.Seq)
	}
	b = appendCBORHead(b, cborArray, uint64(len(ms)))
	var (
		baseMs     int64  // bt in effect
		bn, bu     string // bn and bu in effect (by series)
		prevTimeMs int64
	)
	for k, i := range l.order {
		m := &ms[i]
		first := k == 0
		seq := first && bt.HasSeq
		setBT := first || (!l.bySeries && m.Time != prevTimeMs) ||
			(l.bySeries && m.Time != baseMs && !offsetExact(baseMs, m.Time, l.timeExp))
		if setBT {
			baseMs = m.Time
		}
		setBN := l.bySeries && m.Name != bn
		setBU := l.bySeries && m.Unit != bu
		hasT := l.bySeries && m.Time != baseMs
		fields := m.valueFields() + count(seq, setBT, setBN, setBU, hasT)
		if !l.bySeries {
			fields += count(true, m.Unit != "") // n, u
		}
		b = appendCBORHead(b, cborMap, uint64(fields))
		if seq {
			b = appendCBORHead(appendCBORText(b, "mw_seq"), cborUint, bt.Seq)
		}
		if l.bySeries {
			if setBT {
				b = appendCompactTime(append(b, cborLabelBt), m.Time, l.timeExp)
			}
			if setBN {
				b, bn = appendCBORText(append(b, cborLabelBn), m.Name), m.Name
			}
			if setBU {
				b, bu = appendCBORText(append(b, cborLabelBu), m.Unit), m.Unit
			}
		} else {
			b = appendCBORText(append(b, cborLabelN), m.Name)
			if m.Unit != "" {
				b = appendCBORText(append(b, cborLabelU), m.Unit)
			}
		}
		b = appendCompactValue(b, m, l.valueExp[i])
		switch {
		case !l.bySeries && setBT:
			// The run's time goes last: next to the value, which changes
			// too, the two cost zstd one literal run instead of two.
			b = appendCompactTime(append(b, cborLabelBt), m.Time, l.timeExp)
		case hasT:
			b = appendCompactTime(append(b, cborLabelT), m.Time-baseMs, l.timeExp)
		}
		prevTimeMs = m.Time
	}
	return b
}

func count(conds ...bool) int {
	n := 0
	for _, c := range conds {
		if c {
			n++
		}
	}
	return n
}

// valueFields is the number of value and sum fields of m's record.
func (m *Measurement) valueFields() int {
	n := 0
	if m.HasValue {
		n++
	}
	if m.HasSum {
		n++
	}
	return n
}

// appendCompactValue appends m's value and sum fields.
func appendCompactValue(b []byte, m *Measurement, exp int64) []byte {
	if m.HasValue {
		switch m.Kind {
		case KindFloat:
			b = appendCommonExp(append(b, cborLabelV), m.Value, exp)
		case KindBool:
			v := byte(0xf4)
			if m.Value != 0 {
				v = 0xf5
			}
			b = append(b, cborLabelVb, v)
		case KindString:
			b = appendCBORText(append(b, cborLabelVs), m.String)
		case KindData:
			b = append(appendCBORHead(append(b, cborLabelVd), cborBytes, uint64(len(m.Data))), m.Data...)
		}
	}
	if m.HasSum {
		b = appendShortestNumber(append(b, cborLabelS), m.Sum, true)
	}
	return b
}

// appendCommonExp appends f as an integer (exp 0) or 4([exp, mantissa])
// when that is exact with a mantissa that fits 32 bits, else in its
// shortest exact form.
func appendCommonExp(b []byte, f float64, exp int64) []byte {
	if exp != noExp && !(f == 0 && math.Signbit(f)) {
		e, mant, ok := shortestDecimal(f)
		if f == 0 {
			e, mant, ok = exp, 0, true
		}
		for ok && e > exp && fitsCompact(mant) {
			mant *= 10
			e--
		}
		if ok && e == exp && fitsCompact(mant) {
			if exp == 0 {
				return appendCBORInt(b, mant)
			}
			return appendCBORInt(appendCBORInt(append(b, 0xc4, 0x82), exp), mant)
		}
	}
	return appendShortestNumber(b, f, true)
}

// offsetExact reports whether a reader resolves bt+t, with bt at baseMs and
// t at ms-baseMs as appendCompactTime writes them, to ms again, and as an
// absolute time. It always does but near 2^28 s, where bt+t may round
// below the bound and so become relative; the record then sets bt itself.
func offsetExact(baseMs, ms, exp int64) bool {
	unit := pow10i[3+exp]
	bt, ok1 := decimalFast(baseMs/unit, exp)
	t, ok2 := decimalFast((ms-baseMs)/unit, exp)
	sum := bt + t
	return ok1 && ok2 && sum >= relativeTimeLimit && math.Round(sum*1000) == float64(ms)
}

// appendCompactTime appends ms milliseconds as seconds: an integer when
// exp is 0, else 4([exp, ms/10^(3+exp)]); ms must be a multiple of
// 10^(3+exp).
func appendCompactTime(b []byte, ms int64, exp int64) []byte {
	if exp == 0 {
		return appendCBORInt(b, ms/1000)
	}
	return appendCBORInt(appendCBORInt(append(b, 0xc4, 0x82), exp), ms/pow10i[3+exp])
}
