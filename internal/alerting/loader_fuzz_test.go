package alerting

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
)

// FuzzLoadRuleFile: a rule file is the operator's to write; loading one never panics, and a
// file refused is refused with its name.
func FuzzLoadRuleFile(f *testing.F) {
	f.Add(DefaultRules())
	for _, seed := range []string{
		"groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 5m\n",
		"groups:\n  - name: g\n    rules:\n      - record: r\n        expr: sum(\n",
		"groups: [{name: g, rules: [{alert: A, expr: 'vector(1)', labels: {a: '{{ $value }}'}}]}]\n",
		"groups:\n  - name: g\n    interval: -1m\n    rules: []\n",
		"not: yaml: at: all: [",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	l := loader{parser: parser.NewParser(parser.Options{}), maxBytes: 1 << 20, limit: 100, logger: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(dir, "fuzz.rules.yml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		rgs, errs := l.Load(file, false, model.UTF8Validation)
		for _, err := range errs {
			if !strings.Contains(err.Error(), file) {
				t.Fatalf("error without the file's name: %v", err)
			}
		}
		if len(errs) == 0 && rgs == nil {
			t.Fatal("no rule groups and no error")
		}
	})
}
