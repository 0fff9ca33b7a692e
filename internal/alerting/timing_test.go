package alerting

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEvaluatesOnItsOwnTicker: outside manual mode the engine evaluates every group at its
// interval by itself (evaluation_interval for a group that sets none).
func TestEvaluatesOnItsOwnTicker(t *testing.T) {
	s := openStore(t)
	o := DefaultOptions()
	o.DefaultRules = false
	o.EvaluationInterval = 100 * time.Millisecond
	o.RuleFiles = []string{writeFile(t, t.TempDir(), "r.yml", "groups:\n  - name: g\n    rules:\n      - alert: Always\n        expr: vector(1)\n")}
	m, err := New(o, s, Config{})
	require.NoError(t, err)
	require.NoError(t, m.Start())
	t.Cleanup(func() { require.NoError(t, m.Stop(context.Background())) })
	require.Equal(t, 100*time.Millisecond, m.RuleGroups()[0].Interval())
	require.Eventually(t, func() bool { return len(firing(t, m, "Always")) == 1 }, 10*time.Second, 10*time.Millisecond)
}

// TestResendDelay: a firing alert is sent to the Alertmanagers again once resend_delay has
// passed since it was last sent, not at every evaluation.
func TestResendDelay(t *testing.T) {
	var mu sync.Mutex
	var posts [][]map[string]any
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var alerts []map[string]any
		require.NoError(t, json.Unmarshal(b, &alerts))
		mu.Lock()
		posts = append(posts, alerts)
		mu.Unlock()
	}))
	t.Cleanup(am.Close)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(posts) }

	s := openStore(t)
	o := DefaultOptions()
	o.DefaultRules = false
	o.Alertmanagers = []string{am.URL}
	o.ResendDelay = time.Minute
	o.RuleFiles = []string{writeFile(t, t.TempDir(), "r.yml", "groups:\n  - name: g\n    rules:\n      - alert: Always\n        expr: vector(1)\n")}
	m := newManual(t, s, o, Config{})
	ctx := context.Background()
	m.EvalAt(ctx, t0)
	require.Eventually(t, func() bool { return count() == 1 }, 10*time.Second, time.Millisecond)
	m.EvalAt(ctx, t0.Add(30*time.Second)) // within resend_delay: not sent
	m.EvalAt(ctx, t0.Add(61*time.Second)) // past it: sent again
	require.Eventually(t, func() bool { return count() >= 2 }, 10*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	// The second POST is the evaluation at 61 s: an alert is valid for 4 × the resend delay
	// from the evaluation that sent it.
	end, err := time.Parse(time.RFC3339Nano, posts[1][0]["endsAt"].(string))
	require.NoError(t, err)
	require.Equal(t, t0.Add(61*time.Second+4*time.Minute), end.UTC())
}
