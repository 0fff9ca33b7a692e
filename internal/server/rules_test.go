package server_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/alerting"
	"github.com/millwright/millwright/internal/server"
)

type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		File  string `json:"file"`
		Rules []struct {
			Name string `json:"name"`
		} `json:"rules"`
	} `json:"groups"`
}

// TestServerRules: the server evaluates the built-in rules and the operator's rule files, the
// API lists them, and ReloadRules takes a change, or refuses a bad file and keeps the rules.
func TestServerRules(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plant.yml")
	require.NoError(t, os.WriteFile(file, []byte("groups:\n  - name: plant\n    rules:\n      - alert: OvenHot\n        expr: oven_celsius > 250\n"), 0o644))
	s := startServer(t, func(o *server.Options) { o.Alerting.RuleFiles = []string{file} })

	groups := func() map[string]string {
		var rg ruleGroups
		require.Equal(t, http.StatusOK, apiDo(t, s.Server, "GET", "/api/v1/rules", nil, &rg))
		out := map[string]string{}
		for _, g := range rg.Groups {
			out[g.Name] = g.File
		}
		return out
	}
	got := groups()
	require.Equal(t, alerting.DefaultRulesFile, got["millwright-fleet"])
	require.Equal(t, file, got["plant"])

	require.NoError(t, os.WriteFile(file, []byte("groups:\n  - name: plant2\n    rules:\n      - alert: OvenHot\n        expr: oven_celsius > 260\n"), 0o644))
	require.NoError(t, s.ReloadRules())
	got = groups()
	require.Contains(t, got, "plant2")
	require.NotContains(t, got, "plant")

	require.NoError(t, os.WriteFile(file, []byte("groups:\n  - name: plant3\n    rules:\n      - alert: OvenHot\n        expr: oven_celsius >\n"), 0o644))
	err := s.ReloadRules()
	require.ErrorIs(t, err, alerting.ErrRules)
	require.ErrorContains(t, err, file+": 5:15:")
	require.Contains(t, groups(), "plant2")

	var alerts struct {
		Alerts []any `json:"alerts"`
	}
	require.Equal(t, http.StatusOK, apiDo(t, s.Server, "GET", "/api/v1/alerts", nil, &alerts))
	require.NotNil(t, alerts.Alerts)
}

// TestServerRefusesBadRules: a rule file that does not load is refused at start.
func TestServerRefusesBadRules(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yml")
	require.NoError(t, os.WriteFile(file, []byte("groups:\n  - name: g\n    rules:\n      - record: x\n        expr: sum(\n"), 0o644))
	o := server.DefaultOptions()
	o.DataDir = t.TempDir()
	o.HTTPListen, o.MQTT.Listen = "127.0.0.1:0", "127.0.0.1:0"
	o.Alerting.RuleFiles = []string{file}
	_, err := server.New(o, nil, nil)
	require.ErrorIs(t, err, alerting.ErrRules)
	require.ErrorContains(t, err, file+": 5:15:")
}
