package source

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/millwright/millwright/protocol"
)

// FuzzParseLines checks the line parser of Exec output: it never panics,
// every record it returns is valid SenML with one value, bad lines are
// numbered within the input, and a good record printed back in the line
// format parses to itself.
func FuzzParseLines(f *testing.F) {
	var all bytes.Buffer
	for _, tc := range parseLineCases {
		f.Add([]byte(tc.line))
		all.WriteString(tc.line + "\n")
	}
	f.Add(all.Bytes())
	f.Add([]byte("a 1\r\nb 2\r\n\r\n# c\n"))
	const t = 1.75e9
	f.Fuzz(func(tt *testing.T, data []byte) {
		recs, errs, nbad := parseLines(data, t)
		lines := bytes.Count(data, []byte{'\n'}) + 1
		if len(recs)+nbad > lines {
			tt.Fatalf("%d records and %d bad lines from %d lines", len(recs), nbad, lines)
		}
		if len(errs) > nbad || len(errs) > maxLineErrors || (nbad > 0 && len(errs) == 0) {
			tt.Fatalf("%d errors kept of %d", len(errs), nbad)
		}
		for _, e := range errs {
			if e.Line < 1 || e.Line > lines {
				tt.Fatalf("error on line %d of %d", e.Line, lines)
			}
		}
		if len(recs) > 0 {
			if _, err := protocol.Resolve(protocol.Pack(recs), epoch); err != nil {
				tt.Fatalf("records do not resolve: %v", err)
			}
		}
		for _, r := range recs {
			line := formatLine(r)
			back, ok, err := parseLine(line, t)
			if err != nil || !ok {
				tt.Fatalf("%q: printed as %q, which does not parse: %v", data, line, err)
			}
			if !sameRecord(r, back) {
				tt.Fatalf("%q: printed as %q, which parses to %+v, not %+v", data, line, back, r)
			}
		}
	})
}

// formatLine prints r in the line format.
func formatLine(r protocol.Record) string {
	var b strings.Builder
	b.WriteString(r.Name + " ")
	switch {
	case r.Value != nil:
		b.WriteString(strconv.FormatFloat(*r.Value, 'g', -1, 64))
	case r.BoolValue != nil:
		b.WriteString(strconv.FormatBool(*r.BoolValue))
	case r.StringValue != nil:
		b.WriteString(strconv.Quote(*r.StringValue))
	}
	if r.Unit != "" {
		b.WriteString(" " + r.Unit)
	}
	return b.String()
}

func sameRecord(a, b protocol.Record) bool {
	eq := func(x, y bool) bool { return x == y }
	switch {
	case a.Name != b.Name, a.Unit != b.Unit, a.Time != b.Time:
		return false
	case !eq(a.Value == nil, b.Value == nil), !eq(a.BoolValue == nil, b.BoolValue == nil), !eq(a.StringValue == nil, b.StringValue == nil):
		return false
	case a.Value != nil && *a.Value != *b.Value:
		return false
	case a.BoolValue != nil && *a.BoolValue != *b.BoolValue:
		return false
	case a.StringValue != nil && *a.StringValue != *b.StringValue:
		return false
	}
	return true
}
