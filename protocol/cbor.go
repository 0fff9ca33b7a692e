package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// CBOR decoding runs in two passes. cborDecMode.Wellformed first checks the
// payload is one well-formed CBOR item within the limits below (any failure
// is ReasonMalformed); then a small reader walks the pack and hands each
// record to the resolver, without reflection and without an allocation per
// record (any failure is ReasonInvalid). The reader still checks bounds on
// every read, so it is safe on its own.
//
// Choices, with RFC 8428 §6:
//   - Indefinite-length items are refused: a SenML pack "MUST" be a
//     definite-length array, and strings are definite-length.
//   - Integer labels per Table 4; text labels are extensions: "mw_seq" is
//     ours, a label ending in '_' we do not know refuses the pack, other
//     unknown labels (text or integer) are ignored with their values. A
//     text label that is a SenML JSON label ("n", "v", …) refuses the pack:
//     no extension may take those names (Table 4 is conclusive), and
//     ignoring it would silently drop data from a mistaken encoder.
//   - A repeated SenML label in a record refuses the pack.
//   - Numbers may be integers, floats (16, 32, 64 bit) or decimal fractions
//     (tag 4 with integer exponent and mantissa); bver and mw_seq must be
//     unsigned integers. Other tags are refused where a SenML value is
//     expected and ignored inside ignored fields.
//   - null and undefined count as an absent field.
var cborDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  cborMaxNesting,
		MaxArrayElements: maxRecordsCeiling,
		MaxMapPairs:      cborMaxMapPairs,
		TagsMd:           cbor.TagsAllowed,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

const (
	// cborMaxNesting bounds nesting: a pack needs 2 levels (array, map);
	// the rest is room for values of extension fields.
	cborMaxNesting = 16
	// cborMaxMapPairs bounds the fields of one record (RFC 8428 defines 15).
	cborMaxMapPairs = 256
)

// labelFields maps the CBOR labels 0..8 and -1..-6 to fields.
var (
	cborPosLabels = [...]fieldSet{fN, fU, fV, fVs, fVb, fS, fT, fUt, fVd}
	cborNegLabels = [...]fieldSet{fBver, fBn, fBt, fBu, fBv, fBs}
)

func decodeCBOR(data []byte, now time.Time, maxRecords int) (Batch, error) {
	if err := cborDecMode.Wellformed(data); err != nil {
		return Batch{}, &Error{Reason: ReasonMalformed, Err: cborError(err)}
	}
	d := cborReader{b: data}
	major, _, n, err := d.head()
	if err != nil || major != cborArray {
		return Batch{}, errorf(ReasonMalformed, "a SenML pack must be a CBOR array")
	}
	switch {
	case n == 0:
		return Batch{}, invalidf("empty pack")
	case n > uint64(maxRecords):
		return Batch{}, errorf(ReasonTooManyRecords, "the pack has %d records, the limit is %d", n, maxRecords)
	}
	r := getResolver(now, int(n))
	defer putResolver(r)
	var rec rawRecord
	for i := 0; i < int(n); i++ {
		if err := d.record(&rec, i); err != nil {
			return Batch{}, err
		}
		if err := r.add(&rec, i); err != nil {
			return Batch{}, err
		}
	}
	return r.finish(), nil
}

// cborError rewords the errors of Wellformed that have a SenML meaning.
func cborError(err error) error {
	var indef *cbor.IndefiniteLengthError
	if errors.As(err, &indef) {
		return errors.New("cbor: indefinite-length item: a SenML pack and its strings must have definite lengths (RFC 8428 §6)")
	}
	if !strings.HasPrefix(err.Error(), "cbor") {
		return fmt.Errorf("cbor: %w", err)
	}
	return err
}

// CBOR major types.
const (
	cborUint   = 0
	cborNegint = 1
	cborBytes  = 2
	cborText   = 3
	cborArray  = 4
	cborMap    = 5
	cborTag    = 6
	cborSimple = 7
)

var errCBORTruncated = errorString("truncated CBOR item")

// cborReader reads CBOR data items from b.
type cborReader struct {
	b   []byte
	off int
}

// head reads the head of a data item: its major type, additional
// information and argument.
func (d *cborReader) head() (major, ai byte, arg uint64, err error) {
	if d.off >= len(d.b) {
		return 0, 0, 0, errCBORTruncated
	}
	ib := d.b[d.off]
	d.off++
	major, ai = ib>>5, ib&0x1f
	rest := d.b[d.off:]
	switch {
	case ai < 24:
		return major, ai, uint64(ai), nil
	case ai == 24 && len(rest) >= 1:
		d.off++
		return major, ai, uint64(rest[0]), nil
	case ai == 25 && len(rest) >= 2:
		d.off += 2
		return major, ai, uint64(binary.BigEndian.Uint16(rest)), nil
	case ai == 26 && len(rest) >= 4:
		d.off += 4
		return major, ai, uint64(binary.BigEndian.Uint32(rest)), nil
	case ai == 27 && len(rest) >= 8:
		d.off += 8
		return major, ai, binary.BigEndian.Uint64(rest), nil
	case ai >= 28:
		return 0, 0, 0, errorString("indefinite-length or reserved CBOR item")
	}
	return 0, 0, 0, errCBORTruncated
}

// bytes returns the n bytes of a string's content.
func (d *cborReader) bytes(n uint64) ([]byte, error) {
	if n > uint64(len(d.b)-d.off) {
		return nil, errCBORTruncated
	}
	s := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return s, nil
}

// skip skips one data item.
func (d *cborReader) skip(depth int) error {
	if depth > cborMaxNesting {
		return errorString("CBOR nested too deeply")
	}
	major, _, arg, err := d.head()
	if err != nil {
		return err
	}
	switch major {
	case cborBytes, cborText:
		_, err = d.bytes(arg)
	case cborArray, cborMap:
		n := arg
		for k := uint64(0); k < n && err == nil; k++ {
			err = d.skip(depth + 1)
			if major == cborMap && err == nil {
				err = d.skip(depth + 1)
			}
		}
	case cborTag:
		err = d.skip(depth + 1)
	}
	return err
}

// record reads record i into rec.
func (d *cborReader) record(rec *rawRecord, i int) error {
	*rec = rawRecord{}
	major, _, pairs, err := d.head()
	if err != nil {
		return &Error{Reason: ReasonMalformed, Err: err}
	}
	if major != cborMap {
		return invalidf("record %d is not a CBOR map", i)
	}
	var seen fieldSet
	for k := uint64(0); k < pairs; k++ {
		f, err := d.label(i)
		if err != nil {
			return err
		}
		if f == 0 {
			if err := d.skip(1); err != nil {
				return &Error{Reason: ReasonMalformed, Err: err}
			}
			continue
		}
		if seen&f != 0 {
			return invalidf("record %d repeats field %s", i, f.name())
		}
		seen |= f
		if err := d.value(rec, f); err != nil {
			return invalidf("record %d: field %s: %v", i, f.name(), err)
		}
	}
	return nil
}

// label reads a map key and returns its field, or 0 for a field to ignore.
func (d *cborReader) label(i int) (fieldSet, error) {
	major, _, arg, err := d.head()
	if err != nil {
		return 0, &Error{Reason: ReasonMalformed, Err: err}
	}
	switch major {
	case cborUint:
		if arg < uint64(len(cborPosLabels)) {
			return cborPosLabels[arg], nil
		}
		return 0, nil
	case cborNegint:
		if arg < uint64(len(cborNegLabels)) {
			return cborNegLabels[arg], nil
		}
		return 0, nil
	case cborText:
		key, err := d.bytes(arg)
		if err != nil {
			return 0, &Error{Reason: ReasonMalformed, Err: err}
		}
		if string(key) == "mw_seq" {
			return fSeq, nil
		}
		if f := jsonField(key); f != 0 {
			return 0, invalidf("record %d has the text label %q; CBOR SenML labels are integers (RFC 8428 §6, Table 4)", i, key)
		}
		if len(key) > 0 && key[len(key)-1] == '_' {
			return 0, mustUnderstand(key, i)
		}
		return 0, nil
	}
	return 0, invalidf("record %d has a map key of CBOR major type %d; SenML labels are integers or text", i, major)
}

func mustUnderstand(key []byte, i int) error {
	return invalidf("record %d has field %q, which ends in '_' and so must be understood, but is unknown here (RFC 8428 §4.4)", i, key)
}

// value reads the value of field f into rec.
func (d *cborReader) value(rec *rawRecord, f fieldSet) error {
	start := d.off
	major, ai, arg, err := d.head()
	if err != nil {
		return err
	}
	if major == cborSimple && (ai == 22 || ai == 23) {
		return nil // null, undefined: absent
	}
	switch f {
	case fBver, fSeq:
		if major != cborUint {
			return errorString("not an unsigned integer")
		}
		if f == fSeq {
			rec.seq = arg
		} else {
			rec.bver = int64(min(arg, math.MaxInt32))
		}
	case fBn, fBu, fN, fU, fVs:
		if major != cborText {
			return errorString("not a text string")
		}
		s, err := d.bytes(arg)
		if err != nil {
			return err
		}
		switch f {
		case fBn:
			rec.bn = s
		case fBu:
			rec.bu = s
		case fN:
			rec.n = s
		case fU:
			rec.u = s
		case fVs:
			rec.vs = s
		}
	case fVd:
		if major != cborBytes {
			return errorString("not a byte string")
		}
		if rec.vd, err = d.bytes(arg); err != nil {
			return err
		}
	case fVb:
		if major != cborSimple || (ai != 20 && ai != 21) {
			return errorString("not a boolean")
		}
		rec.vb = ai == 21
	default:
		d.off = start
		v, err := d.number()
		if err != nil {
			return err
		}
		rec.setNumber(f, v)
	}
	rec.has |= f
	return nil
}

var errNotNumber = errorString("not a number")

// number reads an integer, a float or a decimal fraction (tag 4).
func (d *cborReader) number() (float64, error) {
	major, ai, arg, err := d.head()
	if err != nil {
		return 0, err
	}
	switch major {
	case cborUint:
		return float64(arg), nil
	case cborNegint:
		// -1-arg, rounded once: -1 - float64(arg) would round twice and
		// miss integers beyond 2^53.
		if arg == math.MaxUint64 {
			return -0x1p64, nil
		}
		return -float64(arg + 1), nil
	case cborSimple:
		switch ai {
		case 25:
			return halfToFloat64(uint16(arg)), nil
		case 26:
			return float64(math.Float32frombits(uint32(arg))), nil
		case 27:
			return math.Float64frombits(arg), nil
		}
	case cborTag:
		if arg == 4 {
			return d.decimalFraction()
		}
		return 0, errorString("CBOR tag " + strconv.FormatUint(arg, 10) + " is not a number (only tag 4, decimal fraction, is)")
	}
	return 0, errNotNumber
}

// decimalFraction reads the content of tag 4: [exponent, mantissa], both
// integers, and returns the correctly rounded float64 of mantissa·10^exponent.
func (d *cborReader) decimalFraction() (float64, error) {
	major, _, n, err := d.head()
	if err != nil {
		return 0, err
	}
	if major != cborArray || n != 2 {
		return 0, errorString("decimal fraction is not a two-element array")
	}
	var buf [48]byte
	em, _, e, err := d.head()
	if err != nil {
		return 0, err
	}
	mm, _, m, err := d.head()
	if err != nil {
		return 0, err
	}
	if (em != cborUint && em != cborNegint) || (mm != cborUint && mm != cborNegint) {
		return 0, errorString("decimal fraction with a non-integer exponent or mantissa")
	}
	if m < 1<<53 && e <= 22 {
		mant, exp := int64(m), int64(e)
		if mm == cborNegint {
			mant = -mant - 1
		}
		if em == cborNegint {
			exp = -exp - 1
		}
		if v, ok := decimalFast(mant, exp); ok {
			return v, nil
		}
	}
	s := buf[:0]
	if mm == cborNegint {
		s = append(s, '-')
		if m == math.MaxUint64 {
			s = append(s, "18446744073709551616"...)
		} else {
			s = strconv.AppendUint(s, m+1, 10)
		}
	} else {
		s = strconv.AppendUint(s, m, 10)
	}
	// Exponents beyond ±2^20 over- or underflow a float64 anyway.
	const maxExp = 1 << 20
	s = append(s, 'e')
	if em == cborNegint {
		s = strconv.AppendInt(s, -1-int64(min(e, maxExp)), 10)
	} else {
		s = strconv.AppendInt(s, int64(min(e, maxExp)), 10)
	}
	v, err := strconv.ParseFloat(string(s), 64)
	if err != nil {
		return 0, errorString("decimal fraction out of range")
	}
	return v, nil
}

// decimalFast returns mant·10^exp, correctly rounded, when |mant| ≤ 2^53
// and |exp| ≤ 22, as strconv's fast path does: those integers and powers
// of ten are exact float64s, so one multiplication or division, correctly
// rounded by IEEE 754, gives the correctly rounded result.
func decimalFast(mant, exp int64) (float64, bool) {
	if mant < -1<<53 || mant > 1<<53 || exp < -22 || exp > 22 {
		return 0, false
	}
	if exp < 0 {
		return float64(mant) / pow10[-exp], true
	}
	return float64(mant) * pow10[exp], true
}

// pow10 are the powers of ten that are exact float64s.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// halfToFloat64 converts an IEEE 754 binary16 to a float64.
func halfToFloat64(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	mant := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(mant, -24)
	case 0x1f:
		if mant == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	return sign * math.Ldexp(mant+1024, exp-25)
}

// float64ToHalf returns f as an IEEE 754 binary16 if that is exact.
func float64ToHalf(f float64) (uint16, bool) {
	f32 := float32(f)
	if float64(f32) != f { // also NaN
		return 0, false
	}
	b := math.Float32bits(f32)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign, true
	case exp == 128: // infinity
		return sign | 0x7c00, true
	case exp >= -14 && exp <= 15:
		if mant&0x1fff != 0 {
			return 0, false
		}
		return sign | uint16(exp+15)<<10 | uint16(mant>>13), true
	case exp >= -24 && exp < -14:
		sig := mant | 0x800000
		shift := uint(-(exp + 1))
		if sig&(1<<shift-1) != 0 {
			return 0, false
		}
		return sign | uint16(sig>>shift), true
	}
	return 0, false
}

func appendCBORHead(b []byte, major byte, arg uint64) []byte {
	m := major << 5
	switch {
	case arg < 24:
		return append(b, m|byte(arg))
	case arg <= math.MaxUint8:
		return append(b, m|24, byte(arg))
	case arg <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(arg))
	case arg <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(arg))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), arg)
}

func cborHeadLen(arg uint64) int {
	switch {
	case arg < 24:
		return 1
	case arg <= math.MaxUint8:
		return 2
	case arg <= math.MaxUint16:
		return 3
	case arg <= math.MaxUint32:
		return 5
	}
	return 9
}

func appendCBORText(b []byte, s string) []byte {
	return append(appendCBORHead(b, cborText, uint64(len(s))), s...)
}

// appendCBORNumber appends f in its shortest exact form: an integer, or a
// float16, float32 or float64, whichever is shortest (an integer on a tie).
// f must be finite. A negative zero is written as a float16, to keep its
// sign.
func appendCBORNumber(b []byte, f float64) []byte { return appendShortestNumber(b, f, false) }

// appendShortestNumber is appendCBORNumber that, with decimals, also
// considers a decimal fraction (tag 4, RFC 8949 §3.4.4) of the shortest
// decimal that converts back to f, and takes it when it is shorter than
// the others: 21.53 is 4([-2, 2153]), 6 bytes against 9 for its float64.
// The decimal is exact: it is the shortest one that strconv parses back to
// f, and Decode converts decimal fractions with correct rounding, as
// strconv does.
func appendShortestNumber(b []byte, f float64, decimals bool) []byte {
	intLen := 99
	// An integral float64 below 2^63 converts to an integer exactly.
	if f == math.Trunc(f) && math.Abs(f) < 1<<63 && !(f == 0 && math.Signbit(f)) {
		if f >= 0 {
			intLen = cborHeadLen(uint64(f))
		} else {
			intLen = cborHeadLen(uint64(-f) - 1)
		}
	}
	floatLen := 9
	if _, ok := float64ToHalf(f); ok {
		floatLen = 3
	} else if f32 := float32(f); float64(f32) == f {
		floatLen = 5
	}
	if decimals && intLen > 3 && floatLen > 3 {
		if exp, mant, ok := shortestDecimal(f); ok && decimalLen(exp, mant) < min(intLen, floatLen) {
			return appendCBORInt(appendCBORInt(append(b, 0xc4, 0x82), exp), mant)
		}
	}
	if intLen <= floatLen {
		if f >= 0 {
			return appendCBORHead(b, cborUint, uint64(f))
		}
		return appendCBORHead(b, cborNegint, uint64(-f)-1)
	}
	switch floatLen {
	case 3:
		h, _ := float64ToHalf(f)
		return binary.BigEndian.AppendUint16(append(b, 0xf9), h)
	case 5:
		return binary.BigEndian.AppendUint32(append(b, 0xfa), math.Float32bits(float32(f)))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xfb), math.Float64bits(f))
}

// shortestDecimal returns f as mant·10^exp with the fewest digits that
// convert back to f exactly, when mant fits an int64.
func shortestDecimal(f float64) (exp, mant int64, ok bool) {
	var buf [32]byte
	s := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // -d.ddddde±dd
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	digits, e, found := bytesCut(s, 'e')
	if !found || len(e) < 2 {
		return 0, 0, false
	}
	var x int64
	for _, c := range e[1:] {
		x = x*10 + int64(c-'0')
	}
	if e[0] == '-' {
		x = -x
	}
	n := 0
	for _, c := range digits {
		if c == '.' {
			continue
		}
		if mant > (math.MaxInt64-9)/10 {
			return 0, 0, false
		}
		mant = mant*10 + int64(c-'0')
		n++
	}
	if neg {
		mant = -mant
	}
	return x - int64(n-1), mant, true
}

func bytesCut(s []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range s {
		if c == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, nil, false
}

// decimalLen is the length of the tag-4 encoding of mant·10^exp.
func decimalLen(exp, mant int64) int {
	return 2 + cborIntLen(exp) + cborIntLen(mant)
}

func cborIntLen(v int64) int {
	if v >= 0 {
		return cborHeadLen(uint64(v))
	}
	return cborHeadLen(uint64(-1 - v))
}

func appendCBORInt(b []byte, v int64) []byte {
	if v >= 0 {
		return appendCBORHead(b, cborUint, uint64(v))
	}
	return appendCBORHead(b, cborNegint, uint64(-1-v))
}

// CBOR labels as single bytes: 0..8 and -1..-6.
const (
	cborLabelBver = 0x20 + iota
	cborLabelBn
	cborLabelBt
	cborLabelBu
	cborLabelBv
	cborLabelBs
)

const (
	cborLabelN = iota
	cborLabelU
	cborLabelV
	cborLabelVs
	cborLabelVb
	cborLabelS
	cborLabelT
	cborLabelUt
	cborLabelVd
)

// appendCBORPack appends p as an RFC 8428 CBOR pack. The records must have
// passed Record.check.
func appendCBORPack(b []byte, p Pack) []byte {
	b = appendCBORHead(b, cborArray, uint64(len(p)))
	for i := range p {
		b = appendCBORRecord(b, &p[i])
	}
	return b
}

func appendCBORRecord(b []byte, r *Record) []byte {
	b = appendCBORHead(b, cborMap, uint64(r.fieldCount()))
	if r.Seq != nil {
		b = appendCBORHead(appendCBORText(b, "mw_seq"), cborUint, *r.Seq)
	}
	if r.BaseVersion != nil {
		b = appendCBORInt(append(b, cborLabelBver), int64(*r.BaseVersion))
	}
	if r.BaseName != "" {
		b = appendCBORText(append(b, cborLabelBn), r.BaseName)
	}
	if r.BaseTime != 0 {
		b = appendCBORNumber(append(b, cborLabelBt), r.BaseTime)
	}
	if r.BaseUnit != "" {
		b = appendCBORText(append(b, cborLabelBu), r.BaseUnit)
	}
	if r.BaseValue != nil {
		b = appendCBORNumber(append(b, cborLabelBv), *r.BaseValue)
	}
	if r.BaseSum != nil {
		b = appendCBORNumber(append(b, cborLabelBs), *r.BaseSum)
	}
	if r.Name != "" {
		b = appendCBORText(append(b, cborLabelN), r.Name)
	}
	if r.Unit != "" {
		b = appendCBORText(append(b, cborLabelU), r.Unit)
	}
	if r.Value != nil {
		b = appendCBORNumber(append(b, cborLabelV), *r.Value)
	}
	if r.StringValue != nil {
		b = appendCBORText(append(b, cborLabelVs), *r.StringValue)
	}
	if r.BoolValue != nil {
		v := byte(0xf4)
		if *r.BoolValue {
			v = 0xf5
		}
		b = append(b, cborLabelVb, v)
	}
	if r.Sum != nil {
		b = appendCBORNumber(append(b, cborLabelS), *r.Sum)
	}
	if r.Time != 0 {
		b = appendCBORNumber(append(b, cborLabelT), r.Time)
	}
	if r.UpdateTime != 0 {
		b = appendCBORNumber(append(b, cborLabelUt), r.UpdateTime)
	}
	if r.DataValue != nil {
		b = append(appendCBORHead(append(b, cborLabelVd), cborBytes, uint64(len(r.DataValue))), r.DataValue...)
	}
	return b
}
