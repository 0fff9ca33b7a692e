package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/alerting"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/tsdb"
)

// The rule file of Prometheus' documented example (docs/querying/api.md, "Rules").
const exampleRules = `groups:
  - name: example
    interval: 1m
    rules:
      - alert: HighRequestLatency
        expr: job:request_latency_seconds:mean5m{job="myjob"} > 0.5
        for: 10m
        labels:
          severity: page
        annotations:
          summary: High request latency
      - record: job:http_inprogress_requests:sum
        expr: sum by (job) (http_inprogress_requests)
`

// rulesServer evaluates the example rules on a store where the example's alert fires, and
// serves the API over them.
func rulesServer(t *testing.T) *httptest.Server {
	o := tsdb.DefaultOptions()
	o.Sync = tsdb.SyncNever
	store, err := tsdb.Open(t.TempDir(), o, nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, store.Close()) })
	t0 := time.Date(2018, 7, 4, 18, 17, 12, 0, time.UTC)
	app, err := store.Appender(context.Background())
	require.NoError(t, err)
	for i := range 20 {
		ts := t0.Add(time.Duration(i) * time.Minute).UnixMilli()
		_, err = app.Append(0, labels.FromStrings(labels.MetricName, "job:request_latency_seconds:mean5m", "job", "myjob"), ts, 1)
		require.NoError(t, err)
		_, err = app.Append(0, labels.FromStrings(labels.MetricName, "http_inprogress_requests", "job", "myjob"), ts, 3)
		require.NoError(t, err)
	}
	require.NoError(t, app.Commit())

	file := filepath.Join(t.TempDir(), "rules.yaml")
	require.NoError(t, os.WriteFile(file, []byte(exampleRules), 0o644))
	ao := alerting.DefaultOptions()
	ao.DefaultRules, ao.RuleFiles = false, []string{file}
	m, err := alerting.New(ao, store, alerting.Config{Manual: true})
	require.NoError(t, err)
	require.NoError(t, m.Start())
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	for i := range 12 {
		m.EvalAt(context.Background(), t0.Add(time.Duration(i)*time.Minute))
	}

	srv := httptest.NewServer(api.Handler(api.Config{
		Authenticate: func(context.Context, string) (api.Principal, error) {
			return api.Principal{Name: "viewer", Role: registry.RoleViewer}, nil
		},
		Rules: m,
	}))
	t.Cleanup(srv.Close)
	return srv
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer x")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return resp.StatusCode, m
}

func readJSON(t *testing.T, file string) map[string]any {
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

// sameShape compares an answer with Prometheus' documented example field by field: every
// field of the example is there with the same value, but for the values that differ by
// nature (when the alert became active, the file's path, the group's limit, which the
// server always sets); a field the example leaves out must be one of extra (fields
// Prometheus' implementation answers with and its example does not show).
func sameShape(t *testing.T, path string, doc, got any, extra map[string]bool) {
	t.Helper()
	switch d := doc.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		require.True(t, ok, "%s: want an object, got %T", path, got)
		for k, v := range d {
			gv, ok := g[k]
			require.True(t, ok, "%s.%s missing", path, k)
			sameShape(t, path+"."+k, v, gv, extra)
		}
		for k := range g {
			if _, ok := d[k]; !ok {
				require.True(t, extra[k], "%s.%s: not in Prometheus' answer", path, k)
			}
		}
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, "%s: want an array, got %T", path, got)
		require.Len(t, g, len(d), path)
		for i := range d {
			sameShape(t, path+"[]", d[i], g[i], extra)
		}
	default:
		switch path[strings.LastIndex(path, ".")+1:] {
		case "activeAt":
			_, err := time.Parse(time.RFC3339Nano, got.(string))
			require.NoError(t, err, path)
		case "file", "limit":
			require.IsType(t, doc, got, path)
		default:
			require.Equal(t, doc, got, path)
		}
	}
}

func TestRulesAPIAsPrometheus(t *testing.T) {
	srv := rulesServer(t)
	code, got := getJSON(t, srv.URL+"/api/v1/rules")
	require.Equal(t, http.StatusOK, code)
	sameShape(t, "", readJSON(t, "testdata/prometheus-rules.json"), got,
		// The example's alert leaves out the job label its expression's series carries, which
		// Prometheus' answer has as ours does.
		map[string]bool{"evaluationTime": true, "lastEvaluation": true, "keepFiringFor": true, "state": true, "labels": true, "job": true})
	g := got["data"].(map[string]any)["groups"].([]any)[0].(map[string]any)
	require.Equal(t, 10_000.0, g["limit"], "the default max_series_per_rule")
	require.True(t, strings.HasSuffix(g["file"].(string), "/rules.yaml"))
	require.Equal(t, "firing", g["rules"].([]any)[0].(map[string]any)["state"])
	for _, r := range g["rules"].([]any) {
		_, err := time.Parse(time.RFC3339Nano, r.(map[string]any)["lastEvaluation"].(string))
		require.NoError(t, err)
	}

	// type=alert and type=record keep one kind; a filter that leaves a group empty leaves
	// the group out.
	for typ, want := range map[string]string{"alert": "alerting", "record": "recording"} {
		_, got := getJSON(t, srv.URL+"/api/v1/rules?type="+typ)
		rs := got["data"].(map[string]any)["groups"].([]any)[0].(map[string]any)["rules"].([]any)
		require.Len(t, rs, 1)
		require.Equal(t, want, rs[0].(map[string]any)["type"])
	}
	_, got = getJSON(t, srv.URL+"/api/v1/rules?rule_group[]=other")
	require.Empty(t, got["data"].(map[string]any)["groups"])
	_, got = getJSON(t, srv.URL+"/api/v1/rules?exclude_alerts=true&type=alert")
	require.Nil(t, got["data"].(map[string]any)["groups"].([]any)[0].(map[string]any)["rules"].([]any)[0].(map[string]any)["alerts"])
	// match[] selects on the labels a rule's definition gives.
	_, got = getJSON(t, srv.URL+"/api/v1/rules?match[]="+url.QueryEscape(`{severity="page"}`))
	rs := got["data"].(map[string]any)["groups"].([]any)[0].(map[string]any)["rules"].([]any)
	require.Len(t, rs, 1)
	require.Equal(t, "HighRequestLatency", rs[0].(map[string]any)["name"])
	code, got = getJSON(t, srv.URL+"/api/v1/rules?match[]="+url.QueryEscape(`{severity=""}`))
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "bad_data", got["errorType"])
	code, got = getJSON(t, srv.URL+"/api/v1/rules?type=both")
	require.Equal(t, http.StatusBadRequest, code)
	require.Equal(t, "bad_data", got["errorType"])
}

func TestAlertsAPIAsPrometheus(t *testing.T) {
	srv := rulesServer(t)
	code, got := getJSON(t, srv.URL+"/api/v1/alerts")
	require.Equal(t, http.StatusOK, code)
	doc := readJSON(t, "testdata/prometheus-alerts.json")
	// The documented example is of another alert: same fields, these values.
	a := doc["data"].(map[string]any)["alerts"].([]any)[0].(map[string]any)
	a["labels"] = map[string]any{"alertname": "HighRequestLatency", "job": "myjob", "severity": "page"}
	a["annotations"] = map[string]any{"summary": "High request latency"}
	sameShape(t, "", doc, got, nil)
	require.Equal(t, "2018-07-04T18:17:12Z", got["data"].(map[string]any)["alerts"].([]any)[0].(map[string]any)["activeAt"])
}
