package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// JSON decoding runs in two passes, like CBOR: json.Valid first (any
// failure is ReasonMalformed), then a reader walks the pack and hands each
// record to the resolver without reflection (any failure is ReasonInvalid).
//
// Choices, with RFC 8428 §5:
//   - Unknown members are ignored with their values, unless their name
//     ends in '_' (must understand): then the pack is refused.
//   - A repeated SenML member in a record refuses the pack (RFC 8259 leaves
//     duplicate names undefined; we do not guess which one wins).
//   - null counts as an absent member.
//   - bver and mw_seq must be written as integers ("5", not "5.0").
//   - vd is unpadded base64url (RFC 4648 §5), strictly.

var b64 = base64.RawURLEncoding.Strict()

func decodeJSON(data []byte, now time.Time, maxRecords int) (Batch, error) {
	if !json.Valid(data) {
		// Unmarshal reports where the syntax breaks; it allocates, but
		// only on this error path.
		err := json.Unmarshal(data, &struct{}{})
		if err == nil {
			err = errors.New("invalid")
		}
		return Batch{}, &Error{Reason: ReasonMalformed, Err: fmt.Errorf("json: %w", err)}
	}
	p := jsonReader{b: data}
	p.ws()
	if p.peek() != '[' {
		return Batch{}, errorf(ReasonMalformed, "a SenML pack must be a JSON array")
	}
	p.off++
	p.ws()
	if p.peek() == ']' {
		return Batch{}, invalidf("empty pack")
	}
	// An element takes at least 2 bytes ("0,"): count only when the
	// payload could hold more elements than allowed.
	capacity := len(data)/32 + 1
	if len(data) > 2*maxRecords {
		n := p.countElements()
		if n > maxRecords {
			return Batch{}, errorf(ReasonTooManyRecords, "the pack has %d records, the limit is %d", n, maxRecords)
		}
		capacity = n
	}
	r := getResolver(now, min(capacity, maxRecords))
	defer putResolver(r)
	var rec rawRecord
	for i := 0; ; i++ {
		p.ws()
		if p.peek() != '{' {
			return Batch{}, invalidf("record %d is not a JSON object", i)
		}
		if err := p.record(&rec, i); err != nil {
			return Batch{}, err
		}
		if err := r.add(&rec, i); err != nil {
			return Batch{}, err
		}
		p.ws()
		if p.peek() != ',' {
			break
		}
		p.off++
	}
	return r.finish(), nil
}

// jsonReader reads JSON that json.Valid accepted. It still checks bounds,
// so that it cannot fail worse than with an error on other input.
type jsonReader struct {
	b   []byte
	off int
}

var errJSONTruncated = errorString("truncated JSON")

func (p *jsonReader) ws() {
	for p.off < len(p.b) {
		switch p.b[p.off] {
		case ' ', '\t', '\n', '\r':
			p.off++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end.
func (p *jsonReader) peek() byte {
	if p.off < len(p.b) {
		return p.b[p.off]
	}
	return 0
}

// str reads a string and returns its content, unescaped.
func (p *jsonReader) str() ([]byte, error) {
	if p.peek() != '"' {
		return nil, errorString("not a string")
	}
	start := p.off + 1
	end := bytes.IndexByte(p.b[start:], '"')
	if end < 0 {
		return nil, errJSONTruncated
	}
	end += start
	if bytes.IndexByte(p.b[start:end], '\\') < 0 {
		p.off = end + 1
		return p.b[start:end], nil
	}
	// Escapes: find the real end, then let encoding/json unescape.
	for end = start; end < len(p.b); end++ {
		if c := p.b[end]; c == '\\' {
			end++
		} else if c == '"' {
			break
		}
	}
	if end >= len(p.b) {
		return nil, errJSONTruncated
	}
	var s string
	if err := json.Unmarshal(p.b[start-1:end+1], &s); err != nil {
		return nil, err
	}
	p.off = end + 1
	return []byte(s), nil
}

func isJSONDelim(c byte) bool {
	switch c {
	case ',', '}', ']', ':', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// token reads a number or literal.
func (p *jsonReader) token() []byte {
	start := p.off
	for p.off < len(p.b) && !isJSONDelim(p.b[p.off]) {
		p.off++
	}
	return p.b[start:p.off]
}

// skipValue skips one value.
func (p *jsonReader) skipValue() error {
	switch p.peek() {
	case '"':
		_, err := p.skipString()
		return err
	case '{', '[':
		depth := 0
		for p.off < len(p.b) {
			switch p.b[p.off] {
			case '"':
				if _, err := p.skipString(); err != nil {
					return err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					p.off++
					return nil
				}
			}
			p.off++
		}
		return errJSONTruncated
	case 0:
		return errJSONTruncated
	}
	p.token()
	return nil
}

// skipString skips a string without unescaping it.
func (p *jsonReader) skipString() (int, error) {
	for i := p.off + 1; i < len(p.b); i++ {
		switch p.b[i] {
		case '\\':
			i++
		case '"':
			p.off = i + 1
			return i, nil
		}
	}
	return 0, errJSONTruncated
}

// countElements counts the elements of the array whose '[' was just read,
// without moving.
func (p *jsonReader) countElements() int {
	q := *p
	n := 0
	for {
		q.ws()
		if q.peek() == ']' || q.peek() == 0 {
			return n
		}
		n++
		if q.skipValue() != nil {
			return n
		}
		q.ws()
		if q.peek() != ',' {
			return n
		}
		q.off++
	}
}

// jsonField returns the field with JSON label key, or 0.
func jsonField(key []byte) fieldSet {
	switch string(key) {
	case "bver":
		return fBver
	case "bn":
		return fBn
	case "bt":
		return fBt
	case "bu":
		return fBu
	case "bv":
		return fBv
	case "bs":
		return fBs
	case "n":
		return fN
	case "u":
		return fU
	case "v":
		return fV
	case "vs":
		return fVs
	case "vb":
		return fVb
	case "vd":
		return fVd
	case "s":
		return fS
	case "t":
		return fT
	case "ut":
		return fUt
	case "mw_seq":
		return fSeq
	}
	return 0
}

// record reads the object at p.off as record i.
func (p *jsonReader) record(rec *rawRecord, i int) error {
	*rec = rawRecord{}
	p.off++ // '{'
	p.ws()
	if p.peek() == '}' {
		p.off++
		return nil
	}
	var seen fieldSet
	for {
		p.ws()
		key, err := p.str()
		if err != nil {
			return &Error{Reason: ReasonMalformed, Err: err}
		}
		p.ws()
		if p.peek() != ':' {
			return errorf(ReasonMalformed, "record %d: missing ':'", i)
		}
		p.off++
		p.ws()
		f := jsonField(key)
		switch {
		case f == 0:
			if len(key) > 0 && key[len(key)-1] == '_' {
				return mustUnderstand(key, i)
			}
			if err := p.skipValue(); err != nil {
				return &Error{Reason: ReasonMalformed, Err: err}
			}
		case seen&f != 0:
			return invalidf("record %d repeats field %s", i, f.name())
		default:
			seen |= f
			if err := p.value(rec, f); err != nil {
				return invalidf("record %d: field %s: %v", i, f.name(), err)
			}
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.off++
		case '}':
			p.off++
			return nil
		default:
			return errorf(ReasonMalformed, "record %d: missing ',' or '}'", i)
		}
	}
}

// value reads the value of field f into rec.
func (p *jsonReader) value(rec *rawRecord, f fieldSet) error {
	switch c := p.peek(); {
	case c == 'n':
		p.token() // null: absent
		return nil
	case f == fBver || f == fSeq:
		tok := p.token()
		if f == fSeq {
			v, err := strconv.ParseUint(string(tok), 10, 64)
			if err != nil {
				return errorString("not an unsigned 64-bit integer")
			}
			rec.seq = v
		} else {
			v, err := strconv.ParseInt(string(tok), 10, 32)
			if err != nil {
				return errorString("not an integer")
			}
			rec.bver = v
		}
	case f == fVb:
		switch string(p.token()) {
		case "true":
			rec.vb = true
		case "false":
		default:
			return errorString("not a boolean")
		}
	case f&(fBn|fBu|fN|fU|fVs|fVd) != 0:
		s, err := p.str()
		if err != nil {
			return errorString("not a string")
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
		case fVd:
			vd := make([]byte, b64.DecodedLen(len(s)))
			n, err := b64.Decode(vd, s)
			if err != nil {
				return errorString("not unpadded base64url (RFC 4648 §5)")
			}
			rec.vd, rec.vdOwned = vd[:n], true
		}
	default:
		if c != '-' && (c < '0' || c > '9') {
			return errNotNumber
		}
		v, err := strconv.ParseFloat(string(p.token()), 64)
		if err != nil {
			return errorString("number out of range")
		}
		rec.setNumber(f, v)
	}
	rec.has |= f
	return nil
}

// MarshalJSON encodes r as an RFC 8428 JSON record, DataValue as unpadded
// base64url. It fails on numbers that are NaN or infinite and on strings
// that are not UTF-8.
func (r Record) MarshalJSON() ([]byte, error) {
	if err := r.check(0); err != nil {
		return nil, err
	}
	return appendJSONRecord(nil, &r), nil
}

// UnmarshalJSON decodes an RFC 8428 JSON record: unknown members are
// ignored unless their name ends in '_', repeated members are refused,
// strings must be UTF-8, DataValue must be unpadded base64url. It does not
// resolve the record (see Resolve).
func (r *Record) UnmarshalJSON(data []byte) error {
	if !json.Valid(data) {
		return errorf(ReasonMalformed, "invalid JSON")
	}
	p := jsonReader{b: data}
	p.ws()
	if p.peek() != '{' {
		return invalidf("a SenML record must be a JSON object")
	}
	var raw rawRecord
	if err := p.record(&raw, 0); err != nil {
		return err
	}
	for _, s := range [...][]byte{raw.bn, raw.bu, raw.n, raw.u, raw.vs} {
		if !utf8.Valid(s) {
			return invalidf("a SenML record's strings must be UTF-8")
		}
	}
	*r = raw.record()
	return nil
}

// appendJSONPack appends p as an RFC 8428 JSON pack. The records must have
// passed Record.check.
func appendJSONPack(b []byte, p Pack) []byte {
	b = append(b, '[')
	for i := range p {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONRecord(b, &p[i])
	}
	return append(b, ']')
}

func appendJSONRecord(b []byte, r *Record) []byte {
	b = append(b, '{')
	start := len(b)
	key := func(b []byte, k string) []byte {
		if len(b) > start {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		return append(b, '"', ':')
	}
	if r.Seq != nil {
		b = strconv.AppendUint(key(b, "mw_seq"), *r.Seq, 10)
	}
	if r.BaseVersion != nil {
		b = strconv.AppendInt(key(b, "bver"), int64(*r.BaseVersion), 10)
	}
	if r.BaseName != "" {
		b = appendJSONString(key(b, "bn"), r.BaseName)
	}
	if r.BaseTime != 0 {
		b = appendJSONNumber(key(b, "bt"), r.BaseTime)
	}
	if r.BaseUnit != "" {
		b = appendJSONString(key(b, "bu"), r.BaseUnit)
	}
	if r.BaseValue != nil {
		b = appendJSONNumber(key(b, "bv"), *r.BaseValue)
	}
	if r.BaseSum != nil {
		b = appendJSONNumber(key(b, "bs"), *r.BaseSum)
	}
	if r.Name != "" {
		b = appendJSONString(key(b, "n"), r.Name)
	}
	if r.Unit != "" {
		b = appendJSONString(key(b, "u"), r.Unit)
	}
	if r.Value != nil {
		b = appendJSONNumber(key(b, "v"), *r.Value)
	}
	if r.StringValue != nil {
		b = appendJSONString(key(b, "vs"), *r.StringValue)
	}
	if r.BoolValue != nil {
		b = strconv.AppendBool(key(b, "vb"), *r.BoolValue)
	}
	if r.Sum != nil {
		b = appendJSONNumber(key(b, "s"), *r.Sum)
	}
	if r.Time != 0 {
		b = appendJSONNumber(key(b, "t"), r.Time)
	}
	if r.UpdateTime != 0 {
		b = appendJSONNumber(key(b, "ut"), r.UpdateTime)
	}
	if r.DataValue != nil {
		b = key(b, "vd")
		b = append(b, '"')
		b = b64.AppendEncode(b, r.DataValue)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendJSONNumber formats f as encoding/json does (shortest repr, an
// exponent with a lower-case 'e' only for very small or large numbers).
// f must be finite.
func appendJSONNumber(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s, which must be UTF-8, as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// check reports fields of record i that cannot be encoded: numbers that
// are NaN or infinite, strings that are not UTF-8.
func (r *Record) check(i int) error {
	nums := [...]struct {
		name string
		v    *float64
	}{
		{"bt", &r.BaseTime}, {"bv", r.BaseValue}, {"bs", r.BaseSum},
		{"v", r.Value}, {"s", r.Sum}, {"t", &r.Time}, {"ut", &r.UpdateTime},
	}
	for _, n := range nums {
		if n.v != nil && !finite(*n.v) {
			return invalidf("record %d: %s is not a finite number", i, n.name)
		}
	}
	strs := [...]struct {
		name string
		s    string
	}{
		{"bn", r.BaseName}, {"bu", r.BaseUnit}, {"n", r.Name}, {"u", r.Unit},
	}
	for _, s := range strs {
		if !utf8.ValidString(s.s) {
			return invalidf("record %d: %s is not UTF-8", i, s.name)
		}
	}
	if r.StringValue != nil && !utf8.ValidString(*r.StringValue) {
		return invalidf("record %d: vs is not UTF-8", i)
	}
	return nil
}

// fieldCount returns the number of fields appendCBORRecord writes.
func (r *Record) fieldCount() int {
	n := 0
	for _, present := range [...]bool{
		r.BaseVersion != nil, r.BaseName != "", r.BaseTime != 0, r.BaseUnit != "",
		r.BaseValue != nil, r.BaseSum != nil, r.Name != "", r.Unit != "",
		r.Value != nil, r.StringValue != nil, r.BoolValue != nil, r.DataValue != nil,
		r.Sum != nil, r.Time != 0, r.UpdateTime != 0, r.Seq != nil,
	} {
		if present {
			n++
		}
	}
	return n
}
