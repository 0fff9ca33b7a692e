package web

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// TestGrafanaDashboard: docs/grafana/millwright-fleet.json parses, and every panel
// target's expr is valid PromQL once Grafana's variables are substituted.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("../../docs/grafana/millwright-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SchemaVersion int `json:"schemaVersion"`
		Panels        []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$device", "dev-1")
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			n++
			if _, err := parser.NewParser(parser.Options{}).ParseExpr(vars.Replace(tg.Expr)); err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, tg.Expr, err)
			}
		}
	}
	if n < 9 {
		t.Errorf("%d targets, want the 7 overview and 2 device charts", n)
	}
}
