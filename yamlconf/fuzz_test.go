package yamlconf_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/yamlconf"
)

// FuzzDecode: any document decodes or is refused with an error — no panic — and every key it
// reports was given on a line of the document.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"", "name: a\ncount: 3\n", "section: {wait: 5s, level: low}\n", "optional:\n",
		"items:\n  - wait: 1m\n  - level: high\n", "size: 7\nnames: [a, b]\n",
		"count: 70000\n", "nmae: typo\n", "section: [1, 2]\n", "a: &x [*x]\n", "- 1\n- 2\n",
		"{", "count: !!binary aGVsbG8=\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d doc
		lines, err := yamlconf.Decoder{}.Decode(data, &d)
		if err != nil {
			return
		}
		for path, line := range lines {
			require.NotEmpty(t, path)
			require.Positive(t, line, "key %q", path)
		}
	})
}
