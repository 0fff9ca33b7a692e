package alerting

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
)

// DefaultRulesFile names the built-in rule set where a rule group's file is shown (the API's
// /api/v1/rules, logs). It is no path on disk.
const DefaultRulesFile = "builtin:default.rules.yml"

//go:embed default.rules.yml
var defaultRules []byte

// DefaultRules returns the built-in rule file, to read or to copy as a start.
func DefaultRules() []byte { return append([]byte(nil), defaultRules...) }

// ErrRules is wrapped by the error of rule files that cannot be loaded: New refuses them, and
// Reload keeps the rules it had.
var ErrRules = errors.New("rule files refused")

// loader is the rules manager's GroupLoader: the built-in file from the binary, the others
// from disk within the size bound, and the default series limit on every group that sets
// none.
type loader struct {
	parser   parser.Parser
	maxBytes int
	limit    int
	logger   *slog.Logger
}

var _ rules.GroupLoader = loader{}

func (l loader) Load(file string, ignoreUnknownFields bool, scheme model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	b := defaultRules
	if file != DefaultRulesFile {
		var err error
		if b, err = readBounded(file, l.maxBytes); err != nil {
			return nil, []error{err}
		}
	}
	rgs, errs := rulefmt.Parse(b, ignoreUnknownFields, scheme, l.parser, l.logger)
	if len(errs) > 0 {
		// The YAML is decoded twice (rules, then nodes for line numbers): a syntax error
		// comes twice.
		var out []error
		seen := map[string]bool{}
		for _, err := range errs {
			if !seen[err.Error()] {
				seen[err.Error()] = true
				out = append(out, fmt.Errorf("%s: %w", file, err))
			}
		}
		return nil, out
	}
	// The built-in set records one series per device by design (the drops of the last hour):
	// it is not held to the limit meant for the operator's rules.
	for i := range rgs.Groups {
		if rgs.Groups[i].Limit == 0 && file != DefaultRulesFile {
			rgs.Groups[i].Limit = l.limit
		}
	}
	return rgs, nil
}

func (l loader) Parse(query string) (parser.Expr, error) { return l.parser.ParseExpr(query) }

// readBounded reads a file of at most max bytes.
func readBounded(file string, max int) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(b) > max {
		return nil, fmt.Errorf("%s: larger than max_rule_file_bytes (%d bytes)", file, max)
	}
	return b, nil
}

// expandFiles resolves the operator's rule files: a glob pattern names the files it matches
// (none is no error, as in Prometheus), a plain path names itself, read or refused later.
func expandFiles(builtin bool, patterns []string) ([]string, error) {
	var files []string
	if builtin {
		files = append(files, DefaultRulesFile)
	}
	seen := map[string]bool{}
	for _, p := range patterns {
		names := []string{p}
		if strings.ContainsAny(p, `*?[\`) {
			var err error
			if names, err = filepath.Glob(p); err != nil {
				return nil, fmt.Errorf("rule file pattern %q: %w", p, err)
			}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				files = append(files, n)
			}
		}
	}
	return files, nil
}

// check loads every file as the rules manager will, and counts the rules against maxRules.
func (l loader) check(files []string, maxRules int) error {
	var errs []error
	n := 0
	for _, f := range files {
		rgs, es := l.Load(f, false, model.UTF8Validation)
		errs = append(errs, es...)
		if len(es) > 0 {
			continue
		}
		for _, g := range rgs.Groups {
			n += len(g.Rules)
			for _, r := range g.Rules {
				if _, err := l.Parse(r.Expr); err != nil {
					errs = append(errs, fmt.Errorf("%s: group %q: %w", f, g.Name, err))
				}
			}
		}
	}
	if len(errs) == 0 && n > maxRules {
		errs = append(errs, fmt.Errorf("%d rules, more than max_rules (%d)", n, maxRules))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrRules, errors.Join(errs...))
	}
	return nil
}
