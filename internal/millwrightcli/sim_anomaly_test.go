package millwrightcli

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/anomaly"
	"github.com/millwright/millwright/internal/server"
)

// simAnomalyServer is a server whose monitor writes every second and whose anomaly finder
// runs every 2 s over 10 s windows, so that a simulator run of half a minute spans its
// windows.
func simAnomalyServer(t *testing.T) *simServer {
	return startSimServerWith(t, func(o *server.Options) {
		o.Monitor.Interval = time.Second
		o.Anomaly.Interval = 2 * time.Second
		o.Anomaly.Window = 10 * time.Second
		o.Anomaly.BaselineWindows = 3
	})
}

// simFleet runs the simulator in the background with a profile file's text; the returned
// channel is closed when it has finished.
func simFleet(t *testing.T, s *simServer, prefix, profile string, duration time.Duration) <-chan struct{} {
	path := filepath.Join(t.TempDir(), "fleet.yml")
	require.NoError(t, os.WriteFile(path, []byte(profile), 0o644))
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, _, stderr := run("sim", "--json", "--log-level", "warn", "--server", s.srv.MQTTAddr().String(), "--data", s.dir,
			"--api-server", s.api(), "--devices", "60", "--id-prefix", prefix, "--profile", path,
			"--interval", "2s", "--jitter", "0s", "--sample-interval", "1s", "--backoff-base", "100ms", "--duration", duration.String())
		if code != 0 {
			t.Errorf("sim: %s", stderr)
		}
	}()
	t.Cleanup(func() { <-done })
	return done
}

// TestSimAnomalies is the acceptance run of docs/monitoring.md "Anomalies" on a simulated
// fleet: devices on firmware 2.1.0 drop their connection every 3 s on average and operator
// op-b's network adds 2 s each way; the report names firmware=2.1.0 for the drops and
// operator=op-b for the ingest delay. Both faults are there from the first minute, so they
// are outliers (no move: there is no before). The same fleet without faults reports
// nothing, neither finding nor outlier, and no anomaly series is written.
func TestSimAnomalies(t *testing.T) {
	t.Run("faulty", func(t *testing.T) {
		s := simAnomalyServer(t)
		done := simFleet(t, s, "fa", `
profiles:
  - {name: stable, firmware_version: 2.0.3, network_operator: op-a, hardware_model: gw-100}
  - {name: canary, firmware_version: 2.1.0, network_operator: op-a, hardware_model: gw-100}
  - {name: far, firmware_version: 2.0.3, network_operator: op-b, hardware_model: gw-100, network: {latency: 2s}}
firmware:
  - {version: 2.1.0, drop_interval: 3s}
`, 25*time.Second)
		want := map[anomaly.Metric]string{anomaly.DropsPerDeviceHour: "firmware=2.1.0", anomaly.IngestDelaySeconds: "operator=op-b"}
		var got map[anomaly.Metric]string
		var last *anomaly.Report
		require.Eventually(t, func() bool {
			last = s.srv.Anomaly().Latest()
			if last == nil {
				return false
			}
			got = map[anomaly.Metric]string{}
			for _, o := range last.Outliers {
				got[o.Metric] = o.Dimension + "=" + o.Value
			}
			return len(got) == 2
		}, 60*time.Second, 500*time.Millisecond, "outliers never named both faults")
		require.Equal(t, want, got, "%+v", last.Outliers)
		for _, o := range last.Outliers {
			t.Logf("%s", o.Text)
		}
		for _, f := range last.Findings {
			t.Logf("finding: %s", f.Text)
		}
		<-done
	})

	t.Run("fault-free", func(t *testing.T) {
		s := simAnomalyServer(t)
		start := time.Now()
		done := simFleet(t, s, "ok", `
profiles:
  - {name: stable, firmware_version: 2.0.3, network_operator: op-a, hardware_model: gw-100}
  - {name: canary, firmware_version: 2.1.0, network_operator: op-a, hardware_model: gw-100}
  - {name: far, firmware_version: 2.0.3, network_operator: op-b, hardware_model: gw-100}
`, 20*time.Second)
		reports := 0
		var prev time.Time
		for running := true; running; {
			select {
			case <-done:
				running = false
			case <-time.After(500 * time.Millisecond):
			}
			rep := s.srv.Anomaly().Latest()
			if rep == nil || rep.Time.Equal(prev) {
				continue
			}
			prev = rep.Time
			reports++
			require.Empty(t, rep.Findings, "%+v", rep.Findings)
			require.Empty(t, rep.Outliers, "%+v", rep.Outliers)
		}
		require.GreaterOrEqual(t, reports, 5)
		require.Empty(t, s.query(t, "millwright_anomaly_factor", time.Now()))
		require.Empty(t, s.query(t, `count_over_time(millwright_anomaly_factor[10m])`, time.Now()), "no finding was ever written since %s", start)
	})
}
