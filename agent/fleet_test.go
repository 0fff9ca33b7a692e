package agent_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

const fleetSize = 1000

// fleetCerts registers n devices with the server and returns their
// certificates (one key shared by all, to save time; each has its own
// certificate and ID).
func fleetCerts(t *testing.T, srv *testServer, prefix string, n int) []*tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	out := make([]*tls.Certificate, n)
	for i := range out {
		id := fmt.Sprintf("%s-%04d", prefix, i)
		_, certPEM, err := srv.ca.DeviceCert(id, key.Public(), time.Now(), 24*time.Hour)
		require.NoError(t, err)
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		require.NoError(t, srv.srv.Registry().AddCertificate(context.Background(), id, pair.Leaf, true))
		out[i] = &pair
	}
	return out
}

// tickSource writes one measurement per second of clk, starting at phase
// (devices do not sample in step).
type tickSource struct {
	clk   clock.Clock
	phase time.Duration
}

func (tickSource) Name() string { return "tick" }

func (s tickSource) Run(ctx context.Context, sink source.Sink) error {
	wait := s.phase
	for i := 0; ; i++ {
		t := s.clk.NewTimer(wait)
		wait = time.Second
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case now := <-t.C():
			v := float64(i)
			_ = sink.Write(ctx, []protocol.Record{{Name: "tick", Time: float64(now.UnixMilli()) / 1000, Value: &v}}, source.ClassRaw)
		}
	}
}

// fleet is many agents in this process.
type fleet struct {
	agents []*agent.Agent
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   chan error
}

// startFleet creates one agent per certificate, on clk, then starts them
// all at once; it returns the start time (by clk).
func startFleet(t *testing.T, srv *testServer, certs []*tls.Certificate, clk clock.Clock, mutate func(*agent.Config), dialer agent.Dialer) (*fleet, time.Time) {
	t.Helper()
	base := t.TempDir()
	f := &fleet{errs: make(chan error, len(certs))}
	for i, c := range certs {
		cfg := srv.agentConfig(t)
		cfg.Spool.Dir = filepath.Join(base, strconv.Itoa(i))
		cfg.Spool.Sync = spool.SyncNever // 1,000 spools fsyncing every 200 ms would measure the disk
		cfg.Health.Interval = 0
		cfg.Uplink.Keepalive = 30 * time.Second
		cfg.Uplink.AckTimeout = 20 * time.Second
		cfg.Uplink.ConnectTimeout = 20 * time.Second
		cfg.Batch.MinWindow = 0
		mutate(&cfg)
		rnd := rand.New(rand.NewPCG(42, uint64(i)))
		a, err := agent.New(cfg, agent.Options{Certificate: c, RootCAs: srv.ca.Pool(), Dialer: dialer, Clock: clk,
			Rand: rnd.Int64N, Sources: []source.Source{tickSource{clk, time.Duration(i%1000)*time.Millisecond + time.Millisecond}}, Logger: testLogger(t)})
		require.NoError(t, err)
		f.agents = append(f.agents, a)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	start := clk.Now()
	for _, a := range f.agents {
		f.wg.Go(func() { f.errs <- a.Run(ctx) })
	}
	return f, start
}

func (f *fleet) stop(t *testing.T) {
	f.cancel()
	f.wg.Wait()
	close(f.errs)
	for err := range f.errs {
		require.NoError(t, err)
	}
}

func (f *fleet) connected() int {
	n := 0
	for _, a := range f.agents {
		if a.Stats().Connected {
			n++
		}
	}
	return n
}

// arrivals returns the server's commit times of the batches of devices
// matching prefix in [from, to): the timestamps of their
// millwright_device_batch_seq samples.
func (s *testServer) arrivals(t *testing.T, prefix string, from, to time.Time) []time.Time {
	t.Helper()
	rangeSec := int(to.Sub(from).Seconds()) + 2
	q := url.Values{
		"query": {fmt.Sprintf(`millwright_device_batch_seq{device=~%q}[%ds]`, prefix+"-.*", rangeSec)},
		"time":  {strconv.FormatFloat(float64(to.Add(time.Second).UnixMilli())/1000, 'f', 3, 64)},
	}
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
	var out []time.Time
	for _, r := range body.Data.Result {
		for _, v := range r.Values {
			at := time.UnixMilli(int64(v[0].(float64)*1000 + 0.5))
			if !at.Before(from) && at.Before(to) {
				out = append(out, at)
			}
		}
	}
	return out
}

// histogram counts times per bin from start.
func histogram(times []time.Time, start time.Time, bin time.Duration, bins int) []int {
	h := make([]int, bins)
	for _, at := range times {
		i := int(at.Sub(start) / bin)
		if i >= 0 && i < bins {
			h[i]++
		}
	}
	return h
}

func peakMean(h []int) (peak int, mean float64) {
	sum := 0
	for _, c := range h {
		sum += c
		peak = max(peak, c)
	}
	return peak, float64(sum) / float64(len(h))
}

// peakPair is the most arrivals in two adjacent bins: a burst the server stamps across a bin
// boundary counts whole.
func peakPair(h []int) int {
	peak := 0
	for i := 1; i < len(h); i++ {
		peak = max(peak, h[i-1]+h[i])
	}
	return peak
}

// countingDialer records the time of every connection attempt.
type countingDialer struct {
	mu    sync.Mutex
	times []time.Time
}

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.times = append(d.times, time.Now())
	d.mu.Unlock()
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (d *countingDialer) since(t0 time.Time) []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []time.Time
	for _, at := range d.times {
		if !at.Before(t0) {
			out = append(out, at)
		}
	}
	return out
}

// TestFleet runs 1,000 real agents in this process against a real server:
// their schedule without and with scatter, then a server restart.
//
// The schedule phases run the agents and the server on one fake clock,
// stepped 10 ms at a time: after each step the test waits until every agent
// that was due has finished its send cycle (its batch published over TLS,
// committed by the server, PUBACKed) and re-armed its timers. Arrival times
// are the server's commit times on that clock, so the per-100 ms counts
// show the schedule itself, independent of how busy the 2 shared cores are.
// (On the real clock, with the shortened interval, the same fleet measured
// peaks of 1.4–2.0× the mean with scatter when the machine was otherwise
// idle, but up to 5.9× while another test binary competed for the cores:
// timers firing late bunch up. Without jitter, the first synchronized burst
// put 56% of the fleet into one 100 ms bin on the sending side, and the
// server needed about a second to commit each burst.)
// The schedule is shortened (interval 2 s, jitter 2 s instead of 45 s +
// 30 s); the observation windows are 8 and 12 s of fake time.
//
// The restart phase runs on the real clock.
func TestFleet(t *testing.T) {
	fclk := clock.NewFake(time.Now())
	srv := startServerClock(t, fclk, nil)
	certs := fleetCerts(t, srv, "fl", fleetSize)

	// run starts the fleet on the fake clock, connects it, steps the clock
	// to start+until and returns the server's arrivals in [start+from,
	// start+until) per 100 ms.
	run := func(t *testing.T, mutate func(*agent.Config), from, until time.Duration) []int {
		f, start := startFleet(t, srv, certs, fclk, func(c *agent.Config) {
			c.Uplink.Backoff.Base = time.Millisecond // connect at the first step
			c.Spool.SyncInterval = time.Hour         // no spool timer fires during the test
			mutate(c)
		}, nil)
		defer f.stop(t)
		// Each agent keeps four timers armed between cycles: its send
		// schedule, its spool's sync loop, its tick source and its MQTT
		// keep-alive.
		const timersPerAgent = 4
		deadline := time.Now().Add(60 * time.Second)
		for f.connected() < fleetSize {
			require.True(t, time.Now().Before(deadline), "only %d agents connected", f.connected())
			fclk.Advance(time.Millisecond)
			time.Sleep(20 * time.Millisecond)
		}
		for fclk.Now().Before(start.Add(until)) {
			fclk.Advance(10 * time.Millisecond)
			blockUntil(t, fclk, timersPerAgent*fleetSize)
		}
		bins := int((until - from) / (100 * time.Millisecond))
		return histogram(srv.arrivals(t, "fl", start.Add(from), start.Add(until)), start.Add(from), 100*time.Millisecond, bins)
	}

	t.Run("no-jitter", func(t *testing.T) {
		h := run(t, func(c *agent.Config) {
			c.Schedule.Interval = 2 * time.Second
			c.Schedule.Jitter = 0
			c.Schedule.FirstSend = agent.FirstSendImmediate
		}, 1500*time.Millisecond, 9500*time.Millisecond)
		peak, mean := peakMean(h)
		pair := peakPair(h)
		t.Logf("no jitter (interval 2 s, first send at start): %d batches in 8 s, mean %.1f per 100 ms, peak %d in one 100 ms bin and %d in 200 ms from a fleet of %d (%.0f× the mean); non-empty bins: %v",
			sum(h), mean, peak, pair, fleetSize, float64(peak)/mean, nonzero(h))
		// The server stamps a burst as it stores it, on the fake clock, which the test moves on
		// while it does: a burst may straddle two bins, so it is counted over 200 ms (a tenth of
		// the interval).
		require.GreaterOrEqual(t, pair, fleetSize*9/10, "without scatter the fleet sends in step")
	})

	t.Run("scatter", func(t *testing.T) {
		h := run(t, func(c *agent.Config) {
			c.Schedule.Interval = 2 * time.Second
			c.Schedule.Jitter = 2 * time.Second
		}, 4*time.Second, 16*time.Second)
		peak, mean := peakMean(h)
		t.Logf("scatter (interval 2 s + jitter 2 s): %d batches in 12 s, mean %.1f per 100 ms, peak %d (%.2f× the mean)", sum(h), mean, peak, float64(peak)/mean)
		require.Greater(t, mean, 25.0, "the fleet was sending")
		require.LessOrEqual(t, float64(peak), 2*mean, "per-100 ms arrival peak at the server within twice the mean")
	})

	// The restart phase needs the real clock: the server restarts on it.
	srv.stop()
	srv.clk = nil
	srv.start()

	// After a server restart, reconnects follow full-jitter backoff. The
	// n-th attempt after the loss waits U[0, B·2ⁿ⁻¹) after the one before,
	// so its time has a density of at most 1/(B·2ⁿ⁻¹); summed over n, the
	// expected attempts of N agents in any second are at most
	// N·(1/B + 1/2B + …) = 2N/B per second. With B = 4 s that is 500 per
	// second for 1,000 agents; without jitter all 1,000 would come in the
	// same instant.
	t.Run("reconnect-storm", func(t *testing.T) {
		const base = 4 * time.Second
		d := &countingDialer{}
		f, _ := startFleet(t, srv, certs, clock.Real(), func(c *agent.Config) {
			c.Schedule.Interval = 2 * time.Second
			c.Schedule.Jitter = 2 * time.Second
			c.Uplink.Backoff.Base = base
			c.Uplink.Backoff.Cap = 64 * time.Second
			c.Uplink.Stable = time.Second
		}, d)
		defer f.stop(t)
		require.Eventually(t, func() bool { return f.connected() == fleetSize }, 60*time.Second, 100*time.Millisecond)
		time.Sleep(1500 * time.Millisecond) // every connection is now stable

		lost := time.Now()
		srv.stop()
		time.Sleep(time.Second)
		srv.start()
		back := time.Now()
		require.Eventually(t, func() bool { return f.connected() == fleetSize }, 90*time.Second, 100*time.Millisecond)
		done := time.Now()

		attempts := d.since(lost)
		secs := int(done.Sub(lost)/time.Second) + 1
		h := histogram(attempts, lost, time.Second, secs)
		peak, _ := peakMean(h)
		bound := 2 * fleetSize * int(time.Second) / int(base)
		var causes []string
		reconnects := map[string]uint64{}
		for _, a := range f.agents {
			for c, n := range a.Stats().Reconnects {
				reconnects[c] += n
			}
		}
		for c, n := range reconnects {
			causes = append(causes, fmt.Sprintf("%s=%d", c, n))
		}
		slices.Sort(causes)
		t.Logf("server away for %v; %d connection attempts until all %d agents were back %v after the loss; attempts per second: %v; peak %d/s, bound 2N/B = %d/s (no jitter: %d in one instant); lost connections by cause: %s",
			back.Sub(lost).Round(100*time.Millisecond), len(attempts), fleetSize, done.Sub(lost).Round(100*time.Millisecond), h, peak, bound, fleetSize, strings.Join(causes, " "))
		require.LessOrEqual(t, peak, bound)
		require.GreaterOrEqual(t, len(attempts), fleetSize)
	})
}

// blockUntil waits until n timers are pending on clk, failing the test
// after a minute instead of hanging.
func blockUntil(t *testing.T, clk *clock.Fake, n int) {
	done := make(chan struct{})
	go func() {
		clk.BlockUntil(n)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("only %d of %d timers re-armed within a minute", clk.Pending(), n)
	}
}

func sum(h []int) int {
	s := 0
	for _, c := range h {
		s += c
	}
	return s
}

// nonzero lists the bins that are not empty, as "index:count".
func nonzero(h []int) []string {
	var out []string
	for i, c := range h {
		if c > 0 {
			out = append(out, fmt.Sprintf("%d:%d", i, c))
		}
	}
	return out
}
