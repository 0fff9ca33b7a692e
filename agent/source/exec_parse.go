package source

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/millwright/millwright/protocol"
)

// lineError is a line of command output that could not be parsed.
type lineError struct {
	// Line is the 1-based line number.
	Line int
	Err  error
}

func (e lineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Errors of the line format.
var (
	errFields     = errors.New("want name, value and an optional unit")
	errValue      = errors.New("value is not a number, true, false or a quoted string")
	errNotFinite  = errors.New("value is not a finite number")
	errQuote      = errors.New("bad quoted string")
	errName       = errors.New("name breaks the SenML name rule: first A-Z a-z 0-9, then also - : . / _")
	errUnit       = errors.New("unit is not UTF-8 or contains a quote")
	errStringUTF8 = errors.New("string value is not UTF-8")
)

// maxLineErrors bounds the line errors kept for one output; the rest are
// only counted.
const maxLineErrors = 16

// parseLines parses the line format of Exec output, time-stamping every
// record with t (Unix seconds). Each line is
//
//	name value [unit]
//
// separated by spaces or tabs: name follows the SenML name rule, value is a
// number (strconv.ParseFloat syntax, finite), true or false, or a
// double-quoted string with Go escapes ("on \"auto\""); unit is an optional
// SenML unit such as Cel or %RH. Blank lines and lines whose first field
// starts with '#' are skipped, and a field starting with '#' ends the line
// (a trailing comment). A bad line is reported in errs and does not stop
// the others; nbad counts all bad lines, errs holds the first
// maxLineErrors.
func parseLines(data []byte, t float64) (recs []protocol.Record, errs []lineError, nbad int) {
	n := 0
	for line := range bytes.Lines(data) {
		n++
		rec, ok, err := parseLine(string(line), t)
		if err != nil {
			nbad++
			if len(errs) < maxLineErrors {
				errs = append(errs, lineError{Line: n, Err: err})
			}
			continue
		}
		if ok {
			recs = append(recs, rec)
		}
	}
	return recs, errs, nbad
}

// parseLine parses one line; ok is false for a blank or comment line.
func parseLine(line string, t float64) (rec protocol.Record, ok bool, err error) {
	line = strings.TrimRight(line, "\r\n")
	var fields [3]string
	var quoted [3]bool
	nf := 0
	s := line
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" || s[0] == '#' {
			break
		}
		if nf == len(fields) {
			return rec, false, errFields
		}
		if s[0] == '"' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return rec, false, errQuote
			}
			s = s[len(q):]
			if s != "" && s[0] != ' ' && s[0] != '\t' {
				return rec, false, errQuote
			}
			fields[nf], quoted[nf] = q, true
		} else {
			end := strings.IndexAny(s, " \t")
			if end < 0 {
				end = len(s)
			}
			fields[nf] = s[:end]
			s = s[end:]
		}
		nf++
	}
	switch {
	case nf == 0:
		return rec, false, nil
	case nf == 1:
		return rec, false, errFields
	}
	if quoted[0] || !checkName(fields[0]) {
		return rec, false, errName
	}
	rec.Name = fields[0]
	rec.Time = t
	if nf == 3 {
		if quoted[2] || !utf8.ValidString(fields[2]) || strings.ContainsRune(fields[2], '"') {
			return protocol.Record{}, false, errUnit
		}
		rec.Unit = fields[2]
	}
	v := fields[1]
	switch {
	case quoted[1]:
		str, err := strconv.Unquote(v)
		if err != nil {
			return protocol.Record{}, false, errQuote
		}
		if !utf8.ValidString(str) {
			return protocol.Record{}, false, errStringUTF8
		}
		rec.StringValue = &str
	case v == "true" || v == "false":
		b := v == "true"
		rec.BoolValue = &b
	default:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return protocol.Record{}, false, errValue
		}
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return protocol.Record{}, false, errNotFinite
		}
		rec.Value = &f
	}
	return rec, true, nil
}

// isSenML reports whether output is a SenML JSON pack: its first byte
// other than white space is '['.
func isSenML(out []byte) bool {
	s := bytes.TrimLeft(out, " \t\r\n")
	return len(s) > 0 && s[0] == '['
}
