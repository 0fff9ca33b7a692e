package alerting

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/tsdb"
)

func TestDefaultOptions(t *testing.T) {
	o := DefaultOptions()
	require.NoError(t, o.Validate())
	require.True(t, o.DefaultRules)
	require.Equal(t, 30*time.Second, o.EvaluationInterval)
	require.Equal(t, 1<<20, o.MaxRuleFileBytes)
	require.Equal(t, 1000, o.MaxRules)
	require.Equal(t, 10_000, o.MaxSeriesPerRule)
	require.Equal(t, 10_000, o.QueueCapacity)
	require.Equal(t, 10*time.Second, o.NotifyTimeout)
	require.Equal(t, 5, o.WebhookRetries)
	require.Equal(t, 4*time.Hour, o.WebhookRepeatInterval)
	require.Equal(t, time.Minute, o.ResendDelay)
}

func TestOptionsValidate(t *testing.T) {
	cases := []struct {
		change func(*Options)
		err    string
	}{
		{func(o *Options) { o.EvaluationInterval = 0 }, "invalid evaluation_interval 0s: must be positive"},
		{func(o *Options) { o.MaxRuleFileBytes = 0 }, "invalid max_rule_file_bytes 0: must be positive"},
		{func(o *Options) { o.MaxRules = -1 }, "invalid max_rules -1: must be positive"},
		{func(o *Options) { o.MaxSeriesPerRule = 0 }, "invalid max_series_per_rule 0: must be positive"},
		{func(o *Options) { o.QueueCapacity = 0 }, "invalid queue_capacity 0: must be positive"},
		{func(o *Options) { o.NotifyTimeout = -time.Second }, "invalid notify_timeout -1s: must be positive"},
		{func(o *Options) { o.WebhookRetries = -1 }, "invalid webhook_retries -1: must be zero or positive"},
		{func(o *Options) { o.WebhookRepeatInterval = 0 }, "invalid webhook_repeat_interval 0s: must be positive"},
		{func(o *Options) { o.ResendDelay = 0 }, "invalid resend_delay 0s: must be positive"},
		{func(o *Options) { o.Alertmanagers = []string{"am:9093"} }, `invalid alertmanagers "am:9093": want an absolute http:// or https:// URL`},
		{func(o *Options) { o.Webhooks = []string{"ftp://x/y"} }, `invalid webhooks "ftp://x/y": want an absolute http:// or https:// URL`},
		{func(o *Options) { o.ExternalURL = "http://a b" }, "invalid external_url"},
		{func(o *Options) { o.WebhookRetries = 0 }, ""},
		{func(o *Options) { o.Webhooks = []string{"https://hooks.example.com/x?token=1"} }, ""},
	}
	for _, tc := range cases {
		o := DefaultOptions()
		tc.change(&o)
		err := o.Validate()
		if tc.err == "" {
			require.NoError(t, err)
			continue
		}
		require.ErrorContains(t, err, tc.err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

const twoRules = `groups:
  - name: g
    rules:
      - record: x:sum
        expr: sum(x)
      - alert: XHigh
        expr: x > 1
`

// TestRuleFileBounds: a file over max_rule_file_bytes, more rules than max_rules, and a file
// that does not parse are refused at start, with the file and, where the parser tells it,
// the line.
func TestRuleFileBounds(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yml", twoRules)
	s := openStore(t)
	cases := []struct {
		change func(*Options)
		err    string
	}{
		{func(o *Options) { o.MaxRuleFileBytes = len(twoRules) - 1 }, good + ": larger than max_rule_file_bytes (" + itoa(len(twoRules)-1) + " bytes)"},
		{func(o *Options) { o.MaxRules = 1 }, "2 rules, more than max_rules (1)"},
		{func(o *Options) { o.DefaultRules = true; o.MaxRules = 3 }, "rules, more than max_rules (3)"},
		{func(o *Options) {
			o.RuleFiles = []string{writeFile(t, dir, "bad-expr.yml", "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(x\n")}
		}, "bad-expr.yml: 5:15: group \"g\", rule 1, \"A\": could not parse expression"},
		{func(o *Options) {
			o.RuleFiles = []string{writeFile(t, dir, "bad-yaml.yml", "groups:\n  - name: g\n   rules: []\n")}
		}, "bad-yaml.yml: yaml: line 1: did not find expected '-' indicator"},
		{func(o *Options) { o.RuleFiles = []string{filepath.Join(dir, "missing.yml")} }, "missing.yml: no such file or directory"},
		{func(o *Options) { o.RuleFiles = []string{filepath.Join(dir, "*.none")} }, ""},
	}
	for _, tc := range cases {
		o := DefaultOptions()
		o.DefaultRules = false
		o.RuleFiles = []string{good}
		tc.change(&o)
		_, err := New(o, s, Config{})
		if tc.err == "" {
			require.NoError(t, err)
			continue
		}
		require.ErrorIs(t, err, ErrRules)
		require.ErrorContains(t, err, tc.err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestMaxSeriesPerRule: a rule that would write more series than the limit fails (its health
// "err"), as a Prometheus group limit does; a group's own limit wins.
func TestMaxSeriesPerRule(t *testing.T) {
	s := openStore(t)
	for i := range 3 {
		writeSeries(t, s, labels.FromStrings(labels.MetricName, "x", "i", itoa(i)), t0, t0.Add(time.Minute), time.Minute, 2)
	}
	dir := t.TempDir()
	o := DefaultOptions()
	o.DefaultRules = false
	o.MaxSeriesPerRule = 2
	o.RuleFiles = []string{writeFile(t, dir, "r.yml", twoRules), writeFile(t, dir, "own.yml", "groups:\n  - name: own\n    limit: 5\n    rules:\n      - alert: XHigh\n        expr: x > 1\n")}
	m := newManual(t, s, o, Config{})
	m.EvalAt(context.Background(), t0.Add(time.Minute))
	for _, g := range m.RuleGroups() {
		for _, r := range g.Rules() {
			switch g.Name() {
			case "g":
				if r.Name() == "XHigh" {
					require.ErrorContains(t, r.LastError(), "exceeded limit of 2 with 3 alerts")
				} else {
					require.NoError(t, r.LastError())
				}
			case "own":
				require.NoError(t, r.LastError())
			}
		}
	}
}

// TestReload: a good change is taken; a bad file is refused with its file and line, and the
// rules running stay.
func TestReload(t *testing.T) {
	s := openStore(t)
	dir := t.TempDir()
	f := writeFile(t, dir, "r.yml", twoRules)
	o := DefaultOptions()
	o.DefaultRules = false
	o.RuleFiles = []string{filepath.Join(dir, "*.yml")}
	m := newManual(t, s, o, Config{})
	names := func() []string {
		var n []string
		for _, g := range m.RuleGroups() {
			for _, r := range g.Rules() {
				n = append(n, g.Name()+"/"+r.Name())
			}
		}
		return n
	}
	require.Equal(t, []string{"g/x:sum", "g/XHigh"}, names())

	writeFile(t, dir, "r.yml", twoRules+"      - alert: XLow\n        expr: x < 1\n")
	writeFile(t, dir, "more.yml", "groups:\n  - name: h\n    rules:\n      - record: y:sum\n        expr: sum(y)\n")
	require.NoError(t, m.Reload())
	require.Equal(t, []string{"h/y:sum", "g/x:sum", "g/XHigh", "g/XLow"}, names())

	writeFile(t, dir, "r.yml", "groups:\n  - name: g\n    rules:\n      - alert: XHigh\n        expr: x >\n")
	err := m.Reload()
	require.ErrorIs(t, err, ErrRules)
	require.ErrorContains(t, err, f+": 5:15: group \"g\", rule 1, \"XHigh\": could not parse expression")
	require.Equal(t, []string{"h/y:sum", "g/x:sum", "g/XHigh", "g/XLow"}, names())
}

// TestRuleQueryBounded: a rule's query is bounded by the store's query limits, as an API
// query is: one that would load too many samples fails (health "err"), the others run.
func TestRuleQueryBounded(t *testing.T) {
	so := tsdb.DefaultOptions()
	so.Sync, so.QueryMaxSamples = tsdb.SyncNever, 100
	s, err := tsdb.Open(t.TempDir(), so, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	writeSeries(t, s, labels.FromStrings(labels.MetricName, "x"), t0, t0.Add(time.Hour), 10*time.Second, 1)
	o := DefaultOptions()
	o.DefaultRules = false
	o.RuleFiles = []string{writeFile(t, t.TempDir(), "r.yml", "groups:\n  - name: g\n    rules:\n      - record: x:hour\n        expr: count_over_time(x[1h])\n      - record: x:now\n        expr: x\n")}
	m := newManual(t, s, o, Config{})
	m.EvalAt(context.Background(), t0.Add(time.Hour))
	rs := m.RuleGroups()[0].Rules()
	require.ErrorContains(t, rs[0].LastError(), "query processing would load too many samples into memory")
	require.NoError(t, rs[1].LastError())
}
