package millwrightcli

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/internal/sim"
)

// simServer is a real server in this process on free loopback ports.
type simServer struct {
	srv *server.Server
	dir string
}

func startSimServer(t *testing.T) *simServer { return startSimServerWith(t, nil) }

// startSimServerWith is startSimServer with options changed by mutate (nil for none).
func startSimServerWith(t testing.TB, mutate func(*server.Options)) *simServer {
	t.Helper()
	srv := servertest.Start(t, mutate)
	return &simServer{srv: srv, dir: srv.DataDir()}
}

// api is the server's HTTPS API, where the simulator registers the devices it issues.
func (s *simServer) api() string { return "https://" + s.srv.HTTPAddr().String() }

// query runs a PromQL instant query through the server's API and returns the result vector.
func (s *simServer) query(t testing.TB, q string, at time.Time) []struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
} {
	t.Helper()
	u := "https://" + s.srv.HTTPAddr().String() + "/api/v1/query?" + url.Values{
		"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}.Encode()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.srv.AdminToken())
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.srv.CA().Pool()}}}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, body.Error)
	return body.Data.Result
}

func (s *simServer) scalar(t *testing.T, q string, at time.Time) float64 {
	t.Helper()
	r := s.query(t, q, at)
	require.Len(t, r, 1, "query %s", q)
	v, err := strconv.ParseFloat(r[0].Value[1].(string), 64)
	require.NoError(t, err)
	return v
}

// runSim runs `millwright sim` through the command line with --json and returns the summary.
func runSim(t *testing.T, args ...string) sim.Summary {
	t.Helper()
	code, stdout, stderr := run(append([]string{"sim", "--json", "--log-level", "warn"}, args...)...)
	require.Zero(t, code, stderr)
	var s sim.Summary
	require.NoError(t, json.Unmarshal([]byte(stdout), &s), stdout)
	return s
}

// arrivalPeakToMean returns the peak-to-mean ratio, per 100 ms, of the server's commit times
// of the batches of the devices prefix-*, between from and to.
func (s *simServer) arrivalPeakToMean(t *testing.T, prefix string, from, to time.Time) (peak int, mean float64, batches int) {
	t.Helper()
	secs := int(to.Sub(from)/time.Second) + 2
	bins := make([]int, int(to.Sub(from)/(100*time.Millisecond)))
	for _, r := range s.query(t, fmt.Sprintf(`millwright_device_batch_seq{device=~"%s-.+"}[%ds]`, prefix, secs), to) {
		for _, v := range r.Values {
			at := time.UnixMilli(int64(v[0].(float64)*1000 + 0.5))
			if i := int(at.Sub(from) / (100 * time.Millisecond)); !at.Before(from) && i < len(bins) {
				bins[i]++
				batches++
			}
		}
	}
	for _, b := range bins {
		peak = max(peak, b)
	}
	return peak, float64(batches) / float64(len(bins)), batches
}

// TestSimAgainstServer runs the simulator through the command line against a real server:
// 200 devices for 10 s with scatter, then 200 others with --sync. Every device's data arrives,
// exactly what the agents counted as acknowledged, and without scatter the server sees the
// fleet arrive in bursts.
func TestSimAgainstServer(t *testing.T) {
	s := startSimServer(t)
	common := []string{"--server", s.srv.MQTTAddr().String(), "--data", s.dir, "--api-server", s.api(), "--devices", "200",
		"--interval", "2s", "--sample-interval", "1s", "--keepalive", "30s"}

	sc := runSim(t, append(common, "--id-prefix", "acc", "--jitter", "2s", "--duration", "10s")...)
	end := sc.Started.Add(time.Duration((sc.RunSeconds + sc.DrainSeconds + 1) * float64(time.Second)))
	t.Logf("scatter: %d devices, %d sampled, %d acknowledged, %d batches, %d left, drained in %.1f s, credentials in %.2f s",
		sc.Devices, sc.Measurements.Sampled, sc.Measurements.Acknowledged, sc.Batches, sc.Measurements.BacklogAtEnd, sc.DrainSeconds, sc.Provisioning.Seconds)
	require.Equal(t, 200, sc.Devices)
	require.Equal(t, 200, sc.Provisioning.Issued)
	require.Equal(t, 200, sc.ConnectedAtEnd)
	require.Positive(t, sc.Measurements.Acknowledged)
	require.Zero(t, sc.Measurements.BacklogAtEnd, "the drain flushed every spool")
	require.Equal(t, sc.Measurements.Sampled, sc.Measurements.Acknowledged)
	var connects uint64
	for _, sec := range sc.Timeline {
		connects += sec.Connects
	}
	require.Equal(t, uint64(200), connects, "the timeline holds every connect")

	// Every stored sample of the run's devices, the server's own series aside.
	devices := map[string]bool{}
	samples := 0
	for _, r := range s.query(t, `{device=~"acc-.+", __name__!~"millwright_.*"}[10m]`, end) {
		devices[r.Metric["device"]] = true
		samples += len(r.Values)
	}
	distinct := s.scalar(t, `count(count by (device) ({device=~"acc-.+", __name__!~"millwright_.*"}))`, end)
	t.Logf("PromQL: %d devices (%v by count by (device)), %d samples", len(devices), distinct, samples)
	require.Len(t, devices, 200)
	require.Equal(t, 200.0, distinct)
	require.Equal(t, int(sc.Measurements.Acknowledged), samples, "the server stored exactly what the agents saw acknowledged")

	peak, mean, n := s.arrivalPeakToMean(t, "acc", sc.Started.Add(2*time.Second), sc.Started.Add(time.Duration(sc.RunSeconds*float64(time.Second))))
	scatterRatio := float64(peak) / mean
	t.Logf("scatter (interval 2 s + jitter 2 s): %d batches arrived, mean %.1f per 100 ms, peak %d: peak-to-mean %.1f", n, mean, peak, scatterRatio)

	sy := runSim(t, append(common, "--id-prefix", "syn", "--sync", "--duration", "8s")...)
	require.Equal(t, sy.Measurements.Sampled, sy.Measurements.Acknowledged)
	peak, mean, n = s.arrivalPeakToMean(t, "syn", sy.Started.Add(2*time.Second), sy.Started.Add(time.Duration(sy.RunSeconds*float64(time.Second))))
	syncRatio := float64(peak) / mean
	t.Logf("--sync (interval 2 s, no jitter): %d batches arrived, mean %.1f per 100 ms, peak %d: peak-to-mean %.1f", n, mean, peak, syncRatio)
	require.Positive(t, n)
	require.Greater(t, syncRatio, 3*scatterRatio, "without scatter the arrivals are much peakier")

	// A second run with the same data directory reuses the devices. With --register=false it
	// leaves the API alone (nothing listens at this --api-server): the server knows them.
	again := runSim(t, "--server", s.srv.MQTTAddr().String(), "--data", s.dir, "--api-server", "https://"+freeAddr(t),
		"--register=false", "--devices", "200", "--id-prefix", "acc", "--metrics", "idle", "--duration", "1s")
	require.Equal(t, 200, again.Provisioning.Reused)
	require.Zero(t, again.Provisioning.Issued)
	require.Zero(t, again.Provisioning.Registered)
}

// TestSimFaultyFirmware: devices on a firmware that drops its connection every 2 s on average
// drop at about that rate, the agents see every drop as a lost connection and reconnect, and
// devices on other firmware are left alone.
func TestSimFaultyFirmware(t *testing.T) {
	s := startSimServer(t)
	profile := filepath.Join(t.TempDir(), "fleet.yml")
	require.NoError(t, os.WriteFile(profile, []byte(`
profiles:
  - {name: stable, firmware_version: 2.0.3}
  - {name: canary, firmware_version: 2.1.0}
firmware:
  - {version: 2.1.0, drop_interval: 2s}
`), 0o644))
	sm := runSim(t, "--server", s.srv.MQTTAddr().String(), "--data", s.dir, "--api-server", s.api(), "--devices", "40", "--id-prefix", "fw",
		"--profile", profile, "--metrics", "idle", "--backoff-base", "100ms", "--duration", "8s")
	require.Len(t, sm.Profiles, 2)
	stable, canary := sm.Profiles[0], sm.Profiles[1]
	drops := sm.Injected.FirmwareDrops
	// 20 devices, each connected most of the time, for the run and the drain.
	want := float64(canary.Devices) * (sm.RunSeconds + sm.DrainSeconds) / 2
	t.Logf("%d canary devices, mean time between drops 2 s, %.1f s: %d firmware drops (%.0f expected if always connected), %d lost connections seen by the agents (%v); stable devices lost %d",
		canary.Devices, sm.RunSeconds+sm.DrainSeconds, drops, want, canary.Reconnects, sm.ReconnectsByCause, stable.Reconnects)
	require.Equal(t, 20, canary.Devices)
	require.Zero(t, stable.Reconnects)
	// Reconnecting takes a little of each device's time (backoff, TLS, CONNACK), during which it
	// cannot drop, so the mean runs a little below want; ±50 % is more than 3σ of a Poisson
	// count of about 80 either way.
	require.GreaterOrEqual(t, float64(drops), 0.5*want)
	require.LessOrEqual(t, float64(drops), 1.5*want)
	require.GreaterOrEqual(t, float64(sm.ReconnectsByCause["network"]), 0.9*float64(drops), "the agents saw the drops")
	require.LessOrEqual(t, sm.ReconnectsByCause["network"], drops)
}
