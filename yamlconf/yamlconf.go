// Package yamlconf decodes configuration files strictly, for the device agent and the server
// alike, so that both fail the same way: keys a document leaves out keep what the target
// already holds (start from the defaults), unknown and repeated keys are errors, and every
// error names the key by its full path and line ("uplink.keepalive: … (line 12)").
//
// It decodes into yaml's node tree and walks it itself instead of using the yaml package's
// own decoder, whose errors name neither the key nor, for unknown keys, anything but a line.
package yamlconf

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Decoder decodes YAML documents into structs with yaml tags. The zero Decoder reads
// durations as Go durations ("500ms", "45s", "5m").
type Decoder struct {
	// ParseDuration reads a time.Duration value. Nil means time.ParseDuration.
	ParseDuration func(string) (time.Duration, error)
	// DurationHint completes the error for a duration ParseDuration refuses ("write a number
	// with a unit, such as …"). Empty means the hint for Go durations.
	DurationHint string
}

// Lines maps each key a document gave, by its dotted path ("mqtt.listen"), to its line.
type Lines map[string]int

// Decode decodes data into v, a non-nil pointer, with the zero Decoder.
func Decode(data []byte, v any) error {
	_, err := Decoder{}.Decode(data, v)
	return err
}

// Decode decodes the YAML document in data into v, a non-nil pointer, and returns the line
// of every key it set. Keys the document leaves out keep what v holds; "key:" with no value
// keeps it too (and turns an optional section, a pointer, on with its defaults).
func (d Decoder) Decode(data []byte, v any) (Lines, error) {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s", cleanYAMLError(err))
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, fmt.Errorf("decode config: need a non-nil pointer, got %T", v)
	}
	w := walker{Decoder: d, lines: Lines{}}
	n := &doc
	if n.Kind == 0 {
		return w.lines, nil // empty document
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return w.lines, nil
		}
		n = n.Content[0]
	}
	if err := w.value(n, rv.Elem(), ""); err != nil {
		return nil, err
	}
	return w.lines, nil
}

// Fields maps the yaml keys of struct type t to its field indexes, following ",inline"
// embedded structs. A field without a tag is keyed by its name in lower case; "-" and
// unexported fields (but for inlined embedded structs) have no key.
func Fields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() && !(f.Anonymous && opts == "inline") {
				continue
			}
			idx := append(append([]int(nil), prefix...), i)
			if opts == "inline" {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			out[name] = idx
		}
	}
	walk(t, nil)
	return out
}

// Keys lists, sorted, the dotted paths of the keys of struct type t that hold a value: a
// section (a struct, or a pointer to one) is followed into its keys, a duration or a type
// that decodes itself (yaml.Unmarshaler, encoding.TextUnmarshaler) is a value, and so are
// lists and maps.
func Keys(t reflect.Type) []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for name, idx := range Fields(t) {
			ft := t.FieldByIndex(idx).Type
			k := Path(prefix, name)
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() != reflect.Struct || decodesItself(ft) {
				out = append(out, k)
				continue
			}
			walk(ft, k)
		}
	}
	walk(t, "")
	sort.Strings(out)
	return out
}

// Lookup returns the field of the struct v points to that the dotted key path names, and
// whether there is one. Sections held by pointer are followed only when set.
func Lookup(v any, path string) (reflect.Value, bool) {
	rv := reflect.ValueOf(v)
	for key := range strings.SplitSeq(path, ".") {
		for rv.Kind() == reflect.Pointer {
			if rv.IsNil() {
				return reflect.Value{}, false
			}
			rv = rv.Elem()
		}
		if rv.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		idx, ok := Fields(rv.Type())[key]
		if !ok {
			return reflect.Value{}, false
		}
		rv = rv.FieldByIndex(idx)
	}
	return rv, true
}

// Path joins a parent key path and a key.
func Path(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	yamlUnmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func decodesItself(t reflect.Type) bool {
	return t == durationType || reflect.PointerTo(t).Implements(yamlUnmarshalerType) ||
		reflect.PointerTo(t).Implements(textUnmarshalerType)
}

type walker struct {
	Decoder
	lines Lines
}

func (w walker) value(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	t := v.Type()
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// "key:" with nothing after it keeps the default; for an optional
		// section (a pointer) it turns the section on with its defaults.
		if t.Kind() == reflect.Pointer && v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		return nil
	}
	switch {
	case t == durationType:
		return w.duration(n, v, path)
	case decodesItself(t):
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %s (line %d)", path, cleanYAMLError(err), n.Line)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		return w.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: expected a list (line %d)", path, n.Line)
		}
		out := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := w.value(c, out.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(out)
		return nil
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if !v.IsNil() {
			p.Elem().Set(v.Elem())
		}
		if err := w.value(n, p.Elem(), path); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: expected a single value, not a %s (line %d)", path, kindName(n.Kind), n.Line)
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		return fmt.Errorf("%s: %q is not a valid %s (line %d)", path, n.Value, t.Kind(), n.Line)
	}
	return nil
}

func (w walker) duration(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: expected a duration such as 45s or 5m, not a %s (line %d)", path, kindName(n.Kind), n.Line)
	}
	if n.Value == "0" {
		v.SetInt(0)
		return nil
	}
	parse, hint := w.ParseDuration, w.DurationHint
	if parse == nil {
		parse = time.ParseDuration
	}
	if hint == "" {
		hint = "write a number with a unit, such as 500ms, 45s or 5m"
	}
	d, err := parse(n.Value)
	if err != nil {
		return fmt.Errorf("%s: invalid duration %q: %s (line %d)", path, n.Value, hint, n.Line)
	}
	v.SetInt(int64(d))
	return nil
}

func (w walker) structure(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		what := "section"
		if path == "" {
			what = "configuration"
		}
		return fmt.Errorf("%s: expected a %s of keys, not a %s (line %d)", orTop(path), what, kindName(n.Kind), n.Line)
	}
	fields := Fields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		p := Path(path, name)
		if seen[name] {
			return fmt.Errorf("%s: key given twice (line %d)", p, k.Line)
		}
		seen[name] = true
		idx, ok := fields[name]
		if !ok {
			return fmt.Errorf("%s: unknown key (line %d)%s", p, k.Line, suggest(name, fields))
		}
		w.lines[p] = k.Line
		if err := w.value(val, v.FieldByIndex(idx), p); err != nil {
			return err
		}
	}
	return nil
}

func orTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

// suggest names the known key nearest to an unknown one, if one is within two edits.
func suggest(name string, fields map[string][]int) string {
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	sort.Strings(known) // the same suggestion every time when two are equally near
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("; did you mean %q?", best)
	}
	return ""
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "section"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "single value"
	}
	return "document"
}

// cleanYAMLError strips yaml's "yaml: unmarshal errors:\n  line N: " wrapping.
func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimSpace(s)
	if _, rest, ok := strings.Cut(s, ": "); ok && strings.HasPrefix(s, "line ") {
		s = rest
	}
	return s
}
