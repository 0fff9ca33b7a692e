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
			time.Sleep(time.Second)
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

// TestOutageServerDown samples 100 measurements/s while the server is
// stopped for outageFor, then checks that every measurement arrives exactly
// once after it is back.
//
// The issue asks for a 60 s outage. To keep the agent suite fast this test
// uses a 20 s outage with the schedule scaled down about 100× (send every
// 0.3–0.5 s instead of 45–75 s; reconnect backoff 0.1–2 s instead of
// 1 s–5 min), so the outage spans ~50 send cycles and many reconnect
// attempts at the backoff cap: the same situation as an outage of an hour
// at the default schedule. The clock is real: TLS, TCP and the server's
// shutdown and restart are all real.
func TestOutageServerDown(t *testing.T) {
	t.Parallel()
	const outageFor = 20 * time.Second
	srv := startServer(t, nil)
	id := "outage-1"
	cfg := srv.agentConfig(t)
	// Pace the backlog: 2 batches of at most 200 measurements per cycle.
	cfg.Batch.MaxRecords = 200
	cfg.Schedule.MaxBatchesPerCycle = 2
	src := newCounterSource("outage", 10*time.Millisecond)
	opts := srv.options(t, id)
	opts.Sources = []agentSource{src}
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, a)

	time.Sleep(2 * time.Second)
	srv.stop()
	down := time.Now()
	time.Sleep(outageFor)
	backlog := a.Stats().Spool.Records
	srv.start()
	up := time.Now()
	time.Sleep(2 * time.Second)
	src.pause()
	want := src.snapshot()
	srv.waitDelivered(t, "outage", id, len(want), 60*time.Second)
	drained := time.Since(up)
	requireExactlyOnce(t, want, srv.values(t, "outage", id))
	st := a.Stats()
	t.Logf("outage %v: %d measurements sampled (%d during the outage), backlog %d at restart; all delivered once within %v of the restart; %d batches, reconnects %v, connect failures %v",
		up.Sub(down).Round(time.Millisecond), len(want), int(up.Sub(down)/(10*time.Millisecond)), backlog, drained.Round(100*time.Millisecond),
		st.BatchesSent, st.Reconnects, st.ConnectFailures)
	require.Greater(t, backlog, uint64(1000), "the outage built a backlog")
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

	time.Sleep(time.Second)
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
