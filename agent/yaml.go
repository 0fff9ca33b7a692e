package agent

import (
	"encoding"
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decodeStrict decodes a YAML node into v (a pointer), keeping whatever v
// already holds for keys the document does not mention. Unlike yaml's own
// decoder it names the offending key with its full path in every error
// ("uplink.keepalive: …"), refuses unknown and repeated keys, and parses
// durations itself so that a bad one says which key it was.
func decodeStrict(n *yaml.Node, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode config: need a non-nil pointer, got %T", v)
	}
	if n.Kind == 0 {
		return nil // empty document
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	return decodeValue(n, rv.Elem(), "")
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	yamlUnmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func keyPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func decodeValue(n *yaml.Node, v reflect.Value, path string) error {
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
		return decodeDuration(n, v, path)
	case reflect.PointerTo(t).Implements(yamlUnmarshalerType), reflect.PointerTo(t).Implements(textUnmarshalerType):
		if err := n.Decode(v.Addr().Interface()); err != nil {
			return fmt.Errorf("%s: %s (line %d)", path, cleanYAMLError(err), n.Line)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		return decodeStruct(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("%s: expected a list (line %d)", path, n.Line)
		}
		out := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			if err := decodeValue(c, out.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
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
		if err := decodeValue(n, p.Elem(), path); err != nil {
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

func decodeDuration(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("%s: expected a duration such as 45s or 5m, not a %s (line %d)", path, kindName(n.Kind), n.Line)
	}
	if n.Value == "0" {
		v.SetInt(0)
		return nil
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%s: invalid duration %q: write a number with a unit, such as 500ms, 45s or 5m (line %d)", path, n.Value, n.Line)
	}
	v.SetInt(int64(d))
	return nil
}

// fieldsOf maps yaml keys to struct field indexes, following ",inline" embedded structs.
func fieldsOf(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("yaml")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || !f.IsExported() {
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

func decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		what := "section"
		if path == "" {
			what = "configuration"
		}
		return fmt.Errorf("%s: expected a %s of keys, not a %s (line %d)", orTop(path), what, kindName(n.Kind), n.Line)
	}
	fields := fieldsOf(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		name := k.Value
		p := keyPath(path, name)
		if seen[name] {
			return fmt.Errorf("%s: key given twice (line %d)", p, k.Line)
		}
		seen[name] = true
		idx, ok := fields[name]
		if !ok {
			return fmt.Errorf("%s: unknown key (line %d)%s", p, k.Line, suggest(name, fields))
		}
		if err := decodeValue(val, v.FieldByIndex(idx), p); err != nil {
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

func suggest(name string, fields map[string][]int) string {
	var known []string
	for k := range fields {
		known = append(known, k)
	}
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
