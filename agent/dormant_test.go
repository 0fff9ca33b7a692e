package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

const year = 365 * 24 * time.Hour

// startDormantServer starts a server on clk whose development CA was made five years before
// clk's time, as a fleet's CA is older than its devices' certificates.
func startDormantServer(t *testing.T, clk *clock.Fake, mutate func(*server.Options)) *testServer {
	t.Helper()
	dir := t.TempDir()
	_, _, err := pki.LoadOrCreateCA(dir, clk.Now().Add(-5*year))
	require.NoError(t, err)
	return startServerClock(t, clk, func(o *server.Options) {
		o.DataDir = dir
		if mutate != nil {
			mutate(o)
		}
	})
}

// expiredCredentials registers device id with a 90-day certificate that expired ago before
// the server's clock, and writes the certificate and its key into a new directory.
func (s *testServer) expiredCredentials(t *testing.T, clk clock.Clock, id string, ago time.Duration) (certFile, keyFile string) {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	leaf, certPEM, err := s.ca.DeviceCert(id, key.Public(), clk.Now().Add(-ago-90*24*time.Hour), 90*24*time.Hour)
	require.NoError(t, err)
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	require.NoError(t, srv.Registry().AddCertificate(context.Background(), id, leaf, true))
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "device.crt"), filepath.Join(dir, "device.key")
	require.NoError(t, os.WriteFile(certFile, certPEM, 0o644))
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	return certFile, keyFile
}

// dormantAgent is an agent on clk with file credentials and tls.est_server, logging into a
// buffer the test reads.
type dormantAgent struct {
	cfg  agent.Config
	opts agent.Options
	logs *syncBuffer
}

func (s *testServer) dormantAgent(t *testing.T, clk clock.Clock, certFile, keyFile string) *dormantAgent {
	cfg := s.agentConfig(t)
	cfg.TLS.CertFile, cfg.TLS.KeyFile = certFile, keyFile
	_, port, err := net.SplitHostPort(s.httpAddr)
	require.NoError(t, err)
	cfg.TLS.ESTServer = "https://localhost:" + port
	logs := &syncBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, os.Stderr)
	}
	return &dormantAgent{cfg: cfg, logs: logs, opts: agent.Options{
		Clock:   clk,
		RootCAs: s.ca.Pool(),
		Logger:  slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name()),
	}}
}

// syncBuffer collects log output written from the agent's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// writeAt stores one measurement of metric per time in the agent's spool, value i for the
// i-th time.
func writeAt(t *testing.T, a *agent.Agent, metric string, times []time.Time) map[int64]float64 {
	t.Helper()
	want := map[int64]float64{}
	recs := make([]protocol.Record, len(times))
	for i, at := range times {
		v := float64(i)
		recs[i] = protocol.Record{Name: metric, Time: float64(at.UnixMilli()) / 1000, Value: &v}
		want[at.UnixMilli()] = v
	}
	require.NoError(t, a.Sink().Write(context.Background(), recs, source.ClassRaw))
	return want
}

// queryAt runs an instant PromQL query at the time at and returns its one value; ok is false
// when it returns none.
func (s *testServer) queryAt(t *testing.T, q string, at time.Time) (float64, bool) {
	t.Helper()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	ts := strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
	s.get(t, "/api/v1/query", url.Values{"query": {q}, "time": {ts}}, &body)
	require.Equal(t, "success", body.Status, body.Error)
	if len(body.Data.Result) == 0 {
		return 0, false
	}
	require.Len(t, body.Data.Result, 1, "query %s", q)
	f, err := strconv.ParseFloat(body.Data.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	return f, true
}

// metric sums the server's metric name over the series whose labels contain every one of
// labelPairs (`reason="window"`).
func (s *testServer) metric(t *testing.T, name string, labelPairs ...string) float64 {
	t.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"}}}
	resp, err := client.Get("https://" + s.httpAddr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		for _, lp := range labelPairs {
			ok = ok && strings.Contains(rest, lp)
		}
		if ok {
			f := strings.Fields(rest)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			require.NoError(t, err, "line %q", line)
			sum += v
		}
	}
	return sum
}

// waitLog waits until the agent's log holds n lines matching re, and fails with the log.
func waitLog(t *testing.T, logs *syncBuffer, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(30 * time.Second)
	for len(rx.FindAllString(logs.String(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not log %d times %s; its log:\n%s", n, re, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stepUntil advances clk by step, giving the agent's goroutines a moment after each step,
// until cond holds; after within (real time) it fails the test with msg and the agent's log.
func stepUntil(t *testing.T, clk *clock.Fake, logs *syncBuffer, step, within time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s; the agent's log:\n%s", msg, logs.String())
		}
		clk.Advance(step)
		time.Sleep(20 * time.Millisecond) // let the goroutines the step woke run
	}
}

// TestDormantDeviceComesBack: an agent whose certificate expired two years ago, while the
// device was off, re-enrolls by itself with dormant re-enrollment, connects with the new
// certificate and delivers its spool. The part of its spool older than the server's
// out-of-order window is refused as too_old, and the agent counts it where it can be seen:
// in Stats and in its health measurement on the server. Then the same device, revoked while
// off for another ninety days, cannot come back; neither can a device asleep past the window,
// nor any device of a server with the window set to 0.
func TestDormantDeviceComesBack(t *testing.T) {
	clk := clock.NewFake(time.Now())
	srv := startDormantServer(t, clk, nil)
	const id = "d-sleeper"
	certFile, keyFile := srv.expiredCredentials(t, clk, id, 2*year)
	oldCert, err := os.ReadFile(certFile)
	require.NoError(t, err)
	d := srv.dormantAgent(t, clk, certFile, keyFile)
	a, err := agent.New(d.cfg, d.opts)
	require.NoError(t, err)

	// The spool holds what the device measured before it slept, two years and a month ago,
	// and what it measured in the twenty minutes since it woke.
	now := clk.Now()
	var before, since []time.Time
	for i := range 5 {
		before = append(before, now.Add(-2*year-30*24*time.Hour+time.Duration(i)*time.Minute))
	}
	for i := range 20 {
		since = append(since, now.Add(-20*time.Minute+time.Duration(i)*time.Minute))
	}
	writeAt(t, a, "temp", before)
	want := writeAt(t, a, "temp", since)
	stop := runAgent(t, a)

	stepUntil(t, clk, d.logs, 250*time.Millisecond, 60*time.Second, func() bool {
		return len(srv.values(t, "temp", id)) >= len(since)
	}, "the spool was not delivered")
	requireExactlyOnce(t, want, srv.values(t, "temp", id))
	waitLog(t, d.logs, `msg="certificate re-enrolled after dormancy"`, 1)
	newCert, err := os.ReadFile(certFile)
	require.NoError(t, err)
	require.NotEqual(t, oldCert, newCert, "the new certificate is stored in tls.cert_file")
	require.Equal(t, 1.0, srv.metric(t, "millwright_enroll_dormant_reenrolled_total"))

	// The samples from before the sleep are older than the out-of-order window: refused,
	// dropped by the agent and counted, in Stats and in the health measurement it sends.
	// The agent counts them when it reads the server's answer, which may come a moment after
	// the values it stored can be queried.
	require.Eventually(t, func() bool {
		return a.Stats().Dropped[protocol.ReasonTooOld.String()] >= uint64(len(before))
	}, 30*time.Second, 10*time.Millisecond, "dropped: %v", a.Stats().Dropped)
	st := a.Stats()
	require.True(t, st.Connected)
	// A batch refused as too_old is dropped whole, and counted whole, though the server stored
	// its part within the window.
	t.Logf("measurements counted as dropped too_old: %d (%d were older than the window, %d delivered)",
		st.Dropped[protocol.ReasonTooOld.String()], len(before), len(since))
	health := fmt.Sprintf(`max_over_time(%s{device=%q}[1h])`, agent.HealthDropped(protocol.ReasonTooOld.String()), id)
	stepUntil(t, clk, d.logs, 250*time.Millisecond, 30*time.Second, func() bool {
		v, ok := srv.queryAt(t, health, clk.Now())
		return ok && v >= float64(len(before))
	}, fmt.Sprintf("the server has no agent_dropped_records_too_old_total of at least %d", len(before)))
	n, _ := srv.queryAt(t, fmt.Sprintf(`count_over_time(temp{device=%q}[3y])`, id), clk.Now())
	require.Equal(t, float64(len(since)), n, "the samples from before the sleep are not stored")

	srv.mu.Lock()
	reg := srv.srv.Registry()
	srv.mu.Unlock()
	audit, err := reg.ListAudit(context.Background(), 100, 0)
	require.NoError(t, err)
	var dormantEntries []registry.AuditEntry
	for _, e := range audit {
		if e.Action == registry.ActionCertificateDormant {
			dormantEntries = append(dormantEntries, e)
		}
	}
	require.Len(t, dormantEntries, 1)
	require.Equal(t, "device:"+id, dormantEntries[0].Actor)
	require.Regexp(t, `, expired 2y(\d+s)? ago$`, dormantEntries[0].Detail)

	t.Run("revoked", func(t *testing.T) {
		// The device goes back to sleep; while it is off the operator revokes it, and its new
		// certificate expires. When it wakes, dormant re-enrollment is refused.
		stop()
		srv.post(t, "/api/v1/devices/"+id+"/revoke")
		clk.Advance(91 * 24 * time.Hour)
		kept, err := os.ReadFile(certFile)
		require.NoError(t, err)

		a2, err := agent.New(d.cfg, d.opts)
		require.NoError(t, err)
		writeAt(t, a2, "temp", []time.Time{clk.Now()})
		runAgent(t, a2)
		refusal := `msg="re-enrollment after dormancy refused by the server; retrying later" .* reason="dormant re-enrollment refused: ` +
			`device \\"d-sleeper\\" is revoked: it was revoked for good; enroll it again with a new token" status=403`
		waitLog(t, d.logs, refusal, 1)
		// It tries again later, on its long backoff (10 min, doubling up to a day).
		rx := regexp.MustCompile(refusal)
		stepUntil(t, clk, d.logs, time.Hour, 30*time.Second, func() bool { return len(rx.FindAllString(d.logs.String(), -1)) >= 2 },
			"no second attempt within 30 s")
		require.GreaterOrEqual(t, srv.metric(t, "millwright_enroll_dormant_refused_total", `reason="status"`), 2.0)
		require.Equal(t, 1.0, srv.metric(t, "millwright_enroll_dormant_reenrolled_total"), "no second certificate")
		after, err := os.ReadFile(certFile)
		require.NoError(t, err)
		require.Equal(t, kept, after)
		st := a2.Stats()
		require.False(t, st.Connected)
		require.Positive(t, st.Spool.Records, "a refused device keeps its spool")
	})

	t.Run("past the window", func(t *testing.T) {
		certFile, keyFile := srv.expiredCredentials(t, clk, "d-fossil", 3*year+30*24*time.Hour)
		d := srv.dormantAgent(t, clk, certFile, keyFile)
		a, err := agent.New(d.cfg, d.opts)
		require.NoError(t, err)
		runAgent(t, a)
		// (Certificates keep whole seconds: the clock's fraction may round to one more.)
		waitLog(t, d.logs, `reason="dormant re-enrollment refused: certificate [0-9a-f]+ of \\"d-fossil\\" expired 3y30d(1s)? ago, `+
			`30d(1s)? beyond the dormant re-enrollment window of 3y; enroll the device again with a new token" status=403`, 1)
		require.Equal(t, 1.0, srv.metric(t, "millwright_enroll_dormant_refused_total", `reason="window"`))
		require.False(t, a.Stats().Connected)
	})

	t.Run("window 0", func(t *testing.T) {
		clk := clock.NewFake(time.Now())
		off := startDormantServer(t, clk, func(o *server.Options) { o.Enroll.DormantReenrollWindow = 0 })
		certFile, keyFile := off.expiredCredentials(t, clk, "d-sleeper", 2*year)
		d := off.dormantAgent(t, clk, certFile, keyFile)
		a, err := agent.New(d.cfg, d.opts)
		require.NoError(t, err)
		runAgent(t, a)
		waitLog(t, d.logs, `reason="dormant re-enrollment refused: it is turned off on this server \(--dormant-reenroll-window 0\); `+
			`enroll the device again with a new token" status=403`, 1)
		require.Equal(t, 1.0, off.metric(t, "millwright_enroll_dormant_refused_total", `reason="disabled"`))
		require.Zero(t, off.metric(t, "millwright_enroll_dormant_reenrolled_total"))
		require.False(t, a.Stats().Connected)
	})
}

// post sends an authenticated POST without a body to the API and checks that it succeeded.
func (s *testServer) post(t *testing.T, path string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "https://"+s.httpAddr+path, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"}}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "POST %s: %s", path, b)
}
