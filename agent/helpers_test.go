package agent_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

// testServer is a real Millwright server in this process on fixed loopback
// ports, which can be stopped and started again (same data, same ports).
type testServer struct {
	t        *testing.T
	dir      string
	mqttAddr string
	httpAddr string
	mutate   func(*server.Options)
	clk      clock.Clock // nil: the real clock

	mu     sync.Mutex
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
	ca     *pki.CA
	token  string
}

func startServer(t *testing.T, mutate func(*server.Options)) *testServer {
	t.Helper()
	return startServerClock(t, nil, mutate)
}

// startServerClock starts a server on clk (nil: the real clock).
func startServerClock(t *testing.T, clk clock.Clock, mutate func(*server.Options)) *testServer {
	t.Helper()
	s := &testServer{t: t, dir: t.TempDir(), mqttAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", mutate: mutate, clk: clk}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) start() {
	t := s.t
	t.Helper()
	opts := server.DefaultOptions()
	opts.DataDir = s.dir
	opts.MQTT.Listen = s.mqttAddr
	opts.HTTPListen = s.httpAddr
	if s.mutate != nil {
		s.mutate(&opts)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	var srv *server.Server
	var err error
	// A port just released may still be held for a moment.
	require.Eventually(t, func() bool {
		clk := s.clk
		if clk == nil {
			clk = clock.Real()
		}
		srv, err = server.New(opts, clk, logger)
		return err == nil
	}, 10*time.Second, 50*time.Millisecond, "start server: %v", err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	s.mu.Lock()
	s.srv, s.cancel, s.done = srv, cancel, done
	s.mqttAddr, s.httpAddr = srv.MQTTAddr().String(), srv.HTTPAddr().String()
	s.ca, s.token = srv.CA(), srv.AdminToken()
	s.mu.Unlock()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", s.mqttAddr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)
}

func (s *testServer) stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel = nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(s.t, err)
	case <-time.After(60 * time.Second):
		s.t.Error("server did not stop within 60s")
	}
}

// device issues a certificate for id.
func (s *testServer) device(t *testing.T, id string) *tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	_, certPEM, err := s.ca.DeviceCert(id, key.Public(), time.Now(), 24*time.Hour)
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	require.NoError(t, srv.Registry().AddCertificate(context.Background(), id, pair.Leaf, true))
	return &pair
}

// agentConfig is a configuration for a test agent of this server, on a
// schedule about a hundred times faster than the default.
func (s *testServer) agentConfig(t *testing.T) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.Spool.Dir = filepath.Join(t.TempDir(), "spool")
	cfg.TLS.ServerName = "localhost"
	cfg.Uplink.DevAddress = s.mqttAddr
	cfg.Uplink.Keepalive = 5 * time.Second
	cfg.Uplink.ConnectTimeout = 5 * time.Second
	cfg.Uplink.AckTimeout = 5 * time.Second
	cfg.Uplink.Backoff.Base = 100 * time.Millisecond
	cfg.Uplink.Backoff.Cap = 2 * time.Second
	cfg.Uplink.Stable = time.Second
	cfg.Schedule.Interval = 300 * time.Millisecond
	cfg.Schedule.Jitter = 200 * time.Millisecond
	cfg.Batch.MinWindow = 0
	cfg.Batch.MaxWindow = time.Second
	cfg.Health.Interval = time.Second
	return cfg
}

func (s *testServer) options(t *testing.T, id string) agent.Options {
	return agent.Options{
		Certificate: s.device(t, id),
		RootCAs:     s.ca.Pool(),
		Logger:      testLogger(t),
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// runAgent starts a.Run and stops it at cleanup (or when the returned stop
// is called), checking that it returned without error.
func runAgent(t *testing.T, a *agent.Agent) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("agent did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// values returns every sample of metric for device: time (ms) → value.
func (s *testServer) values(t *testing.T, metric, device string) map[int64]float64 {
	t.Helper()
	q := url.Values{"query": {fmt.Sprintf(`%s{device=%q}[1d]`, metric, device)}, "time": {strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)}}
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	s.get(t, "/api/v1/query", q, &body)
	require.Equal(t, "success", body.Status, body.Error)
	out := map[int64]float64{}
	for _, r := range body.Data.Result {
		for _, v := range r.Values {
			ts := int64(v[0].(float64)*1000 + 0.5)
			f, err := strconv.ParseFloat(v[1].(string), 64)
			require.NoError(t, err)
			_, dup := out[ts]
			require.False(t, dup, "two samples at one time")
			out[ts] = f
		}
	}
	return out
}

// scalar runs an instant query that returns at most one sample; ok is false
// when it returns none.
func (s *testServer) scalar(t *testing.T, q string) (float64, bool) {
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
	now := strconv.FormatFloat(float64(time.Now().Add(time.Second).UnixMilli())/1000, 'f', 3, 64)
	s.get(t, "/api/v1/query", url.Values{"query": {q}, "time": {now}}, &body)
	require.Equal(t, "success", body.Status, body.Error)
	if len(body.Data.Result) == 0 {
		return 0, false
	}
	require.Len(t, body.Data.Result, 1, "query %s", q)
	f, err := strconv.ParseFloat(body.Data.Result[0].Value[1].(string), 64)
	require.NoError(t, err)
	return f, true
}

func (s *testServer) get(t *testing.T, path string, q url.Values, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+s.httpAddr+path+"?"+q.Encode(), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"}}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, out), "body %s", b)
}

// counterSource writes one measurement per tick, values 0, 1, 2, … at
// distinct millisecond times, and remembers which writes the sink accepted.
type counterSource struct {
	name   string
	metric string
	every  time.Duration

	tick    sync.Mutex // held through one write
	mu      sync.Mutex
	next    int
	lastMs  int64
	stored  map[int64]float64 // time (ms) → value, for every accepted write
	failed  int
	paused  bool
	started chan struct{}
}

type agentSource = source.Source

// pause stops writing, waiting for a write in progress; snapshot then
// returns the final set.
func (c *counterSource) pause() {
	c.tick.Lock()
	defer c.tick.Unlock()
	c.mu.Lock()
	c.paused = true
	c.mu.Unlock()
}

func (c *counterSource) failures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

func newCounterSource(metric string, every time.Duration) *counterSource {
	return &counterSource{name: "counter-" + metric, metric: metric, every: every, stored: map[int64]float64{}, started: make(chan struct{})}
}

var _ source.Source = (*counterSource)(nil)

func (c *counterSource) Name() string { return c.name }

func (c *counterSource) Run(ctx context.Context, sink source.Sink) error {
	tk := time.NewTicker(c.every)
	defer tk.Stop()
	close(c.started)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tk.C:
		}
		c.writeOne(ctx, sink)
	}
}

func (c *counterSource) writeOne(ctx context.Context, sink source.Sink) {
	c.tick.Lock()
	defer c.tick.Unlock()
	c.mu.Lock()
	if c.paused {
		c.mu.Unlock()
		return
	}
	ms := max(time.Now().UnixMilli(), c.lastMs+1)
	c.lastMs = ms
	v := float64(c.next)
	c.next++
	c.mu.Unlock()
	rec := protocol.Record{Name: c.metric, Time: float64(ms) / 1000, Value: &v}
	err := sink.Write(ctx, []protocol.Record{rec}, source.ClassRaw)
	c.mu.Lock()
	if err == nil {
		c.stored[ms] = v
	} else {
		c.failed++
	}
	c.mu.Unlock()
}

func (c *counterSource) snapshot() map[int64]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int64]float64, len(c.stored))
	for k, v := range c.stored {
		out[k] = v
	}
	return out
}

// requireExactlyOnce checks that the server holds every stored measurement,
// once, with its value, and nothing else.
func requireExactlyOnce(t *testing.T, want, got map[int64]float64) {
	t.Helper()
	var missing, wrong []int64
	for ts, v := range want {
		g, ok := got[ts]
		switch {
		case !ok:
			missing = append(missing, ts)
		case g != v:
			wrong = append(wrong, ts)
		}
	}
	sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
	if len(missing) > 10 {
		missing = missing[:10]
	}
	require.Empty(t, missing, "measurements missing at the server (first 10)")
	require.Empty(t, wrong, "measurements with another value")
	require.Len(t, got, len(want), "the server holds measurements nobody wrote")
}

// waitDelivered waits until the server holds n samples of metric for device.
func (s *testServer) waitDelivered(t *testing.T, metric, device string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := -1
	for time.Now().Before(deadline) {
		v, ok := s.scalar(t, fmt.Sprintf(`count_over_time(%s{device=%q}[1d])`, metric, device))
		last = int(v)
		if ok && last >= n {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("server holds %d of %d samples of %s after %v", last, n, metric, within)
}
