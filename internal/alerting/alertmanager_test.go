package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

// receiver records the webhook messages POSTed to it, by path.
type receiver struct {
	mu   sync.Mutex
	msgs map[string][]map[string]any
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	r := &receiver{msgs: map[string][]map[string]any{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.msgs[req.URL.Path] = append(r.msgs[req.URL.Path], m)
		r.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

// last returns the last message on path with the status, or nil.
func (r *receiver) last(path, status string) map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.msgs[path]) - 1; i >= 0; i-- {
		if m := r.msgs[path][i]; m["status"] == status {
			return m
		}
	}
	return nil
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// startAlertmanager runs Debian's prometheus-alertmanager on a free port, clustering off,
// with a route that groups by alertname into a webhook to hook.
func startAlertmanager(t *testing.T, hook string) string {
	bin, err := exec.LookPath("prometheus-alertmanager")
	require.NoError(t, err, "prometheus-alertmanager is installed by scripts/test (Debian package prometheus-alertmanager)")
	dir := t.TempDir()
	cfg := fmt.Sprintf(`route:
  receiver: millwright
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: millwright
    webhook_configs:
      - url: %s
        send_resolved: true
`, hook)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o644))
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "am.yml"), "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager output:\n%s", out.String())
		}
	})
	url := "http://" + addr
	require.Eventually(t, func() bool {
		resp, err := http.Get(url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond, "alertmanager did not become ready")
	return url
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// TestAlertmanagerAndWebhook: a real Alertmanager receives an alert through Prometheus'
// notifier, and then its resolution, and passes both to its webhook; a webhook configured on
// Millwright directly gets the same JSON.
func TestAlertmanagerAndWebhook(t *testing.T) {
	rcv, hookSrv := newReceiver(t)
	am := startAlertmanager(t, hookSrv.URL+"/am")

	s := openStore(t)
	o := DefaultOptions()
	o.DefaultRules = false
	o.Alertmanagers = []string{am}
	o.Webhooks = []string{hookSrv.URL + "/direct"}
	o.ExternalURL = "http://millwright.example:8443"
	o.RuleFiles = []string{writeFile(t, t.TempDir(), "r.yml", `groups:
  - name: test
    rules:
      - alert: LineDown
        expr: line_up < 1
        labels:
          severity: page
        annotations:
          summary: "line {{ $labels.line }} is down ({{ $value }})"
`)}
	// Alertmanager tells firing from resolved by the real time, so the rules are evaluated
	// at the real time too.
	m := newManual(t, s, o, Config{})
	now := time.Now().Truncate(time.Second)
	ls := labels.FromStrings(labels.MetricName, "line_up", "line", "3")
	writeSeries(t, s, ls, now.Add(-5*time.Minute), now, time.Minute, 0)
	m.EvalAt(context.Background(), now)
	require.Len(t, firing(t, m, "LineDown"), 1)

	var fromAM, direct map[string]any
	require.Eventually(t, func() bool {
		fromAM, direct = rcv.last("/am", "firing"), rcv.last("/direct", "firing")
		return fromAM != nil && direct != nil
	}, 30*time.Second, 20*time.Millisecond, "no firing message")
	compareMessages(t, fromAM, direct)

	// The line comes back: the alert resolves.
	later := time.Now()
	writeSeries(t, s, ls, later, later, time.Minute, 1)
	m.EvalAt(context.Background(), later)
	require.Empty(t, firing(t, m, "LineDown"))
	require.Eventually(t, func() bool {
		fromAM, direct = rcv.last("/am", "resolved"), rcv.last("/direct", "resolved")
		return fromAM != nil && direct != nil
	}, 30*time.Second, 20*time.Millisecond, "no resolved message")
	compareMessages(t, fromAM, direct)
	b, _ := json.MarshalIndent(direct, "", "  ")
	t.Logf("resolved message to the webhook:\n%s", b)
}

// compareMessages checks that Millwright's webhook message has Alertmanager's shape and the
// same values, but for the external URL (the sender's own).
func compareMessages(t *testing.T, fromAM, direct map[string]any) {
	t.Helper()
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		return k
	}
	require.ElementsMatch(t, keys(fromAM), keys(direct))
	for _, k := range []string{"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels", "commonAnnotations"} {
		require.Equal(t, fromAM[k], direct[k], k)
	}
	amAlerts, dAlerts := fromAM["alerts"].([]any), direct["alerts"].([]any)
	require.Len(t, dAlerts, len(amAlerts))
	for i := range amAlerts {
		a, d := amAlerts[i].(map[string]any), dAlerts[i].(map[string]any)
		require.ElementsMatch(t, keys(a), keys(d))
		for _, k := range []string{"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"} {
			require.Equal(t, a[k], d[k], "alerts[%d].%s", i, k)
		}
	}
}

// TestAlertmanagerDown: an Alertmanager that does not answer costs the rules nothing (the
// notifier queues and sends on its own goroutine) and is counted.
func TestAlertmanagerDown(t *testing.T) {
	s := openStore(t)
	reg := prometheus.NewRegistry()
	o := DefaultOptions()
	o.DefaultRules = false
	o.Alertmanagers = []string{"http://" + freeAddr(t)} // nothing listens there
	o.NotifyTimeout = time.Second
	o.RuleFiles = []string{writeFile(t, t.TempDir(), "r.yml", "groups:\n  - name: g\n    rules:\n      - alert: Up\n        expr: vector(1)\n")}
	m := newManual(t, s, o, Config{Registerer: reg})
	now := time.Now()
	start := time.Now()
	for i := range 5 {
		m.EvalAt(context.Background(), now.Add(time.Duration(i)*time.Minute))
	}
	require.Less(t, time.Since(start), time.Second, "the evaluations waited for the Alertmanager")
	require.Eventually(t, func() bool {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == "prometheus_notifications_errors_total" {
				for _, m := range mf.GetMetric() {
					if m.GetCounter().GetValue() > 0 {
						return true
					}
				}
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "no notification error counted")
}
