package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
)

// TestDeliveryBothTransports sends measurements over MQTT and over HTTPS to
// a real server and checks they all arrive, once, with the health
// measurements and a sequence number per batch.
func TestDeliveryBothTransports(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	for _, tr := range []agent.Transport{agent.TransportMQTT, agent.TransportHTTPS} {
		t.Run(tr.String(), func(t *testing.T) {
			id := "deliver-" + tr.String()
			cfg := srv.agentConfig(t)
			cfg.Uplink.Transport = tr
			cfg.Identity = agent.IdentityConfig{HardwareModel: "gw-200", NetworkOperator: "Telia", FirmwareVersion: "2.1.0"}
			if tr == agent.TransportHTTPS {
				cfg.Uplink.DevAddress = srv.httpAddr
			}
			src := newCounterSource("deliver", 10*time.Millisecond)
			opts := srv.options(t, id)
			opts.Sources = []agentSource{src}
			a, err := agent.New(cfg, opts)
			require.NoError(t, err)
			stop := runAgent(t, a)
			waitSampled(t, src, 100)
			src.pause()
			want := src.snapshot()
			srv.waitDelivered(t, "deliver", id, len(want), 20*time.Second)
			requireExactlyOnce(t, want, srv.values(t, "deliver", id))
			// Health arrives in-band.
			srv.waitDelivered(t, agent.HealthSpoolRecords, id, 1, 10*time.Second)
			stop()
			seq, ok := srv.scalar(t, fmt.Sprintf(`millwright_device_batch_seq{device=%q}`, id))
			require.True(t, ok)
			require.Equal(t, float64(a.Stats().Seq-1), seq, "the server saw the last batch number")
			if tr == agent.TransportMQTT {
				// The identity reported at connect is in the registry.
				require.Eventually(t, func() bool {
					d, err := srv.srv.Registry().Device(context.Background(), id)
					return err == nil && d.HardwareModel == "gw-200" && d.NetworkOperator == "Telia" && d.FirmwareVersion == "2.1.0"
				}, 10*time.Second, 20*time.Millisecond)
			}
		})
	}
}

// TestOutageServerDown is the outage acceptance test: the agent samples 100
// measurements/s while its server is stopped for 60 s; after recovery every
// measurement is in the server exactly once (PromQL count and values). The
// clock is real, and so are TLS, TCP and the server's shutdown and restart
// (same data directory and ports). The send schedule is the tests' short one
// (a cycle every 0.3–0.5 s, reconnect backoff 0.1–2 s), so the outage spans
// ~150 send cycles and ~30 reconnect attempts at the backoff cap, and the
// backlog of ~6,000 measurements drains paced, 2 batches of at most 200 per
// cycle. The test runs in parallel with the package's others.
func TestOutageServerDown(t *testing.T) {
	t.Parallel()
	const (
		outageFor = 60 * time.Second
		rate      = 100 // measurements per second
	)
	srv := startServer(t, nil)
	id := "outage-1"
	cfg := srv.agentConfig(t)
	// Pace the backlog: 2 batches of at most 200 measurements per cycle.
	cfg.Batch.MaxRecords = 200
	cfg.Schedule.MaxBatchesPerCycle = 2
	src := newCounterSource("outage", time.Second/rate)
	opts := srv.options(t, id)
	opts.Sources = []agentSource{src}
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, a)

	srv.waitDelivered(t, "outage", id, 1, 10*time.Second) // delivering before the outage
	srv.stop()
	down := time.Now()
	sampledBefore := len(src.snapshot())
	time.Sleep(outageFor)
	backlog := a.Stats().Spool.Records
	sampledDuring := len(src.snapshot()) - sampledBefore
	srv.start()
	up := time.Now()
	waitSampled(t, src, len(src.snapshot())+2*rate) // two more seconds of sampling after the restart
	src.pause()
	want := src.snapshot()
	srv.waitDelivered(t, "outage", id, len(want), 60*time.Second)
	drained := time.Since(up)
	count, ok := srv.scalar(t, fmt.Sprintf(`count_over_time(outage{device=%q}[1d])`, id))
	require.True(t, ok)
	require.Equal(t, float64(len(want)), count, "PromQL count: every measurement once")
	requireExactlyOnce(t, want, srv.values(t, "outage", id))
	st := a.Stats()
	outage := up.Sub(down)
	t.Logf("outage %v: %d measurements sampled, %d during the outage (%.0f/s), backlog %d at restart; all delivered once within %v of the restart; %d batches, reconnects %v, connect failures %v",
		outage.Round(time.Millisecond), len(want), sampledDuring, float64(sampledDuring)/outage.Seconds(), backlog,
		drained.Round(100*time.Millisecond), st.BatchesSent, st.Reconnects, st.ConnectFailures)
	require.GreaterOrEqual(t, outage, outageFor)
	// The source really sampled at about 100/s throughout the outage (a
	// ticker may skip a tick on a loaded machine, hence the margin).
	require.GreaterOrEqual(t, sampledDuring, int(0.9*rate*outageFor.Seconds()))
	require.GreaterOrEqual(t, backlog, uint64(sampledDuring), "the outage's measurements waited in the spool")
	require.NotZero(t, st.ConnectFailures["dial"], "the agent kept trying while the server was away")
	require.Zero(t, src.failures())
}

// TestOutageConnectionCuts samples 100 measurements/s through a proxy that
// cuts one in four data writes, in turn before forwarding it, halfway
// through it, or right after it (so the server stores a batch whose PUBACK never
// arrives). Every measurement must arrive exactly once.
func TestOutageConnectionCuts(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	proxy := newCutProxy(t, srv.mqttAddr)
	id := "cuts-1"
	cfg := srv.agentConfig(t)
	cfg.Uplink.DevAddress = proxy.addr()
	cfg.Batch.MaxRecords = 100
	src := newCounterSource("cuts", 10*time.Millisecond)
	opts := srv.options(t, id)
	opts.Sources = []agentSource{src}
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, a)

	waitSampled(t, src, 100)
	proxy.setCut(0.25)
	time.Sleep(10 * time.Second)
	proxy.setCut(0)
	src.pause()
	want := src.snapshot()
	srv.waitDelivered(t, "cuts", id, len(want), 60*time.Second)
	requireExactlyOnce(t, want, srv.values(t, "cuts", id))
	st := a.Stats()
	t.Logf("%d measurements; %d cuts (before a write %d, halfway %d, after %d); %d batches acknowledged; reconnects %v",
		len(want), proxy.totalCuts(), proxy.cuts[0].Load(), proxy.cuts[1].Load(), proxy.cuts[2].Load(), st.BatchesSent, st.Reconnects)
	require.GreaterOrEqual(t, proxy.totalCuts(), int64(6))
	require.GreaterOrEqual(t, proxy.cuts[2].Load(), int64(2), "some batches reached the server without their PUBACK reaching the agent")
	repeats, _ := srv.scalar(t, fmt.Sprintf(`millwright_device_batch_seq_repeats_total{device=%q}`, id))
	gaps, _ := srv.scalar(t, fmt.Sprintf(`millwright_device_batch_seq_gaps_total{device=%q}`, id))
	t.Logf("server: %v batch numbers repeated (retransmits), %v gaps", repeats, gaps)
	require.Zero(t, gaps, "no batch number is skipped")
}

// waitSampled waits until src has sampled at least n measurements.
func waitSampled(t *testing.T, src *counterSource, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return len(src.snapshot()) >= n }, 60*time.Second, 10*time.Millisecond,
		"waiting for %d measurements to be sampled", n)
}
