package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/yamlconf"
)

func TestLoadConfigBad(t *testing.T) {
	// Each bad fixture and the words its error must contain: the key's full
	// path first.
	cases := map[string][]string{
		"unknown-key.bad.yml":          {"uplink.keep_alive", "unknown key", "line 3", `did you mean "keepalive"`},
		"unknown-top.bad.yml":          {"schedul", "unknown key", "line 1", `did you mean "schedule"`},
		"bad-duration.bad.yml":         {"schedule.interval", `invalid duration "45 seconds"`, "line 2"},
		"bad-duration-nested.bad.yml":  {"uplink.backoff.cap", `invalid duration "5x"`, "line 3"},
		"missing-cert.bad.yml":         {"tls.cert_file", "does-not-exist.crt", "no such file"},
		"key-without-cert.bad.yml":     {"tls.cert_file", "required with tls.key_file"},
		"bad-transport.bad.yml":        {"uplink.transport", `"coap" is not a transport`},
		"ip-zone.bad.yml":              {"uplink.zone", "IP address"},
		"bad-keepalive.bad.yml":        {"uplink.keepalive", "whole seconds"},
		"bad-window.bad.yml":           {"batch.max_window", "below batch.min_window"},
		"bad-spool.bad.yml":            {"spool.sync", `"sometimes" is not one of always, batch, never`},
		"bad-int.bad.yml":              {"batch.max_records", `"many" is not a valid int`},
		"too-many-records.bad.yml":     {"batch.max_records", "outside 1-10000"},
		"duplicate-key.bad.yml":        {"health.interval", "given twice", "line 3"},
		"bad-exec.bad.yml":             {"sources.exec[0].intervall", "unknown key", `did you mean "interval"`},
		"zero-interval.bad.yml":        {"schedule.interval", "must be positive"},
		"section-scalar.bad.yml":       {"uplink", "expected a section of keys"},
		"bad-aggregate.bad.yml":        {"sources.aggregate[0]", "below the minimum of 1s"},
		"bad-jitter.bad.yml":           {"uplink.backoff.jitter", `"half" is not a jitter mode`, "line 3"},
		"bad-ota-timeout.bad.yml":      {"ota.confirm_timeout", "must be positive"},
		"missing-trusted-keys.bad.yml": {"ota.trusted_keys_file", "does-not-exist.pem", "no such file"},
		"bad-ota-install.bad.yml":      {"ota.install_command", "the program, is empty"},
		"bad-ota-delta.bad.yml":        {"ota.delta_max_bytes", "must be positive, got 0"},
		"bad-ota-battery.bad.yml":      {"ota.min_battery_percent", "want 0 to 100, got 101"},
	}
	files, err := filepath.Glob("testdata/config/*.bad.yml")
	require.NoError(t, err)
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	var want []string
	for n := range cases {
		want = append(want, n)
	}
	sort.Strings(want)
	require.Equal(t, want, names, "every bad fixture has a case and every case a fixture")

	for name, words := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := LoadConfig(filepath.Join("testdata/config", name))
			require.Error(t, err)
			require.ErrorIs(t, err, ErrConfig)
			for _, w := range words {
				require.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestLoadConfigGood(t *testing.T) {
	cfg, err := LoadConfig("testdata/config/empty.good.yml")
	require.NoError(t, err)
	require.Equal(t, DefaultConfig(), cfg)

	cfg, err = LoadConfig("testdata/config/full.good.yml")
	require.NoError(t, err)
	require.Equal(t, "pump-7", cfg.DeviceID)
	require.Equal(t, TransportHTTPS, cfg.Uplink.Transport)
	require.Equal(t, 25*time.Second, cfg.Uplink.Keepalive)
	require.Equal(t, 10*time.Minute, cfg.Uplink.Backoff.Cap)
	require.Equal(t, 2*time.Second, cfg.Uplink.Backoff.Base)
	require.Equal(t, "/tmp/mw-spool", cfg.Spool.Dir)
	require.Equal(t, "testdata/certs/pump-7.crt", cfg.TLS.CertFile, "relative to the configuration file")
	require.Equal(t, spool.SyncAlways, cfg.Spool.Sync)
	require.Equal(t, int64(16<<20), cfg.Spool.MaxBytes)
	require.Equal(t, 100*time.Millisecond, cfg.Spool.SyncInterval)
	require.Equal(t, 500, cfg.Batch.MaxRecords)
	require.Equal(t, 15*time.Second, cfg.Schedule.Jitter)
	require.Equal(t, FirstSendImmediate, cfg.Schedule.FirstSend)
	require.Equal(t, 4, cfg.Schedule.MaxBatchesPerCycle)
	require.Equal(t, 5*time.Minute, cfg.Health.Interval)
	require.Equal(t, "json", cfg.Log.Format)
	require.NotNil(t, cfg.Sources.System)
	require.Equal(t, 30*time.Second, cfg.Sources.System.Interval)
	require.Len(t, cfg.Sources.Exec, 1)
	require.Equal(t, []string{"--port", "/dev/ttyUSB0"}, cfg.Sources.Exec[0].Args)
	require.Equal(t, "127.0.0.1:8428", cfg.Sources.LocalAPI.Listen)
	require.Len(t, cfg.Sources.Aggregate, 1)
	require.Equal(t, time.Minute, cfg.Sources.Aggregate[0].Window)
	require.Len(t, cfg.Sources.Aggregate[0].Functions, 3)
	require.Equal(t, "testdata/ota/version", cfg.Identity.FirmwareVersionFile, "relative to the configuration file")
	require.Equal(t, OTAConfig{TrustedKeysFile: "testdata/ota/trusted.pem", Dir: "/tmp/mw-ota",
		InstallCommand: []string{"/usr/local/sbin/install-firmware", "--slot", "b"}, CommitCommand: []string{"/usr/local/sbin/firmware-commit"},
		RollbackCommand: []string{"/usr/local/sbin/firmware-rollback"}, ConfirmTimeout: 5 * time.Minute, MinFreeBytes: 1 << 20,
		MaxArtifactBytes: 100 << 20, DownloadTimeout: time.Hour, InstalledImage: "testdata/ota/installed.img", DeltaMaxBytes: 32 << 20,
		PowerCheckCommand: []string{"/usr/local/sbin/on-mains"}, BatteryCapacityFile: "/sys/class/power_supply/BAT0/capacity", MinBatteryPercent: 50}, cfg.OTA)
}

func TestParseConfigZeroMeansZero(t *testing.T) {
	// A key set to 0 is not replaced by its default.
	cfg, err := ParseConfig([]byte("schedule:\n  jitter: 0s\nhealth:\n  interval: 0\nsources:\n  system:\n"))
	require.NoError(t, err)
	require.Zero(t, cfg.Schedule.Jitter)
	require.Zero(t, cfg.Health.Interval)
	require.NotNil(t, cfg.Sources.System, `"system:" alone turns the source on`)
	require.Nil(t, cfg.Sources.LocalAPI)
}

func TestNewConfigErrors(t *testing.T) {
	dir := t.TempDir()
	base := func() Config {
		c := DefaultConfig()
		c.Spool.Dir = filepath.Join(dir, "spool")
		c.TLS.CertFile = "testdata/certs/pump-7.crt"
		c.TLS.KeyFile = "testdata/certs/pump-7.key"
		return c
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		words  []string
	}{
		{"no certificate", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "", "" }, []string{"tls.cert_file", "required"}},
		{"wrong key", func(c *Config) { c.TLS.KeyFile = "testdata/certs/ca.crt" }, []string{"tls.cert_file", "tls.key_file"}},
		{"device differs", func(c *Config) { c.DeviceID = "pump-8" }, []string{"device_id", `"pump-8" differs`, `"pump-7"`}},
		{"bad ca", func(c *Config) { c.TLS.CAFile = "testdata/certs/pump-7.key" }, []string{"tls.ca_file", "no PEM certificate"}},
		{"invalid device id", func(c *Config) { c.DeviceID = "Pump_7" }, []string{"device_id", "invalid device ID"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			_, err := New(c, Options{})
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrConfig), "error %v wraps ErrConfig", err)
			for _, w := range tc.words {
				require.Contains(t, err.Error(), w)
			}
		})
	}
	a, err := New(base(), Options{})
	require.NoError(t, err)
	require.Equal(t, "pump-7", a.DeviceID())
	require.NoError(t, a.Close())
}

// TestDocsListEveryKey keeps docs/agent.md complete: every configuration key
// must appear there, spelled as in YAML.
func TestDocsListEveryKey(t *testing.T) {
	doc, err := os.ReadFile("../docs/agent.md")
	require.NoError(t, err)
	var missing []string
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		if !strings.Contains(string(doc), "`"+k+"`") {
			missing = append(missing, k)
		}
	}
	require.Empty(t, missing, "keys missing from docs/agent.md (as `key.path`)")
}

// configKeys lists the dotted keys of a config struct (sources are
// documented by their package and only listed by section).
func configKeys(t reflect.Type, prefix string) []string {
	var out []string
	for name, idx := range yamlconf.Fields(t) {
		f := t.FieldByIndex(idx)
		k := yamlconf.Path(prefix, name)
		ft := f.Type
		if ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if prefix == "sources" || ft.Kind() != reflect.Struct || ft == reflect.TypeFor[time.Duration]() {
			out = append(out, k)
			continue
		}
		out = append(out, configKeys(ft, k)...)
	}
	return out
}

func TestExampleConfig(t *testing.T) {
	data, err := os.ReadFile("../packaging/agent.example.yml")
	require.NoError(t, err)
	cfg, err := ParseConfig(data)
	require.NoError(t, err)
	require.Equal(t, "gw.example.com", cfg.Uplink.Zone)
	require.Equal(t, 45*time.Second, cfg.Uplink.Keepalive)
}

func TestDecodeYAML(t *testing.T) {
	type inner struct {
		Wait time.Duration `yaml:"wait"`
	}
	type doc struct {
		Name  string  `yaml:"name"`
		Items []inner `yaml:"items"`
	}
	v := doc{Name: "kept"}
	require.NoError(t, DecodeYAML([]byte("items:\n  - wait: 5s\n"), &v))
	require.Equal(t, doc{Name: "kept", Items: []inner{{Wait: 5 * time.Second}}}, v)
	require.EqualError(t, DecodeYAML([]byte("items:\n  - wiat: 5s\n"), &v), `items[0].wiat: unknown key (line 2); did you mean "wait"?`)
	require.ErrorContains(t, DecodeYAML([]byte("name: [\n"), &v), "line")
}
