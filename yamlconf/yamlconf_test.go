package yamlconf_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/yamlconf"
)

type level string

func (l *level) UnmarshalText(b []byte) error {
	if string(b) != "low" && string(b) != "high" {
		return errors.New("want low or high")
	}
	*l = level(b)
	return nil
}

type inner struct {
	Wait  time.Duration `yaml:"wait"`
	Level level         `yaml:"level"`
}

type embedded struct {
	Size int `yaml:"size"`
}

type doc struct {
	Name     string  `yaml:"name"`
	Count    uint16  `yaml:"count"`
	Items    []inner `yaml:"items"`
	Section  inner   `yaml:"section"`
	Optional *inner  `yaml:"optional"`
	Hidden   string  `yaml:"-"`
	embedded `yaml:",inline"`
	Names    []string `yaml:"names"`
}

func TestDecode(t *testing.T) {
	days := yamlconf.Decoder{
		ParseDuration: func(s string) (time.Duration, error) {
			if n, ok := strings.CutSuffix(s, "d"); ok && n == "2" {
				return 48 * time.Hour, nil
			}
			return time.ParseDuration(s)
		},
		DurationHint: "such as 45s or 2d",
	}
	cases := []struct {
		name string
		dec  yamlconf.Decoder
		yaml string
		want func(*doc)
		err  string
	}{
		{name: "empty keeps everything", yaml: ""},
		{name: "a comment only", yaml: "# nothing\n"},
		{name: "values", yaml: "name: x\ncount: 7\nsize: 3\nnames: [a, b]\n", want: func(d *doc) {
			d.Name, d.Count, d.Size, d.Names = "x", 7, 3, []string{"a", "b"}
		}},
		{name: "a section keeps keys it leaves out", yaml: "section:\n  wait: 5s\n", want: func(d *doc) { d.Section.Wait = 5 * time.Second }},
		{name: "an empty key keeps its default", yaml: "name:\n"},
		{name: "an empty optional section is on", yaml: "optional:\n", want: func(d *doc) { d.Optional = &inner{} }},
		{name: "zero duration", yaml: "section: {wait: 0}\n", want: func(d *doc) { d.Section.Wait = 0 }},
		{name: "a text unmarshaler", yaml: "section: {level: high}\n", want: func(d *doc) { d.Section.Level = "high" }},
		{name: "own durations", dec: days, yaml: "section: {wait: 2d}\n", want: func(d *doc) { d.Section.Wait = 48 * time.Hour }},

		{name: "unknown key", yaml: "name: x\nnmae: y\n", err: `nmae: unknown key (line 2); did you mean "name"?`},
		{name: "unknown nested key", yaml: "items:\n  - wiat: 5s\n", err: `items[0].wiat: unknown key (line 2); did you mean "wait"?`},
		{name: "unknown key far from any", yaml: "section:\n  colour: red\n", err: "section.colour: unknown key (line 2)"},
		{name: "a hidden field is unknown", yaml: "hidden: x\n", err: "hidden: unknown key (line 1)"},
		{name: "repeated key", yaml: "name: x\nname: y\n", err: "name: key given twice (line 2)"},
		{name: "bad duration", yaml: "section:\n  wait: soon\n", err: `section.wait: invalid duration "soon": write a number with a unit, such as 500ms, 45s or 5m (line 2)`},
		{name: "bad duration, own hint", dec: days, yaml: "section:\n  wait: 3x\n", err: `section.wait: invalid duration "3x": such as 45s or 2d (line 2)`},
		{name: "a section for a duration", yaml: "section:\n  wait: {a: 1}\n", err: "section.wait: expected a duration such as 45s or 5m, not a section (line 2)"},
		{name: "out of range", yaml: "count: 65536\n", err: `count: "65536" is not a valid uint16 (line 1)`},
		{name: "a list for a value", yaml: "name: [a]\n", err: "name: expected a single value, not a list (line 1)"},
		{name: "a value for a section", yaml: "section: 3\n", err: "section: expected a section of keys, not a single value (line 1)"},
		{name: "a value for the document", yaml: "3\n", err: "config: expected a configuration of keys, not a single value (line 1)"},
		{name: "a value for a list", yaml: "names: a\n", err: "names: expected a list (line 1)"},
		{name: "a text unmarshaler refuses", yaml: "section: {level: mid}\n", err: "section.level: want low or high (line 1)"},
		{name: "not YAML", yaml: "name: [\n", err: "line"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := doc{Name: "kept", Section: inner{Wait: time.Second}}
			got := base
			_, err := tc.dec.Decode([]byte(tc.yaml), &got)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			want := base
			if tc.want != nil {
				tc.want(&want)
			}
			require.Equal(t, want, got)
		})
	}
}

func TestDecodeLines(t *testing.T) {
	var d doc
	lines, err := yamlconf.Decoder{}.Decode([]byte("name: x\nsection:\n  wait: 5s\nsize: 2\n"), &d)
	require.NoError(t, err)
	require.Equal(t, yamlconf.Lines{"name": 1, "section": 2, "section.wait": 3, "size": 4}, lines)
}

func TestDecodeNeedsPointer(t *testing.T) {
	require.ErrorContains(t, yamlconf.Decode([]byte("name: x\n"), doc{}), "need a non-nil pointer")
}

func TestKeys(t *testing.T) {
	require.Equal(t, []string{
		"count", "items", "name", "names",
		"optional.level", "optional.wait",
		"section.level", "section.wait", "size",
	}, yamlconf.Keys(reflect.TypeFor[doc]()))
}

func TestLookup(t *testing.T) {
	d := doc{Section: inner{Wait: time.Second}}
	d.Size = 4
	for _, tc := range []struct {
		path string
		want any
	}{
		{"section.wait", time.Second},
		{"size", 4},
		{"name", ""},
	} {
		v, ok := yamlconf.Lookup(&d, tc.path)
		require.True(t, ok, tc.path)
		require.Equal(t, tc.want, v.Interface(), tc.path)
	}
	for _, path := range []string{"nothing", "section.nothing", "name.more", "optional.wait"} {
		_, ok := yamlconf.Lookup(&d, path)
		require.False(t, ok, path)
	}
	v, _ := yamlconf.Lookup(&d, "section.wait")
	v.Set(reflect.ValueOf(time.Minute))
	require.Equal(t, time.Minute, d.Section.Wait)
}
