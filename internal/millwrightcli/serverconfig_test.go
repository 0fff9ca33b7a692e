package millwrightcli

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/yamlconf"
)

const serverTestdata = "testdata/server"

// TestServerConfig reads each sample configuration in testdata/server, with the flags of its
// case laid over it: a good one gives the defaults changed by want, a bad one its error, the
// key or flag at fault named (and, through the command, exit code 2).
func TestServerConfig(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		file string // in testdata/server; empty: flags only
		args []string
		want func(*serverConfig)
		err  string
	}{
		{file: "empty.good.yml"},
		{file: "minimal.good.yml", want: func(c *serverConfig) {
			c.DataDir, c.Zone, c.MQTT.Listen = "/var/lib/millwright", "gw.example.com", "127.0.0.1:8883"
			c.ServerNames = []string{"mw1.example.com", "192.0.2.10"}
		}},
		{file: "durations.good.yml", want: func(c *serverConfig) {
			c.ShutdownTimeout = 90 * time.Second
			c.Enroll.CertValidity = 365 * day
			c.TSDB.Retention, c.TSDB.OutOfOrderWindow, c.TSDB.QueryTimeout = 14*day, 36*time.Hour, 30*time.Second
			c.MQTT.HelloTimeout = 5 * time.Second
		}},
		{file: "relative-paths.good.yml", want: func(c *serverConfig) {
			c.DataDir = filepath.Join(serverTestdata, "state")
			c.CACert, c.CAKey = filepath.Join(serverTestdata, "pki/ca.pem"), "/etc/millwright/ca.key"
		}},
		{file: "limits.good.yml", want: func(c *serverConfig) {
			c.LogLevel = "debug"
			c.Ingest.Limits.MaxPayload, c.Ingest.MaxSeriesPerDevice = 512<<10, 50_000
			c.HTTP.MaxConnections, c.HTTP.MaxConnectionsPerSource = -1, 2048
			c.MQTT.ReceiveMaximum = 65535
			c.API.QueryMaxConcurrency = 8
		}},

		// Flags given on the command line override the file, keys it leaves out included;
		// relative paths given as flags stay relative to the working directory.
		{file: "durations.good.yml", args: []string{"--retention", "30d", "--data", "here", "--server-name", "a", "--server-name", "b"}, want: func(c *serverConfig) {
			c.ShutdownTimeout = 90 * time.Second
			c.Enroll.CertValidity = 365 * day
			c.TSDB.Retention, c.TSDB.OutOfOrderWindow, c.TSDB.QueryTimeout = 30*day, 36*time.Hour, 30*time.Second
			c.MQTT.HelloTimeout = 5 * time.Second
			c.DataDir, c.ServerNames = "here", []string{"a", "b"}
		}},
		{file: "relative-paths.good.yml", args: []string{"--data", "state", "--fsync", "never"}, want: func(c *serverConfig) {
			c.DataDir, c.TSDB.Sync = "state", tsdb.SyncNever
			c.CACert, c.CAKey = filepath.Join(serverTestdata, "pki/ca.pem"), "/etc/millwright/ca.key"
		}},
		// A flag mends a value the file got wrong, and a flag that is wrong is named as such.
		{file: "negative-duration.bad.yml", args: []string{"--retention", "1d"}, want: func(c *serverConfig) {
			c.TSDB.Sync, c.TSDB.Retention = tsdb.SyncNever, day
		}},
		{file: "minimal.good.yml", args: []string{"--retention", "0s"}, err: "invalid --retention 0s: must be positive"},
		{args: []string{"--mqtt-max-keepalive", "0"}, err: "invalid --mqtt-max-keepalive 0: must be positive"},
		{file: "dormant-off.good.yml", want: func(c *serverConfig) { c.Enroll.DormantReenrollWindow = 0 }},
		{args: []string{"--dormant-reenroll-window", "5y"}, want: func(c *serverConfig) { c.Enroll.DormantReenrollWindow = 5 * 365 * day }},
		{args: []string{"--dormant-reenroll-window", "-1d"}, err: "invalid --dormant-reenroll-window -1d: must be positive, or 0 to turn dormant re-enrollment off"},

		{file: "alerting.good.yml", want: func(c *serverConfig) {
			c.Alerting.RuleFiles = []string{filepath.Join(serverTestdata, "rules/plant.yml"), "/etc/millwright/rules/*.yml"}
			c.Alerting.DefaultRules, c.Alerting.EvaluationInterval = false, time.Minute
			c.Alerting.Alertmanagers = []string{"http://127.0.0.1:9093"}
			c.Alerting.Webhooks = []string{"https://hooks.example.com/millwright"}
		}},
		{args: []string{"--rules", "a.yml", "--rules", "b,c.yml", "--default-rules=false", "--alertmanager", "http://am:9093", "--alert-webhook", "http://hook/x", "--rules-interval", "15s"}, want: func(c *serverConfig) {
			c.Alerting.RuleFiles = []string{"a.yml", "b,c.yml"}
			c.Alerting.DefaultRules, c.Alerting.EvaluationInterval = false, 15*time.Second
			c.Alerting.Alertmanagers, c.Alerting.Webhooks = []string{"http://am:9093"}, []string{"http://hook/x"}
		}},
		{args: []string{"--rules-interval", "0s"}, err: "invalid --rules-interval 0s: must be positive"},
		{args: []string{"--alert-webhook", "hook"}, err: `invalid --alert-webhook "hook": want an absolute http:// or https:// URL`},
		{file: "alerting-bad-url.bad.yml", err: `invalid alerting.alertmanagers "am:9093" in testdata/server/alerting-bad-url.bad.yml (line 2): want an absolute http:// or https:// URL`},
		{args: []string{"--anomaly-window", "1h", "--anomaly-baseline-windows", "24"}, want: func(c *serverConfig) {
			c.Anomaly.Window, c.Anomaly.BaselineWindows = time.Hour, 24
		}},
		{args: []string{"--anomaly-window", "5s"}, err: "invalid --anomaly-window 5s: must be a whole number of seconds, at least 10s"},
		{args: []string{"--anomaly-baseline-windows", "2"}, err: "invalid --anomaly-baseline-windows 2: must be at least 3"},
		{args: []string{"--firmware-max-downloads", "32"}, want: func(c *serverConfig) { c.Firmware.MaxDownloads = 32 }},
		{args: []string{"--firmware-max-downloads", "0"}, err: "invalid --firmware-max-downloads 0: must be positive"},

		{file: "dns.good.yml", want: func(c *serverConfig) {
			c.Zone, c.DNSListen = "gw.example.org", "127.0.0.1:5353"
			c.DNS.TTL, c.DNS.RateLimit, c.DNS.MoveRate = 10*time.Second, 500, 20
			c.DNS.TSIGKeys = []string{"xfr-key:hmac-sha256:bWlsbHdyaWdodC10ZXN0LXRzaWcta2V5LTMyLWJ5dGU="}
			c.DNS.Secondaries = []string{"198.51.100.53:53"}
		}},
		{args: []string{"--dns-listen", ":5353", "--dns-ttl", "5s", "--dns-notify", "192.0.2.53:53", "--dns-move-rate", "7"}, want: func(c *serverConfig) {
			c.DNSListen, c.DNS.TTL, c.DNS.Secondaries, c.DNS.MoveRate = ":5353", 5*time.Second, []string{"192.0.2.53:53"}, 7
		}},
		{file: "dns-bad-ttl.bad.yml", err: "invalid dns.ttl 2h in testdata/server/dns-bad-ttl.bad.yml (line 3): must be 1s to 1h"},
		{file: "dns-bad-key.bad.yml", err: `invalid dns.tsig_keys "xfr-key:md5:…" in testdata/server/dns-bad-key.bad.yml (line 2): TSIG key xfr-key: algorithm "md5": want hmac-sha256, hmac-sha384, hmac-sha512 or hmac-sha1`},
		{args: []string{"--dns-rate-limit", "0"}, err: "invalid --dns-rate-limit 0: must be positive"},
		{args: []string{"--dns-notify", "192.0.2.53"}, err: `invalid --dns-notify "192.0.2.53": want host:port`},
		{file: "unknown-key.bad.yml", err: `config testdata/server/unknown-key.bad.yml: tsdb.retension: unknown key (line 2); did you mean "retention"?`},
		{file: "unknown-top.bad.yml", err: "fsync: unknown key (line 2)"},
		{file: "hidden-field.bad.yml", err: "mqtt.clock: unknown key (line 2)"},
		{file: "repeated-key.bad.yml", err: "zone: key given twice (line 3)"},
		{file: "bad-duration.bad.yml", err: `tsdb.retention: invalid duration "90 days": write a number with a unit, such as 90s, 15m, 36h, 90d or 2w (line 2)`},
		{file: "negative-duration.bad.yml", err: "invalid tsdb.retention -1d in testdata/server/negative-duration.bad.yml (line 3): must be positive"},
		{file: "zero-bound.bad.yml", err: "invalid http.max_connections 0 in testdata/server/zero-bound.bad.yml (line 3): give a bound, or a negative value for none"},
		{file: "no-flag-bound.bad.yml", err: "invalid ingest.max_pending_batches 0 in testdata/server/no-flag-bound.bad.yml (line 2): must be positive"},
		{file: "bad-fsync.bad.yml", err: `invalid tsdb.fsync "sometimes" in testdata/server/bad-fsync.bad.yml (line 2): unknown fsync policy "sometimes"`},
		{file: "bad-log-level.bad.yml", err: `invalid log_level "loud" in testdata/server/bad-log-level.bad.yml (line 1): want debug, info, warn or error`},
		{file: "out-of-range.bad.yml", err: `mqtt.receive_maximum: "65536" is not a valid uint16 (line 2)`},
		{file: "not-a-section.bad.yml", err: "mqtt: expected a section of keys, not a single value (line 1)"},
		{file: "not-a-list.bad.yml", err: "server_names: expected a list (line 1)"},
		{file: "half-a-ca.bad.yml", err: `invalid ca_key "": an operator-supplied CA needs both a certificate and its key`},
		{file: "missing.yml", err: "read config: open testdata/server/missing.yml: no such file or directory"},
	}
	used := map[string]bool{}
	for _, tc := range cases {
		used[tc.file] = true
		t.Run(tc.file+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append([]string{"--config", filepath.Join(serverTestdata, tc.file)}, args...)
			}
			c := newServerCommand()
			require.NoError(t, c.cmd.ParseFlags(args))
			got, err := c.resolve()
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				var u usageError
				require.ErrorAs(t, err, &u)
				code, _, stderr := run(append([]string{"server"}, args...)...)
				require.Equal(t, 2, code)
				require.Contains(t, stderr, tc.err)
				return
			}
			require.NoError(t, err)
			want := defaultServerConfig()
			if tc.want != nil {
				tc.want(&want)
			}
			if tc.file != "" {
				want.ConfigFile = filepath.Join(serverTestdata, tc.file) // backups include it
			}
			require.Equal(t, want, got)
		})
	}
	fixtures, err := filepath.Glob(filepath.Join(serverTestdata, "*.yml"))
	require.NoError(t, err)
	for _, f := range fixtures {
		require.True(t, used[filepath.Base(f)], "%s has no case in TestServerConfig", f)
	}
}

// TestServerFlagsAreConfigKeys: every flag of millwright server but --config is a key of the
// configuration file, and sets the same option as the key.
func TestServerFlagsAreConfigKeys(t *testing.T) {
	c := newServerCommand()
	var flags []string
	c.cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" {
			return
		}
		flags = append(flags, f.Name)
		key, ok := serverFlagKeys[f.Name]
		require.True(t, ok, "--%s has no configuration key in serverFlagKeys", f.Name)
		field, ok := yamlconf.Lookup(&c.cfg, key)
		require.True(t, ok, "--%s: %s is no configuration key", f.Name, key)
		// The flag is bound to the field its key names: setting one sets the other.
		before := reflect.ValueOf(field.Interface())
		require.NoError(t, f.Value.Set(sampleFlagValue(f)), f.Name)
		require.NotEqual(t, before.Interface(), field.Interface(), "--%s does not set %s", f.Name, key)
	})
	require.Len(t, serverFlagKeys, len(flags), "serverFlagKeys names a flag that does not exist")
}

func sampleFlagValue(f *pflag.Flag) string {
	switch f.Value.Type() {
	case "duration":
		return "3d"
	case "int", "uint16":
		return "7"
	case "float64":
		return "5"
	case "stringSlice":
		return "x.example.com"
	case "bool":
		return strconv.FormatBool(f.DefValue != "true")
	}
	if f.Name == "fsync" {
		return "never"
	}
	return "sample"
}

// TestServerConfigDocs: docs/operations.md shows the whole configuration file, every key
// with its default, and the file it shows is valid.
func TestServerConfigDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)## Configuration file\n.*?```yaml\n(.*?)```").FindSubmatch(doc)
	require.NotNil(t, m, "docs/operations.md has no YAML example under ## Configuration file")
	got := defaultServerConfig()
	lines, err := serverConfigDecoder.Decode(m[1], &got)
	require.NoError(t, err)
	var missing []string
	for _, k := range yamlconf.Keys(reflect.TypeFor[serverConfig]()) {
		if _, ok := lines[k]; !ok {
			missing = append(missing, k)
		}
	}
	require.Empty(t, missing, "keys missing from the example in docs/operations.md")
	require.NoError(t, got.Validate())

	want := defaultServerConfig()
	// Defaults that depend on the CPUs: the example shows them for two.
	want.MQTT.MaxConcurrentHandshakes, want.API.QueryMaxConcurrency = 16, 2
	want.ServerNames = []string{}
	want.Alerting.RuleFiles, want.Alerting.Alertmanagers, want.Alerting.Webhooks = []string{}, []string{}, []string{}
	want.DNS.Nameservers, want.DNS.NameserverAddresses, want.DNS.TSIGKeys, want.DNS.Secondaries = []string{}, []netip.Addr{}, []string{}, []string{}
	require.Equal(t, want, got, "the example in docs/operations.md differs from the defaults")

	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, flagList, ok := strings.Cut(string(readme), "Useful flags of `millwright server`")
	require.True(t, ok, "README.md has no list of the server's flags")
	flagList, _, _ = strings.Cut(flagList, "\n\n")
	require.Contains(t, flagList, "`--config server.yml`", "README.md's list of the server's flags does not mention --config")
}
