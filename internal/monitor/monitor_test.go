package monitor

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/promql"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/tsdb"
)

var testStart = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

type rig struct {
	t     *testing.T
	clk   *clock.Fake
	store *tsdb.Store
	reg   *registry.Registry
	mon   *Monitor
}

func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	clk := clock.NewFake(testStart)
	dir := t.TempDir()
	store, err := tsdb.Open(filepath.Join(dir, "tsdb"), tsdb.DefaultOptions(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	require.NoError(t, err)
	t.Cleanup(func() { _ = store.Close() })
	reg, err := registry.Open(context.Background(), "", dir, clk)
	require.NoError(t, err)
	t.Cleanup(func() { _ = reg.Close() })
	return &rig{t: t, clk: clk, store: store, reg: reg, mon: New(store, reg, opts, clk, nil, prometheus.NewRegistry())}
}

// device registers an active device with the facts given.
func (r *rig) device(id, firmware, model, operator string, interval time.Duration) {
	ctx := context.Background()
	_, err := r.reg.CreateDevice(ctx, id, map[string]string{"site": "north"}, []string{"line-1"}, "test", "")
	require.NoError(r.t, err)
	require.NoError(r.t, r.reg.SetStatus(ctx, id, registry.StatusActive, "test", ""))
	require.NoError(r.t, r.reg.ReportFacts(ctx, id, model, operator, firmware, r.clk.Now(), interval))
}

func (r *rig) flush() {
	r.t.Helper()
	require.NoError(r.t, r.mon.Flush(context.Background()))
}

// query evaluates q at the clock's time and returns each series' labels (as a string) and value.
func (r *rig) query(q string) map[string]float64 {
	r.t.Helper()
	eng := r.store.Engine()
	qry, err := eng.NewInstantQuery(context.Background(), r.store.Queryable(), nil, q, r.clk.Now())
	require.NoError(r.t, err)
	defer qry.Close()
	res := qry.Exec(context.Background())
	require.NoError(r.t, res.Err)
	out := map[string]float64{}
	switch v := res.Value.(type) {
	case promql.Vector:
		for _, s := range v {
			out[s.Metric.String()] = s.F
		}
	case promql.Scalar:
		out[""] = v.V
	}
	return out
}

func (r *rig) value(q string) float64 {
	r.t.Helper()
	got := r.query(q)
	require.Len(r.t, got, 1, "query %s: %v", q, got)
	for _, v := range got {
		return v
	}
	return 0
}

func connection(device string, start time.Time) *gateway.Connection {
	return &gateway.Connection{Device: device, Remote: "127.0.0.1:5000", TLSVersion: "TLS 1.3", MQTTVersion: 5, Start: start, Traffic: &gateway.Traffic{}}
}

func TestSeriesJoinDeviceFacts(t *testing.T) {
	r := newRig(t, DefaultOptions())
	r.device("dev-a", "2.0.3", "gw-200", "Telia", 0)
	r.device("dev-b", "2.1.0", "gw-200", "Telia", 0)

	a := connection("dev-a", r.clk.Now())
	r.mon.Connected(a)
	a.Traffic.ReceivedBytes.Add(100)
	a.Traffic.ReceivedPackets.Add(2)
	b := connection("dev-b", r.clk.Now())
	r.mon.Connected(b)
	r.flush()
	r.clk.Advance(30 * time.Second)
	b.Traffic.SentBytes.Add(40)
	r.mon.Disconnected(b, gateway.CauseKeepaliveTimeout, r.clk.Now())
	r.mon.Batch("dev-a", ResultAccepted, r.clk.Now().Add(-2*time.Second), r.clk.Now())
	r.mon.Batch("dev-a", "malformed", time.Time{}, r.clk.Now())
	r.mon.Feedback("dev-b", "crash")
	r.mon.Feedback("dev-b", "crash")
	r.flush()

	require.Equal(t, 1.0, r.value(`millwright_device_connected{device="dev-a"}`))
	require.Equal(t, 0.0, r.value(`millwright_device_connected{device="dev-b"}`))
	require.Equal(t, 100.0, r.value(`millwright_device_received_bytes_total{device="dev-a"}`))
	require.Equal(t, 40.0, r.value(`millwright_device_sent_bytes_total{device="dev-b"}`))
	require.Equal(t, 1.0, r.value(`millwright_device_disconnects_total{device="dev-b",cause="keepalive_timeout"}`))
	require.Empty(t, r.query(`millwright_device_disconnects_total{device="dev-b",cause="clean"}`), "a cause's series begins with its first disconnect")
	require.Equal(t, 0.0, r.value(`min_over_time(millwright_device_disconnects_total{device="dev-b",cause="keepalive_timeout"}[1m])`),
		"with a 0 at the previous write, so that increase() counts the first")
	require.Equal(t, 0.0, r.value(`min_over_time(millwright_device_batches_total{device="dev-a",result="malformed"}[1m])`))
	require.Equal(t, 30.0, r.value(`millwright_device_session_seconds_total{device="dev-b"}`))
	require.Equal(t, 30.0, r.value(`millwright_device_session_seconds_total{device="dev-a"}`), "a live session counts up to now")
	require.Equal(t, 2.0, r.value(`millwright_device_ingest_delay_seconds_sum{device="dev-a"}`))
	require.Equal(t, 1.0, r.value(`millwright_device_ingest_delay_seconds_count{device="dev-a"}`))
	require.Equal(t, 1.0, r.value(`millwright_device_batches_total{device="dev-a",result="malformed"}`))
	require.Equal(t, 2.0, r.value(`increase(millwright_device_feedback_total{device="dev-b",kind="crash"}[1m])`),
		"feedback events count from a 0 at the previous write")
	require.Empty(t, r.query(`millwright_device_feedback_total{device="dev-a"}`), "no feedback, no series")

	// The join the issue asks for: disconnects by firmware, through the info series.
	got := r.query(`sum by (firmware) (millwright_device_disconnects_total{cause!="clean"} * on (device) group_left (firmware) millwright_device_info)`)
	require.Equal(t, map[string]float64{`{firmware="2.1.0"}`: 1}, got)
	require.Equal(t, 2.0, r.value(`count(millwright_device_tag{key="site",value="north"})`))
	require.Equal(t, 2.0, r.value(`count(millwright_device_group{group="line-1"})`))

	// A firmware update shows at the next write, and leaves one info series per device: the
	// old one gets a stale marker, so joins keep working.
	require.NoError(t, r.reg.ReportFacts(context.Background(), "dev-b", "", "", "2.1.1", r.clk.Now(), 0))
	r.clk.Advance(15 * time.Second)
	r.flush()
	require.Equal(t, map[string]float64{`{__name__="millwright_device_info", device="dev-b", firmware="2.1.1", model="gw-200", operator="Telia"}`: 1},
		r.query(`millwright_device_info{device="dev-b"}`))

	// A revoked device leaves the fleet: its facts and state go stale at once.
	require.NoError(t, r.reg.SetStatus(context.Background(), "dev-b", registry.StatusRevoked, "test", ""))
	r.clk.Advance(15 * time.Second)
	r.flush()
	require.Empty(t, r.query(`millwright_device_info{device="dev-b"}`))
	require.Empty(t, r.query(`millwright_device_online{device="dev-b"}`))
	require.Equal(t, 1.0, r.value(`count(millwright_device_info)`))
}

func TestSilentAfterMultipleOfOwnInterval(t *testing.T) {
	r := newRig(t, DefaultOptions())
	r.device("slow", "1.0", "sb-10", "Vodafone", 6*time.Hour) // reports every 6 hours
	r.device("fast", "1.0", "sb-10", "Vodafone", 0)           // the default, 75 s
	r.flush()
	require.Equal(t, 1.0, r.value(`millwright_device_online{device="slow"}`))

	r.clk.Advance(10 * time.Minute)
	r.flush()
	require.Equal(t, 0.0, r.value(`millwright_device_silent{device="slow"}`), "a 6-hour device is not silent after 10 minutes")
	require.Equal(t, 1.0, r.value(`millwright_device_silent{device="fast"}`), "a 75-second device is, after 3 × 75 s")
	require.Equal(t, 6*3600.0, r.value(`millwright_device_expected_interval_seconds{device="slow"}`))

	r.clk.Advance(3*6*time.Hour - 10*time.Minute) // exactly 3 × 6 h: still due
	r.flush()
	require.Equal(t, 0.0, r.value(`millwright_device_silent{device="slow"}`))
	r.clk.Advance(time.Minute)
	r.flush()
	require.Equal(t, 1.0, r.value(`millwright_device_silent{device="slow"}`), "silent once 3 × 6 h have passed unheard")

	silent := r.mon.Liveness().InState(Silent)
	require.Len(t, silent, 2)
	require.Equal(t, IntervalReported, silent[1].IntervalSource)
	counts, err := r.mon.Liveness().Count("operator")
	require.NoError(t, err)
	require.Equal(t, []Count{{Value: "Vodafone", Silent: 2}}, counts)

	// Past OfflineAfter a silent device is offline: gone, not late.
	r.clk.Advance(8 * 24 * time.Hour)
	r.flush()
	require.Equal(t, 0.0, r.value(`millwright_device_silent{device="slow"}`))
	require.Equal(t, 0.0, r.value(`millwright_device_online{device="slow"}`))
	counts, err = r.mon.Liveness().Count("")
	require.NoError(t, err)
	require.Equal(t, []Count{{Offline: 2}}, counts)
	_, err = r.mon.Liveness().Count("colour")
	require.ErrorContains(t, err, `cannot count by "colour"`)
}

func TestConfiguredIntervalWhenNoneReported(t *testing.T) {
	r := newRig(t, DefaultOptions())
	r.device("cfg", "1.0", "sb-10", "Telia", 0)
	ctx := context.Background()
	_, err := r.reg.SetConfigLayer(ctx, registry.ScopeDevice, "cfg", []byte(`{"schedule":{"interval":"1h","jitter":"10m"}}`), "test", "")
	require.NoError(t, err)
	r.flush()
	l := r.mon.Liveness().Devices
	require.Len(t, l, 1)
	require.Equal(t, 70*time.Minute, l[0].Interval)
	require.Equal(t, IntervalConfigured, l[0].IntervalSource)
}

func TestSessionsRecordedAndPruned(t *testing.T) {
	opts := DefaultOptions()
	opts.SessionRetention = 24 * time.Hour
	r := newRig(t, opts)
	r.device("dev-a", "1.0", "m", "o", 0)
	for i, cause := range []gateway.Cause{gateway.CauseClean, gateway.CauseTakeover, gateway.CauseReset} {
		c := connection("dev-a", r.clk.Now())
		r.mon.Connected(c)
		c.Traffic.ReceivedBytes.Add(uint64(10 * (i + 1)))
		r.clk.Advance(time.Minute)
		r.mon.Disconnected(c, cause, r.clk.Now())
	}
	r.mon.Disconnected(connection("ghost", r.clk.Now()), gateway.CauseReset, r.clk.Now()) // unknown device: skipped
	r.flush()
	got, err := r.reg.DeviceSessions(context.Background(), "dev-a", 10, 0)
	require.NoError(t, err)
	require.Len(t, got, 3)
	sort.Slice(got, func(i, j int) bool { return got[i].ID < got[j].ID })
	require.Equal(t, "takeover", got[1].Cause)
	require.Equal(t, int64(20), got[1].ReceivedBytes)
	require.Equal(t, time.Minute, got[1].Duration())
	require.Equal(t, "TLS 1.3", got[1].TLSVersion)

	r.clk.Advance(25 * time.Hour)
	r.flush()
	got, err = r.reg.DeviceSessions(context.Background(), "dev-a", 10, 0)
	require.NoError(t, err)
	require.Empty(t, got, "pruned after the retention")
}

func TestPendingSessionsBounded(t *testing.T) {
	opts := DefaultOptions()
	opts.MaxPendingSessions = 2
	r := newRig(t, opts)
	r.device("dev-a", "1.0", "m", "o", 0)
	for range 5 {
		c := connection("dev-a", r.clk.Now())
		r.mon.Connected(c)
		r.mon.Disconnected(c, gateway.CauseReset, r.clk.Now())
	}
	r.flush()
	got, err := r.reg.DeviceSessions(context.Background(), "dev-a", 10, 0)
	require.NoError(t, err)
	require.Len(t, got, 2, "beyond the bound, sessions are counted as dropped, not kept")
	require.Equal(t, 5.0, r.value(`millwright_device_disconnects_total{device="dev-a",cause="reset"}`), "the counters lose nothing")
}

func TestOptionsValidate(t *testing.T) {
	require.NoError(t, DefaultOptions().Validate())
	for _, c := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Interval = 0 }, "invalid interval 0s: must be positive"},
		{func(o *Options) { o.Interval = time.Millisecond }, "invalid interval 1ms: must be at least 1s"},
		{func(o *Options) { o.SilentFactor = 0.5 }, "invalid silent_factor 0.5: must be between 1 and 1000"},
		{func(o *Options) { o.DefaultInterval = -time.Second }, "invalid default_interval -1s: must be positive"},
		{func(o *Options) { o.OfflineAfter = 0 }, "invalid offline_after 0s: must be positive"},
		{func(o *Options) { o.SessionRetention = 0 }, "invalid session_retention 0s: must be positive"},
		{func(o *Options) { o.MaxPendingSessions = 0 }, "invalid max_pending_sessions 0: must be positive"},
	} {
		o := DefaultOptions()
		c.mutate(&o)
		require.EqualError(t, o.Validate(), c.want)
	}
}

// TestDocumentedQueries runs every query of docs/operations.md ("Fleet monitoring: the
// questions and their queries") on the series the monitor writes: each parses, joins without
// a many-to-many match, and answers.
func TestDocumentedQueries(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)## Fleet monitoring: the questions and their queries\n.*?```promql\n(.*?)```").FindSubmatch(doc)
	require.NotNil(t, m, "docs/operations.md has no promql block under its fleet monitoring section")
	var queries []string
	var cur strings.Builder
	for _, line := range strings.Split(string(m[1]), "\n") {
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
			if cur.Len() > 0 {
				queries = append(queries, cur.String())
				cur.Reset()
			}
		case strings.HasPrefix(line, " ") && cur.Len() > 0:
			cur.WriteString(" " + strings.TrimSpace(line))
		default:
			if cur.Len() > 0 {
				queries = append(queries, cur.String())
				cur.Reset()
			}
			cur.WriteString(line)
		}
	}
	if cur.Len() > 0 {
		queries = append(queries, cur.String())
	}
	require.GreaterOrEqual(t, len(queries), 9)

	r := newRig(t, DefaultOptions())
	r.device("dev-a", "2.0.3", "gw-200", "Telia", 0)
	r.device("dev-b", "2.1.0", "gw-200", "Vodafone", 0)
	require.NoError(t, r.reg.SetGroups(context.Background(), "dev-a", []string{"line-3"}, nil, "test", ""))
	for range 5 {
		c := connection("dev-a", r.clk.Now())
		r.mon.Connected(c)
		c.Traffic.ReceivedBytes.Add(1000)
		r.mon.Batch("dev-a", ResultAccepted, r.clk.Now().Add(-time.Second), r.clk.Now())
		r.clk.Advance(time.Minute)
		r.mon.Disconnected(c, gateway.CauseReset, r.clk.Now())
		r.flush()
	}
	for _, q := range queries {
		got := r.query(q)
		require.NotEmpty(t, got, "query %s answers", q)
	}
}
