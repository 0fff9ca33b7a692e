package alerting_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/millwright/millwright/internal/alerting"
	"github.com/millwright/millwright/internal/tsdb"
)

// The built-in rule set on a store, evaluated once at a chosen time.
func Example() {
	dir, _ := os.MkdirTemp("", "alerting-example")
	defer os.RemoveAll(dir)
	store, err := tsdb.Open(dir, tsdb.Options{Sync: tsdb.SyncNever}, nil, nil)
	if err != nil {
		panic(err)
	}
	defer store.Close()
	m, err := alerting.New(alerting.DefaultOptions(), store, alerting.Config{Manual: true})
	if err != nil {
		panic(err)
	}
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Stop(context.Background())
	// Every group once, at a time of the caller's choosing (an empty store: nothing fires).
	m.EvalAt(context.Background(), time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	for _, g := range m.RuleGroups() {
		fmt.Println(g.File(), g.Name(), g.Interval(), len(g.Rules()), "rules")
	}
	// Output:
	// builtin:default.rules.yml millwright-anomalies 30s 1 rules
	// builtin:default.rules.yml millwright-certificates 10m0s 1 rules
	// builtin:default.rules.yml millwright-fleet 1m0s 8 rules
	// builtin:default.rules.yml millwright-group-drops 5m0s 8 rules
	// builtin:default.rules.yml millwright-ingest 1m0s 1 rules
	// builtin:default.rules.yml millwright-rollouts 30s 1 rules
}
