package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/aggregate"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

func overlayLocal() Config {
	c := DefaultConfig()
	c.TLS.CertFile, c.TLS.KeyFile = "device.crt", "device.key"
	c.Sources.System = &source.SystemOptions{Interval: 30 * time.Second, ProcRoot: "/host/proc"}
	return c
}

// TestRemoteOverlay lays desired configurations over a local one: what is applied, what is
// refused and why. The local configuration is never changed, and the result is valid.
func TestRemoteOverlay(t *testing.T) {
	cases := []struct {
		name    string
		doc     string
		applied []string
		refused map[string]string // key → words of the reason
		check   func(t *testing.T, c Config)
	}{
		{name: "empty", doc: `{}`},
		{name: "null", doc: `null`},
		{name: "settable keys", doc: `{"schedule": {"interval": "30s", "jitter": "0s", "max_batches_per_cycle": 3},
			"batch": {"max_records": 200, "max_bytes": 8192, "min_window": "1s", "max_window": "2m", "slow_link": "5s"},
			"health": {"interval": "0s"}, "log": {"level": "debug"}, "uplink": {"keepalive": "25s"}}`,
			applied: []string{"batch.max_bytes", "batch.max_records", "batch.max_window", "batch.min_window", "batch.slow_link", "health.interval",
				"log.level", "schedule.interval", "schedule.jitter", "schedule.max_batches_per_cycle", "uplink.keepalive"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, 30*time.Second, c.Schedule.Interval)
				require.Zero(t, c.Schedule.Jitter)
				require.Equal(t, 3, c.Schedule.MaxBatchesPerCycle)
				require.Equal(t, BatchConfig{MaxRecords: 200, MaxBytes: 8192, MinWindow: time.Second, MaxWindow: 2 * time.Minute, SlowLink: 5 * time.Second}, c.Batch)
				require.Zero(t, c.Health.Interval)
				require.Equal(t, "debug", c.Log.Level)
				require.Equal(t, 25*time.Second, c.Uplink.Keepalive)
				require.Equal(t, FirstSendSpread, c.Schedule.FirstSend, "not set remotely: the local value")
			}},
		{name: "local-only keys", doc: `{"tls": {"cert_file": "/tmp/evil.crt"}, "uplink": {"zone": "evil.example", "dev_address": "10.0.0.1:1"},
			"spool": {"dir": "/tmp"}, "schedule": {"first_send": "immediate"}, "sources": {"exec": [{"name": "x", "command": "/bin/sh"}],
			"system": {"proc_root": "/", "interval": "1m"}}, "commands": {"allow_shell": true}, "identity": {"firmware_version": "9"}, "log": {"format": "json"}}`,
			applied: []string{"sources.system", "sources.system.interval"},
			refused: map[string]string{"tls": RefuseLocalOnly, "uplink.zone": RefuseLocalOnly, "uplink.dev_address": RefuseLocalOnly,
				"spool": RefuseLocalOnly, "schedule.first_send": RefuseLocalOnly, "sources.exec": RefuseLocalOnly,
				"sources.system.proc_root": RefuseLocalOnly, "commands": RefuseLocalOnly, "identity": RefuseLocalOnly, "log.format": RefuseLocalOnly},
			check: func(t *testing.T, c Config) {
				require.Equal(t, "device.crt", c.TLS.CertFile)
				require.Equal(t, DefaultZone, c.Uplink.Zone)
				require.False(t, c.Commands.AllowShell)
				require.Empty(t, c.Sources.Exec)
				require.Equal(t, "/host/proc", c.Sources.System.ProcRoot, "the local file's")
				require.Equal(t, time.Minute, c.Sources.System.Interval)
			}},
		{name: "unknown keys", doc: `{"schedul": {"interval": "1s"}, "schedule": {"intervall": "1s"}, "firmware": "2.0"}`,
			refused: map[string]string{"schedul": RefuseUnknown, "schedule.intervall": RefuseUnknown, "firmware": RefuseUnknown}},
		{name: "values of the wrong form", doc: `{"schedule": {"interval": "soon", "jitter": 5, "max_batches_per_cycle": "many"}, "log": {"level": "loud"},
			"batch": {"max_records": 500}}`,
			applied: []string{"batch.max_records"},
			refused: map[string]string{"schedule.interval": `invalid duration "soon"`, "schedule.jitter": `invalid duration "5"`,
				"schedule.max_batches_per_cycle": `"many" is not a valid int`, "log.level": `"loud" is not debug, info, warn or error`},
			check: func(t *testing.T, c Config) {
				require.Equal(t, 45*time.Second, c.Schedule.Interval)
				require.Equal(t, 500, c.Batch.MaxRecords)
			}},
		{name: "values out of range", doc: `{"schedule": {"interval": "0s"}, "batch": {"max_records": 20000, "max_bytes": 2048}, "uplink": {"keepalive": "1500ms"}}`,
			applied: []string{"batch.max_bytes"},
			refused: map[string]string{"schedule.interval": "must be positive", "batch.max_records": "outside 1-10000", "uplink.keepalive": "whole seconds"}},
		{name: "against a local value", doc: `{"batch": {"min_window": "20m"}}`,
			refused: map[string]string{"batch.min_window": "batch.max_window: 10m0s is below batch.min_window 20m0s"}},
		{name: "together", doc: `{"batch": {"min_window": "20m", "max_window": "30m"}}`,
			applied: []string{"batch.max_window", "batch.min_window"}},
		{name: "null values", doc: `{"schedule": {"interval": null}, "batch": null}`,
			refused: map[string]string{"schedule.interval": "null is not a value", "batch": "expected an object"}},
		{name: "a section that is not one", doc: `{"schedule": "fast", "sources": [1]}`,
			refused: map[string]string{"schedule": "expected an object", "sources": "expected an object"}},
		{name: "system source off", doc: `{"sources": {"system": null}}`, applied: []string{"sources.system"},
			check: func(t *testing.T, c Config) { require.Nil(t, c.Sources.System) }},
		{name: "system source settings", doc: `{"sources": {"system": {"collectors": ["uptime", "load"], "interval": "10ms", "mount_points": ["/data"], "interfaces": ["eth*"]}}}`,
			applied: []string{"sources.system", "sources.system.collectors", "sources.system.interfaces", "sources.system.mount_points"},
			refused: map[string]string{"sources.system.interval": "below the minimum of 1s"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, []string{"uptime", "load"}, c.Sources.System.Collectors)
				require.Equal(t, 30*time.Second, c.Sources.System.Interval, "refused: the local value")
			}},
		{name: "system source bad collector", doc: `{"sources": {"system": {"collectors": ["cpu", "gpu"]}}}`,
			applied: []string{"sources.system"},
			refused: map[string]string{"sources.system.collectors": `unknown collector "gpu"`}},
		{name: "aggregation", doc: `{"sources": {"aggregate": [{"metric": "temp_*", "window": "1m", "functions": ["mean"]}]}}`,
			applied: []string{"sources.aggregate"},
			check: func(t *testing.T, c Config) {
				require.Equal(t, []aggregate.Rule{{Metric: "temp_*", Window: time.Minute, Functions: []aggregate.Func{aggregate.Mean}}}, c.Sources.Aggregate)
			}},
		{name: "aggregation refused whole", doc: `{"sources": {"aggregate": [{"metric": "a", "window": "1m"}, {"metric": "b", "window": "10ms"}]}}`,
			refused: map[string]string{"sources.aggregate": "sources.aggregate[1]: "}},
		{name: "aggregation unknown field", doc: `{"sources": {"aggregate": [{"metric": "a", "window": "1m", "every": "1s"}]}}`,
			refused: map[string]string{"sources.aggregate": "sources.aggregate[0].every: unknown key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local := overlayLocal()
			before := overlayLocal()
			ov := overlayRemote(local, json.RawMessage(tc.doc), true)
			require.Equal(t, before, local, "the local configuration is left alone")
			require.NoError(t, ov.cfg.Validate())
			applied := slices.Sorted(maps.Keys(ov.applied))
			if tc.applied == nil {
				tc.applied = []string{}
			}
			require.Equal(t, tc.applied, append([]string{}, applied...), "applied")
			require.Len(t, ov.refused, len(tc.refused), "refused %v", ov.refused)
			for k, words := range tc.refused {
				require.Contains(t, ov.refused[k], words, "reason for %s", k)
			}
			if tc.check != nil {
				tc.check(t, ov.cfg)
			}
		})
	}
	// Without a level variable, log.level cannot be set.
	ov := overlayRemote(overlayLocal(), json.RawMessage(`{"log": {"level": "debug"}}`), false)
	require.Equal(t, "info", ov.cfg.Log.Level)
	require.Contains(t, ov.refused["log.level"], "sets its own log level")
}

// TestRemoteSchemaMatchesAgent: the JSON Schema the server checks desired configurations
// with names exactly the keys the agent takes remotely.
func TestRemoteSchemaMatchesAgent(t *testing.T) {
	var schema map[string]any
	require.NoError(t, json.Unmarshal(RemoteConfigSchema, &schema))
	var leaves []string
	var walk func(prefix string, node map[string]any)
	walk = func(prefix string, node map[string]any) {
		props, ok := node["properties"].(map[string]any)
		require.Equal(t, false, node["additionalProperties"], "%s: closed to other keys", orRoot(prefix))
		require.True(t, ok, prefix)
		for k, v := range props {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			child := v.(map[string]any)
			if _, nested := child["properties"]; nested && child["type"] != "array" {
				walk(p, child)
				continue
			}
			leaves = append(leaves, p)
		}
	}
	walk("", schema)
	slices.Sort(leaves)
	require.Equal(t, remoteLeaves, leaves)
	for _, k := range leaves {
		require.True(t, knownKey(k), "%s is a key of the agent's configuration", k)
	}
}

// TestRemoteConfigLive applies desired configurations to a running agent: the log level at
// once, the schedule and batch settings for the next cycle, the health loop and the system
// source restarted; it reports each, keeps the last for the next start, and ignores an
// older version.
func TestRemoteConfigLive(t *testing.T) {
	clk := clock.NewFake(t0)
	dir := filepath.Join(t.TempDir(), "spool")
	level := new(slog.LevelVar)
	mk := func() (*Agent, *fakeUplink) {
		cfg := DefaultConfig()
		cfg.TLS.CertFile = "testdata/certs/pump-7.crt"
		cfg.TLS.KeyFile = "testdata/certs/pump-7.key"
		cfg.Spool.Dir = dir
		cfg.Spool.Sync = spool.SyncNever
		cfg.Health.Interval = 0
		cfg.Schedule.Interval = time.Hour
		a, err := New(cfg, Options{Clock: clk, LogLevel: level, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))})
		require.NoError(t, err)
		up := &fakeUplink{up: true}
		a.up = up
		return a, up
	}
	a, up := mk()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	clk.BlockUntil(2) // the send schedule and the spool's sync loop

	reports := func() []protocol.ReportedConfig {
		var out []protocol.ReportedConfig
		for _, m := range up.messages() {
			if m.kind == chReported {
				rc, err := protocol.DecodeReportedConfig(m.body)
				require.NoError(t, err)
				out = append(out, rc)
			}
		}
		return out
	}
	waitReports := func(n int) protocol.ReportedConfig {
		require.Eventually(t, func() bool { return len(reports()) >= n }, 10*time.Second, time.Millisecond)
		return reports()[n-1]
	}

	a.receiveMQTT("mw/v1/pump-7/config", []byte(`{"version": 3, "config": {"log": {"level": "debug"}, "health": {"interval": "10s"},
		"schedule": {"max_batches_per_cycle": 2}, "batch": {"max_records": 7},
		"sources": {"system": {"interval": "5s", "collectors": ["uptime"]}}, "spool": {"max_bytes": 1}}}`))
	rc := waitReports(1)
	require.Equal(t, int64(3), rc.Version)
	require.JSONEq(t, `{"batch": {"max_records": 7}, "health": {"interval": "10s"}, "log": {"level": "debug"}, "schedule": {"max_batches_per_cycle": 2},
		"sources": {"system": {"collectors": ["uptime"], "interval": "5s"}}}`, string(rc.Applied))
	require.Equal(t, map[string]string{"spool": RefuseLocalOnly}, rc.Refused)
	require.Equal(t, slog.LevelDebug, level.Level())
	a.winMu.Lock()
	require.Equal(t, 2, a.maxPerCycle)
	require.Equal(t, 7, a.batchCfg.MaxRecords)
	a.winMu.Unlock()
	st := a.Stats()
	require.Equal(t, int64(3), st.ConfigVersion)
	require.Equal(t, 1, st.ConfigRefused)

	// The health loop and the system source started: both write at their intervals.
	clk.BlockUntil(4)
	clk.Advance(10 * time.Second)
	require.Eventually(t, func() bool {
		names := map[string]bool{}
		recs, err := a.sp.ReadFrom(0, 1000, 0)
		require.NoError(t, err)
		for _, r := range recs {
			p, _, err := protocol.Decode(r.Payload, t0, protocol.DefaultLimits())
			require.NoError(t, err)
			for _, m := range p.Measurements {
				names[m.Name] = true
			}
		}
		return names[HealthConfigVersion] && names["system_uptime"]
	}, 10*time.Second, 10*time.Millisecond)

	// The same version again: reported again, nothing applied. An older one: ignored,
	// the current one reported.
	a.receiveMQTT("mw/v1/pump-7/config", []byte(`{"version": 3, "config": {}}`))
	require.Equal(t, int64(3), waitReports(2).Version)
	a.receiveMQTT("mw/v1/pump-7/config", []byte(`{"version": 2, "config": {"log": {"level": "error"}}}`))
	require.Equal(t, int64(3), waitReports(3).Version)
	require.Equal(t, slog.LevelDebug, level.Level())

	// A newer one without the keys: the local values return, the sources stop.
	a.receiveMQTT("mw/v1/pump-7/config", []byte(`{"version": 4, "config": {"schedule": {"interval": "2h"}}}`))
	rc = waitReports(4)
	require.Equal(t, int64(4), rc.Version)
	require.JSONEq(t, `{"schedule": {"interval": "2h"}}`, string(rc.Applied))
	require.Equal(t, slog.LevelInfo, level.Level())
	a.winMu.Lock()
	require.Equal(t, 10, a.maxPerCycle)
	require.Equal(t, 2*time.Hour, a.sched.interval)
	a.winMu.Unlock()
	require.Eventually(t, func() bool { return clk.Pending() == 2 }, 10*time.Second, time.Millisecond, "health loop and system source stopped")

	// A malformed configuration is counted and ignored.
	a.receiveMQTT("mw/v1/pump-7/config", []byte(`{"version": "five"}`))
	require.Equal(t, uint64(1), a.Stats().ChannelMalformed)

	cancel()
	require.NoError(t, <-done)

	// After a restart the kept configuration applies again, over the local file.
	level.Set(slog.LevelWarn)
	b, _ := mk()
	defer b.Close()
	require.Equal(t, 2*time.Hour, b.cfg.Schedule.Interval)
	require.Equal(t, int64(4), b.Stats().ConfigVersion)
	require.Equal(t, slog.LevelInfo, level.Level(), "set from the configuration in effect")
	kept, err := os.ReadFile(filepath.Join(dir, RemoteConfigFile))
	require.NoError(t, err)
	require.JSONEq(t, `{"version": 4, "config": {"schedule": {"interval": "2h"}}}`, string(kept))
}

// TestAggregationSwap: a remote configuration that sets aggregation rules puts a new
// aggregation stage in front of the spool while sources write; removing them writes the open
// windows and passes samples through again.
func TestAggregationSwap(t *testing.T) {
	clk := clock.NewFake(t0)
	a, up := newUnitAgent(t, clk, nil)
	a.applyDesired(context.Background(), protocol.DesiredConfig{Version: 1, Config: json.RawMessage(`{"sources": {"aggregate": [{"metric": "m", "window": "1m", "functions": ["count"]}]}}`)})
	require.NotNil(t, a.stage.current())
	writeN(t, a, clk, 0, 5)
	require.Zero(t, a.Stats().Spool.Records, "folded into the open window")
	a.applyDesired(context.Background(), protocol.DesiredConfig{Version: 2, Config: json.RawMessage(`{}`)})
	require.Nil(t, a.stage.current())
	writeN(t, a, clk, 10, 2)
	clk.Advance(time.Minute)
	require.Equal(t, 1, a.cycle(context.Background(), true).sent)
	got := map[string][]float64{}
	for _, m := range up.batches()[0].Measurements {
		got[m.Name] = append(got[m.Name], m.Value)
	}
	require.Equal(t, map[string][]float64{"m_count": {5}, "m": {10, 11}}, got)
	require.Len(t, up.messages(), 2, "two reports")
	require.True(t, strings.Contains(string(up.messages()[1].body), `"version":2`))
	require.False(t, reflect.DeepEqual(up.messages()[0], up.messages()[1]))
}
