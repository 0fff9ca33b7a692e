package protocol

import (
	"bytes"
	"math"
	"math/bits"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Record is one SenML record (RFC 8428 §4) as a device writes it, before
// resolution. The JSON member names and CBOR integer labels are those of
// RFC 8428 §4.3 and §6; Seq is the Millwright extension "mw_seq".
//
// A nil pointer or a nil DataValue means the field is absent. For the
// non-pointer fields the zero value means absent: an empty BaseName,
// BaseUnit, Name or Unit, and a zero BaseTime, Time or UpdateTime are not
// encoded. (On the wire an explicit "bt": 0, "bn": "" or "bu": "" does reset
// the base field; Decode honours that, a Pack cannot express it.)
//
// Record implements json.Marshaler and json.Unmarshaler with the rules of
// Encode and Decode (DataValue as unpadded base64url, unknown fields ending
// in '_' refused). Its cbor struct tags let github.com/fxamacker/cbor/v2
// marshal it as RFC 8428 CBOR too, though Encode writes smaller output.
type Record struct {
	// BaseVersion (bver, -1) is the SenML version of the pack; 10 when
	// absent. Versions 1 to 10 are accepted and must not differ within a
	// pack.
	BaseVersion *int `json:"bver,omitempty" cbor:"-1,keyasint,omitempty"`
	// BaseName (bn, -2) is prepended to the Name of this and later records.
	BaseName string `json:"bn,omitempty" cbor:"-2,keyasint,omitempty"`
	// BaseTime (bt, -3), in seconds, is added to the Time of this and later
	// records.
	BaseTime float64 `json:"bt,omitempty" cbor:"-3,keyasint,omitempty"`
	// BaseUnit (bu, -4) is the Unit of this and later records that have none.
	BaseUnit string `json:"bu,omitempty" cbor:"-4,keyasint,omitempty"`
	// BaseValue (bv, -5) is added to the Value of this and later records.
	BaseValue *float64 `json:"bv,omitempty" cbor:"-5,keyasint,omitempty"`
	// BaseSum (bs, -6) is added to the Sum of this and later records.
	BaseSum *float64 `json:"bs,omitempty" cbor:"-6,keyasint,omitempty"`

	// Name (n, 0) is appended to the base name to make the sensor's name.
	Name string `json:"n,omitempty" cbor:"0,keyasint,omitempty"`
	// Unit (u, 1) is the unit of the value, a SenML unit such as "Cel".
	Unit string `json:"u,omitempty" cbor:"1,keyasint,omitempty"`
	// Value (v, 2) is a numeric value.
	Value *float64 `json:"v,omitempty" cbor:"2,keyasint,omitempty"`
	// StringValue (vs, 3) is a text value.
	StringValue *string `json:"vs,omitempty" cbor:"3,keyasint,omitempty"`
	// BoolValue (vb, 4) is a boolean value.
	BoolValue *bool `json:"vb,omitempty" cbor:"4,keyasint,omitempty"`
	// DataValue (vd, 8) is an opaque binary value: a CBOR byte string, in
	// JSON unpadded base64url (RFC 4648 §5).
	DataValue []byte `json:"vd,omitempty" cbor:"8,keyasint,omitzero"`
	// Sum (s, 5) is the integral of the value over time, in unit·seconds.
	Sum *float64 `json:"s,omitempty" cbor:"5,keyasint,omitempty"`
	// Time (t, 6) is the time of the measurement in seconds: added to the
	// base time, a result of 2^28 or more is seconds since the Unix epoch,
	// a smaller one is relative to "now" (the moment the server receives
	// the pack).
	Time float64 `json:"t,omitempty" cbor:"6,keyasint,omitempty"`
	// UpdateTime (ut, 7) is the longest time in seconds until the sensor
	// reports again. It is checked but not stored.
	UpdateTime float64 `json:"ut,omitempty" cbor:"7,keyasint,omitempty"`

	// Seq (mw_seq) is the Millwright batch sequence number: a per-device
	// counter that grows by one for each new batch and stays the same when
	// a batch is sent again. It is allowed on the first record only.
	Seq *uint64 `json:"mw_seq,omitempty" cbor:"mw_seq,omitempty"`
}

// Pack is a SenML pack: the records of one telemetry batch, in order.
type Pack []Record

// Kind is the type of a Measurement's value.
type Kind uint8

// Kinds of values, one for each SenML value field.
const (
	KindFloat  Kind = iota // v: Measurement.Value
	KindBool               // vb: Measurement.Value is 0 or 1
	KindString             // vs: Measurement.String
	KindData               // vd: Measurement.Data
)

// String returns "float", "bool", "string" or "data".
func (k Kind) String() string {
	switch k {
	case KindFloat:
		return "float"
	case KindBool:
		return "bool"
	case KindString:
		return "string"
	case KindData:
		return "data"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Measurement is one resolved record: base fields applied, time absolute.
type Measurement struct {
	// Name is the base name and the name concatenated; it satisfies the
	// name rule of RFC 8428 §4.5.1.
	Name string
	// Unit is the record's unit, or else the base unit; may be empty.
	Unit string
	// Time is when the value was measured, in milliseconds since the Unix
	// epoch: base time plus time, in seconds, times 1000, rounded to the
	// nearest millisecond. Relative times are added to "now" in whole
	// milliseconds.
	Time int64
	// Kind is the type of the value.
	Kind Kind
	// HasValue is false when the record carried only a sum.
	HasValue bool
	// HasSum reports whether the record carried a sum or a base sum was in
	// effect; Sum is then base sum plus sum.
	HasSum bool
	// Value is the numeric value (base value added) for KindFloat, and 0 or
	// 1 for KindBool.
	Value float64
	// String is the value for KindString.
	String string
	// Data is the value for KindData.
	Data []byte
	Sum  float64
}

// Batch is a resolved pack: what the server stores from one device message.
type Batch struct {
	// Seq is the pack's mw_seq, when HasSeq.
	Seq    uint64
	HasSeq bool
	// Measurements are the resolved records in pack order. Records that
	// carry only base fields produce none.
	Measurements []Measurement
}

// Pack returns b as a pack of resolved records (RFC 8428 §4.6): every record
// carries its full name, unit, absolute time in seconds and value, and the
// first record carries mw_seq when b has one. Decoding its encoding gives b
// again (given the same now). An empty Batch without Seq gives an empty Pack,
// which Decode refuses.
func (b Batch) Pack() Pack {
	n := len(b.Measurements)
	if n == 0 && b.HasSeq {
		n = 1
	}
	p := make(Pack, n)
	for i := range b.Measurements {
		m := &b.Measurements[i]
		r := &p[i]
		r.Name = m.Name
		r.Unit = m.Unit
		r.Time = float64(m.Time) / 1000
		if m.HasValue {
			switch m.Kind {
			case KindFloat:
				v := m.Value
				r.Value = &v
			case KindBool:
				v := m.Value != 0
				r.BoolValue = &v
			case KindString:
				v := m.String
				r.StringValue = &v
			case KindData:
				r.DataValue = m.Data
				if r.DataValue == nil {
					r.DataValue = []byte{}
				}
			}
		}
		if m.HasSum {
			s := m.Sum
			r.Sum = &s
		}
	}
	if b.HasSeq {
		seq := b.Seq
		p[0].Seq = &seq
	}
	return p
}

// Resolve resolves a pack (RFC 8428 §4.6) into a Batch, with now as the
// time relative times are counted from. Base fields carry forward to later
// records until a record sets them again; a record's name is bn+n, its time
// bt+t, its unit u or else bu, its value bv+v, its sum bs+s. Resolve refuses
// the pack (a *Error with ReasonInvalid) when:
//
//   - the pack is empty;
//   - a bver is not in 1..10, or records have different versions;
//   - mw_seq is on any record but the first;
//   - a record carries regular fields but neither a value nor a sum, or
//     more than one value field (v, vs, vb, vd);
//   - a record has no SenML field at all;
//   - a name does not match the rule of RFC 8428 §4.5.1: first character
//     A-Z a-z 0-9, the rest out of those and "-:./_";
//   - a unit or string value is not UTF-8;
//   - a number is NaN or infinite;
//   - a resolved time is before 2^28 s (1978-07-04, which RFC 8428 cannot
//     express as an absolute time) or not before year 10000.
//
// A record that carries only base fields (and mw_seq) is allowed and yields
// no measurement.
func Resolve(p Pack, now time.Time) (Batch, error) {
	if len(p) == 0 {
		return Batch{}, errorf(ReasonInvalid, "empty pack")
	}
	r := getResolver(now, len(p))
	defer putResolver(r)
	var raw rawRecord
	for i := range p {
		p[i].raw(&raw)
		if err := r.add(&raw, i); err != nil {
			return Batch{}, err
		}
	}
	return r.finish(), nil
}

// fieldSet is a set of SenML fields, one bit each.
type fieldSet uint32

const (
	fBver fieldSet = 1 << iota
	fBn
	fBt
	fBu
	fBv
	fBs
	fN
	fU
	fV
	fVs
	fVb
	fVd
	fS
	fT
	fUt
	fSeq

	// regularFields are the fields of a record that is more than base
	// fields (and mw_seq) for the records after it.
	regularFields = fN | fU | fV | fVs | fVb | fVd | fS | fT | fUt
	valueFields   = fV | fVs | fVb | fVd
)

// fieldNames are the JSON labels, in the order of the fieldSet bits.
var fieldNames = [...]string{"bver", "bn", "bt", "bu", "bv", "bs", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut", "mw_seq"}

func (f fieldSet) name() string { return fieldNames[bits.TrailingZeros32(uint32(f))] }

// rawRecord is one record as parsed from the wire, before resolution. Its
// byte slices point into the payload and are valid only until the next
// record is parsed; the resolver copies what it keeps.
type rawRecord struct {
	// has holds the fields present; a field given as null (JSON null,
	// CBOR null or undefined) counts as absent.
	has  fieldSet
	bver int64
	seq  uint64
	bt   float64
	bv   float64
	bs   float64
	v    float64
	s    float64
	t    float64
	ut   float64
	vb   bool
	bn   []byte
	bu   []byte
	n    []byte
	u    []byte
	vs   []byte
	vd   []byte
	// vdOwned is set when vd was allocated for this record alone (decoded
	// from base64) and may be kept without a copy.
	vdOwned bool
}

// raw converts a Record to the resolver's form.
func (rec *Record) raw(r *rawRecord) {
	*r = rawRecord{}
	if rec.BaseVersion != nil {
		r.has |= fBver
		r.bver = int64(*rec.BaseVersion)
	}
	if rec.BaseName != "" {
		r.has |= fBn
		r.bn = []byte(rec.BaseName)
	}
	if rec.BaseTime != 0 {
		r.has |= fBt
		r.bt = rec.BaseTime
	}
	if rec.BaseUnit != "" {
		r.has |= fBu
		r.bu = []byte(rec.BaseUnit)
	}
	if rec.BaseValue != nil {
		r.has |= fBv
		r.bv = *rec.BaseValue
	}
	if rec.BaseSum != nil {
		r.has |= fBs
		r.bs = *rec.BaseSum
	}
	if rec.Name != "" {
		r.has |= fN
		r.n = []byte(rec.Name)
	}
	if rec.Unit != "" {
		r.has |= fU
		r.u = []byte(rec.Unit)
	}
	if rec.Value != nil {
		r.has |= fV
		r.v = *rec.Value
	}
	if rec.StringValue != nil {
		r.has |= fVs
		r.vs = []byte(*rec.StringValue)
	}
	if rec.BoolValue != nil {
		r.has |= fVb
		r.vb = *rec.BoolValue
	}
	if rec.DataValue != nil {
		r.has |= fVd
		r.vd = rec.DataValue
	}
	if rec.Sum != nil {
		r.has |= fS
		r.s = *rec.Sum
	}
	if rec.Time != 0 {
		r.has |= fT
		r.t = rec.Time
	}
	if rec.UpdateTime != 0 {
		r.has |= fUt
		r.ut = rec.UpdateTime
	}
	if rec.Seq != nil {
		r.has |= fSeq
		r.seq = *rec.Seq
	}
}

// record converts a parsed record back to a Record (for Record.UnmarshalJSON).
// setNumber stores v in the numeric field f; both readers use it.
func (r *rawRecord) setNumber(f fieldSet, v float64) {
	switch f {
	case fBt:
		r.bt = v
	case fBv:
		r.bv = v
	case fBs:
		r.bs = v
	case fV:
		r.v = v
	case fS:
		r.s = v
	case fT:
		r.t = v
	case fUt:
		r.ut = v
	}
}

func (r *rawRecord) record() Record {
	var rec Record
	if r.has&fBver != 0 {
		v := int(r.bver)
		rec.BaseVersion = &v
	}
	rec.BaseName = string(r.bn)
	rec.BaseTime = r.bt
	rec.BaseUnit = string(r.bu)
	if r.has&fBv != 0 {
		v := r.bv
		rec.BaseValue = &v
	}
	if r.has&fBs != 0 {
		v := r.bs
		rec.BaseSum = &v
	}
	rec.Name = string(r.n)
	rec.Unit = string(r.u)
	if r.has&fV != 0 {
		v := r.v
		rec.Value = &v
	}
	if r.has&fVs != 0 {
		v := string(r.vs)
		rec.StringValue = &v
	}
	if r.has&fVb != 0 {
		v := r.vb
		rec.BoolValue = &v
	}
	if r.has&fVd != 0 {
		rec.DataValue = bytes.Clone(r.vd)
		if rec.DataValue == nil {
			rec.DataValue = []byte{}
		}
	}
	if r.has&fS != 0 {
		v := r.s
		rec.Sum = &v
	}
	rec.Time = r.t
	rec.UpdateTime = r.ut
	if r.has&fSeq != 0 {
		v := r.seq
		rec.Seq = &v
	}
	return rec
}

const (
	// senmlVersion is the SenML version this package implements (RFC 8428).
	senmlVersion = 10
	// relativeTimeLimit: resolved times below 2^28 s are relative to now.
	relativeTimeLimit = 1 << 28
	// minTimeMs and maxTimeMs bound a resolved time: 2^28 s
	// (1978-07-04T21:24:16Z) and 10000-01-01T00:00:00Z.
	minTimeMs = relativeTimeLimit * 1000
	maxTimeMs = 253402300800000
)

// resolver applies RFC 8428 §4.6 to records one at a time. It interns names
// and units within a batch, so that repeated names cost no allocation.
type resolver struct {
	nowMs   int64
	version int64
	bn      string
	bu      string
	bt      float64
	bv      float64
	bs      float64
	hasBS   bool
	batch   Batch
	// names maps n to the validated bn+n, for the current bn.
	names map[string]string
	// units interns units.
	units map[string]string
}

var resolverPool = sync.Pool{New: func() any {
	return &resolver{names: make(map[string]string, 16), units: make(map[string]string, 8)}
}}

// getResolver returns a reset resolver whose batch has room for n
// measurements.
func getResolver(now time.Time, n int) *resolver {
	r := resolverPool.Get().(*resolver)
	*r = resolver{
		nowMs:   now.UnixMilli(),
		version: senmlVersion,
		names:   r.names,
		units:   r.units,
	}
	r.batch.Measurements = make([]Measurement, 0, n)
	return r
}

func putResolver(r *resolver) {
	// Clearing costs time in proportion to a map's capacity: drop maps
	// that a batch with many distinct names made large.
	if len(r.names) > 256 {
		r.names = make(map[string]string, 16)
	} else {
		clear(r.names)
	}
	if len(r.units) > 64 {
		r.units = make(map[string]string, 8)
	} else {
		clear(r.units)
	}
	r.batch = Batch{}
	r.bn, r.bu = "", ""
	resolverPool.Put(r)
}

// finish returns the batch; the resolver must not be used afterwards
// except through putResolver.
func (r *resolver) finish() Batch {
	b := r.batch
	if len(b.Measurements) == 0 {
		b.Measurements = nil
	}
	return b
}

func invalidf(format string, args ...any) *Error {
	return errorf(ReasonInvalid, format, args...)
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// add resolves record i.
func (r *resolver) add(rec *rawRecord, i int) error {
	h := rec.has
	if h == 0 {
		return invalidf("record %d has no SenML field", i)
	}
	if h&fBver != 0 {
		if rec.bver < 1 || rec.bver > senmlVersion {
			return invalidf("record %d: bver %d: unsupported SenML version, versions 1 to %d are understood", i, rec.bver, senmlVersion)
		}
		if i == 0 {
			r.version = rec.bver
		} else if rec.bver != r.version {
			return invalidf("record %d: bver %d differs from the pack's version %d; all records of a pack must have the same version", i, rec.bver, r.version)
		}
	}
	if h&fSeq != 0 {
		if i != 0 {
			return invalidf("record %d: mw_seq is allowed on the first record only", i)
		}
		r.batch.Seq, r.batch.HasSeq = rec.seq, true
	}
	if h&fBn != 0 && string(rec.bn) != r.bn {
		r.bn = string(rec.bn)
		clear(r.names)
	}
	if h&fBt != 0 {
		if !finite(rec.bt) {
			return invalidf("record %d: bt is not a finite number", i)
		}
		r.bt = rec.bt
	}
	if h&fBu != 0 {
		u, err := r.unit(rec.bu)
		if err != nil {
			return invalidf("record %d: bu: %v", i, err)
		}
		r.bu = u
	}
	if h&fBv != 0 {
		if !finite(rec.bv) {
			return invalidf("record %d: bv is not a finite number", i)
		}
		r.bv = rec.bv
	}
	if h&fBs != 0 {
		if !finite(rec.bs) {
			return invalidf("record %d: bs is not a finite number", i)
		}
		r.bs, r.hasBS = rec.bs, true
	}
	if h&regularFields == 0 {
		// Only base fields (RFC 8428 §5.1.7 has such a record): they
		// apply to the records that follow.
		return nil
	}

	values := bits.OnesCount32(uint32(h & valueFields))
	hasSum := h&fS != 0 || r.hasBS
	switch {
	case values > 1:
		return invalidf("record %d has %d value fields; at most one of v, vs, vb, vd is allowed", i, values)
	case values == 0 && !hasSum:
		return invalidf("record %d has neither a value (v, vs, vb, vd) nor a sum (s)", i)
	}

	var m Measurement
	name, err := r.name(rec.n)
	if err != nil {
		return invalidf("record %d: %v", i, err)
	}
	m.Name = name
	m.Unit = r.bu
	if h&fU != 0 {
		if m.Unit, err = r.unit(rec.u); err != nil {
			return invalidf("record %d: u: %v", i, err)
		}
	}
	t := r.bt
	if h&fT != 0 {
		if !finite(rec.t) {
			return invalidf("record %d: t is not a finite number", i)
		}
		t += rec.t
	}
	if m.Time, err = r.timeMs(t); err != nil {
		return invalidf("record %d: %v", i, err)
	}
	if h&fUt != 0 && !(rec.ut >= 0 && finite(rec.ut)) {
		return invalidf("record %d: ut is not a finite, non-negative number", i)
	}

	switch {
	case h&fV != 0:
		v := rec.v
		if r.bv != 0 { // adding 0 would turn -0 into 0
			v += r.bv
		}
		if !finite(v) {
			return invalidf("record %d: v is not a finite number", i)
		}
		m.Kind, m.Value, m.HasValue = KindFloat, v, true
	case h&fVb != 0:
		m.Kind, m.HasValue = KindBool, true
		if rec.vb {
			m.Value = 1
		}
	case h&fVs != 0:
		if !utf8.Valid(rec.vs) {
			return invalidf("record %d: vs is not UTF-8", i)
		}
		m.Kind, m.String, m.HasValue = KindString, string(rec.vs), true
	case h&fVd != 0:
		m.Kind, m.HasValue = KindData, true
		switch {
		case rec.vdOwned:
			m.Data = rec.vd
		case len(rec.vd) == 0:
			m.Data = []byte{}
		default:
			m.Data = bytes.Clone(rec.vd)
		}
	}
	if hasSum {
		s := rec.s
		if r.bs != 0 {
			s += r.bs
		}
		if !finite(s) {
			return invalidf("record %d: s is not a finite number", i)
		}
		m.HasSum, m.Sum = true, s
	}
	r.batch.Measurements = append(r.batch.Measurements, m)
	return nil
}

// name returns the validated, interned bn+n.
func (r *resolver) name(n []byte) (string, error) {
	if s, ok := r.names[string(n)]; ok {
		return s, nil
	}
	full := r.bn + string(n)
	if err := checkName(full); err != nil {
		return "", err
	}
	r.names[full[len(r.bn):]] = full
	return full, nil
}

// unit returns the interned unit u.
func (r *resolver) unit(u []byte) (string, error) {
	if s, ok := r.units[string(u)]; ok {
		return s, nil
	}
	if !utf8.Valid(u) {
		return "", errNotUTF8
	}
	s := string(u)
	r.units[s] = s
	return s, nil
}

var errNotUTF8 = errorString("not UTF-8")

type errorString string

func (e errorString) Error() string { return string(e) }

// timeMs resolves a SenML time in seconds (bt+t) to Unix milliseconds.
func (r *resolver) timeMs(t float64) (int64, error) {
	var ms float64
	if t < relativeTimeLimit {
		ms = float64(r.nowMs) + math.Round(t*1000)
	} else {
		ms = math.Round(t * 1000)
	}
	if !(ms >= minTimeMs && ms < maxTimeMs) {
		return 0, timeRangeError(t)
	}
	return int64(ms), nil
}

type timeRangeError float64

func (e timeRangeError) Error() string {
	return "time " + strconv.FormatFloat(float64(e), 'g', -1, 64) +
		" resolves outside 1978-07-04T21:24:16Z (2^28 s) .. 9999-12-31T23:59:59Z"
}

// checkName applies the name rule of RFC 8428 §4.5.1.
func checkName(s string) error {
	if s == "" {
		return errorString("empty name: a record needs n, bn or both")
	}
	if !isAlnum(s[0]) {
		return nameError{s, 0}
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '-' && c != ':' && c != '.' && c != '/' && c != '_' {
			return nameError{s, i}
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

type nameError struct {
	name string
	pos  int
}

func (e nameError) Error() string {
	rule := "A-Z a-z 0-9 - : . / _"
	if e.pos == 0 {
		rule = "A-Z a-z 0-9"
	}
	c := e.name[e.pos]
	what := strconv.QuoteRune(rune(c))
	if c >= utf8.RuneSelf {
		what = "0x" + strconv.FormatUint(uint64(c), 16) + " (not ASCII)"
	}
	return "name " + strconv.Quote(e.name) + ": byte " + strconv.Itoa(e.pos) +
		" is " + what + ", allowed there: " + rule
}
