package millwrightcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/protocol"
)

// runIn is run with stdin as standard input.
func runIn(stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = mainIO(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// cliAgainst runs the command line against a server with its admin token.
type cliAgainst struct {
	t    testing.TB
	srv  *server.Server
	conn []string
}

func newCLI(t testing.TB, srv *server.Server) *cliAgainst {
	return &cliAgainst{t: t, srv: srv, conn: []string{"--server", "https://" + srv.HTTPAddr().String(), "--data", srv.DataDir()}}
}

// run runs a command and returns its exit status and output.
func (c *cliAgainst) run(stdin string, args ...string) (int, string, string) {
	return runIn(stdin, append(args, c.conn...)...)
}

// ok runs a command that must succeed and returns its standard output.
func (c *cliAgainst) ok(args ...string) string {
	c.t.Helper()
	code, stdout, stderr := c.run("", args...)
	require.Zero(c.t, code, "%v: %s", args, stderr)
	return stdout
}

// decode decodes a command's JSON output into v, refusing fields v does not have.
func decodeStrict(t testing.TB, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(v), out)
}

// device makes a device certificate with dev cert and returns it loaded.
func (c *cliAgainst) device(id string) tls.Certificate {
	c.t.Helper()
	dir := c.t.TempDir()
	c.ok("dev", "cert", "--device", id, "--out", dir)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"))
	require.NoError(c.t, err)
	return pair
}

// mqttDevice is a device on a real MQTT 5 connection over TLS: it subscribes to its commands
// and configuration, and answers commands through answer (no reply when it returns false).
type mqttDevice struct {
	id     string
	client *paho.Client
}

func connectDevice(t *testing.T, srv *server.Server, id string, cert tls.Certificate, answer func(protocol.Command) (protocol.Reply, bool)) *mqttDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &tls.Config{RootCAs: srv.CA().Pool(), Certificates: []tls.Certificate{cert}, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", srv.MQTTAddr().String())
	require.NoError(t, err)
	got := make(chan *paho.Publish, 64)
	d := &mqttDevice{id: id}
	d.client = paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			got <- pr.Packet
			return true, nil
		}}})
	_, err = d.client.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	_, err = d.client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: protocol.CommandFilter(id), QoS: 1}, {Topic: protocol.ConfigTopic(id), QoS: 1}}})
	require.NoError(t, err)

	// Answers go out from their own goroutine: a publish waits for its PUBACK, which the
	// client's reader would deliver only after the receive callback returns.
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case p := <-got:
				if p.Topic == protocol.ConfigTopic(id) {
					continue // this device reports its configuration when the test says
				}
				c, err := protocol.DecodeCommand(p.Payload)
				if err != nil {
					t.Errorf("device %s: undecodable command on %s: %v", id, p.Topic, err)
					continue
				}
				if r, ok := answer(c); ok {
					if resp := d.publish(protocol.ReplyTopic(id, c.ID), r); resp != nil && resp.ReasonCode != protocol.MQTTSuccess {
						t.Errorf("device %s: reply to %s refused with 0x%x", id, c.ID, resp.ReasonCode)
					}
				}
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
		_ = d.client.Disconnect(&paho.Disconnect{})
	})
	return d
}

func (d *mqttDevice) publish(topic string, v any) *paho.PublishResponse {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, _ := d.client.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: b})
	return resp
}

// TestConfigCommands drives millwright config against a real server: layers of every scope
// and their precedence, the schema's refusal naming the JSON path, a document read from
// standard input, what a real MQTT 5 device reports applied and refused, in JSON and in the
// table, and clearing a layer.
func TestConfigCommands(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	cert := cli.device("pump-1")
	cli.device("pump-2")
	cli.ok("devices", "group", "pump-1", "line-a")
	cli.ok("devices", "tag", "pump-1", "site=plant-7")
	dev := connectDevice(t, srv, "pump-1", cert, func(protocol.Command) (protocol.Reply, bool) { return protocol.Reply{}, false })

	var schema map[string]any
	require.NoError(t, json.Unmarshal([]byte(cli.ok("config", "schema")), &schema))
	require.Equal(t, "https://millwright.dev/schemas/agent-remote-config/v1.json", schema["$id"])
	require.Contains(t, schema["properties"], "schedule")

	dir := t.TempDir()
	file := func(name, doc string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
		return p
	}

	// A document that breaks the schema is refused with its JSON path; nothing is stored.
	code, _, stderr := cli.run("", "config", "set", "--group", "line-a", "--file", file("bad.json", `{"schedule": {"interval": "soon"}}`))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "document /schedule/interval:")
	require.Contains(t, stderr, "(bad_data)")
	code, _, stderr = cli.run("", "config", "set", "--fleet", "--file", file("local.json", `{"tls": {"cert_file": "/tmp/x"}}`))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(bad_data)")
	var layers []apitypes.ConfigLayer
	decodeStrict(t, cli.ok("config", "layers", "-o", "json"), &layers)
	require.Empty(t, layers)

	// Every scope; each layer is a merge patch over the lower ones, and null removes a key.
	var set apitypes.ConfigLayerSet
	decodeStrict(t, cli.ok("config", "set", "--fleet", "--file", file("fleet.json", `{"schedule": {"interval": "1m", "jitter": "5s"}, "log": {"level": "info"}}`), "-o", "json"), &set)
	require.Equal(t, apitypes.ConfigLayerSet{Scope: "fleet", DevicesChanged: 2}, set)
	code, stdout, stderr := cli.run(`{"schedule": {"interval": "30s"}, "log": {"level": "debug"}}`, "config", "set", "--group", "line-a", "--file", "-")
	require.Zero(t, code, stderr)
	require.Equal(t, "group line-a set: 1 device changed\n", stdout)
	require.Equal(t, "tag site=plant-7 set: 1 device changed\n",
		cli.ok("config", "set", "--tag", "site=plant-7", "--file", file("tag.json", `{"log": {"level": "warn"}}`)))
	require.Equal(t, "device pump-1 set: 1 device changed\n",
		cli.ok("config", "set", "--device", "pump-1", "--file", file("dev.json", `{"schedule": {"jitter": null}, "health": {"interval": "5m"}}`)))

	var dc apitypes.DeviceConfig
	decodeStrict(t, cli.ok("config", "show", "pump-1", "-o", "json"), &dc)
	require.JSONEq(t, `{"schedule": {"interval": "30s"}, "log": {"level": "warn"}, "health": {"interval": "5m"}}`, string(dc.Desired))
	require.Equal(t, []string{"fleet", "group line-a", "tag site=plant-7", "device pump-1"}, dc.Layers)
	require.EqualValues(t, 4, dc.DesiredVersion)
	require.EqualValues(t, 0, dc.AppliedVersion)
	require.JSONEq(t, `null`, string(dc.Reported))
	require.Equal(t, []string{"health.interval", "log.level", "schedule.interval"}, dc.Difference)
	var pump2 apitypes.DeviceConfig
	decodeStrict(t, cli.ok("config", "show", "pump-2", "-o", "json"), &pump2)
	require.JSONEq(t, `{"schedule": {"interval": "1m", "jitter": "5s"}, "log": {"level": "info"}}`, string(pump2.Desired))
	require.Equal(t, []string{"fleet"}, pump2.Layers)

	// The device reports what it applied and refused; show has it, in JSON under the API's
	// names and in the table.
	resp := dev.publish(protocol.ConfigReportedTopic("pump-1"), protocol.ReportedConfig{Version: dc.DesiredVersion,
		Applied: json.RawMessage(`{"schedule": {"interval": "30s"}, "health": {"interval": "5m"}, "log": {"level": "info"}}`),
		Refused: map[string]string{"log.level": "warn is not allowed on this device"}})
	require.NotNil(t, resp)
	require.Equal(t, protocol.MQTTSuccess, resp.ReasonCode)
	out := cli.ok("config", "show", "pump-1", "-o", "json")
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(out), &raw))
	for _, k := range []string{"desired", "desired_version", "reported", "applied_version", "refused", "difference", "layers"} {
		require.Contains(t, raw, k)
	}
	dc = apitypes.DeviceConfig{}
	decodeStrict(t, out, &dc)
	require.EqualValues(t, 4, dc.AppliedVersion)
	require.Equal(t, map[string]string{"log.level": "warn is not allowed on this device"}, dc.Refused)
	require.Equal(t, []string{"log.level"}, dc.Difference)

	table := cli.ok("config", "show", "pump-1")
	require.Regexp(t, `Desired:\s+version 4, computed `, table)
	require.Regexp(t, `Applied:\s+version 4, reported `, table)
	require.Regexp(t, `Layers:\s+fleet < group line-a < tag site=plant-7 < device pump-1\n`, table)
	require.Regexp(t, `In sync:\s+no\n`, table)
	require.Regexp(t, `KEY\s+DESIRED\s+APPLIED\s+REFUSED\n`, table)
	require.Regexp(t, `log\.level\s+"warn"\s+"info"\s+warn is not allowed on this device\n`, table)
	require.Contains(t, table, "Desired configuration:\n  {\n")
	require.Contains(t, table, `"interval": "5m"`)
	require.Regexp(t, `Applied:\s+no report yet`, cli.ok("config", "show", "pump-2"))

	layers = nil
	decodeStrict(t, cli.ok("config", "layers", "-o", "json"), &layers)
	require.Len(t, layers, 4)
	require.Equal(t, "admin", layers[0].UpdatedBy)
	table = cli.ok("config", "layers")
	require.Regexp(t, `SCOPE\s+SELECTOR\s+UPDATED\s+BY\s+DOCUMENT\n`, table)
	require.Regexp(t, `tag\s+site=plant-7\s+\S+\s+admin\s+\{"log":\{"level":"warn"\}\}\n`, table)

	// Clearing a layer removes it and recomputes its devices.
	require.Equal(t, "device pump-1 cleared: 1 device changed\n", cli.ok("config", "set", "--device", "pump-1", "--clear"))
	dc = apitypes.DeviceConfig{}
	decodeStrict(t, cli.ok("config", "show", "pump-1", "-o", "json"), &dc)
	require.JSONEq(t, `{"schedule": {"interval": "30s", "jitter": "5s"}, "log": {"level": "warn"}}`, string(dc.Desired))
	require.EqualValues(t, 5, dc.DesiredVersion)

	// A layer holds at most 64 KiB of compact JSON: exactly that is taken (the command line
	// compacts what it reads), one byte more is refused before it is sent. (Without the
	// fleet's layer, which would make pump-2's computed document larger than that.)
	require.Equal(t, "fleet cleared: 2 devices changed\n", cli.ok("config", "set", "--fleet", "--clear"))
	sized := func(n int) string {
		const head, tail = `{"sources":{"system":{"mount_points":["/`, `"]}}}`
		return head + strings.Repeat("m", n-len(head)-len(tail)) + tail
	}
	indented := strings.Replace(sized(apitypes.MaxConfigDocument), `{"system"`, "{\n    \"system\"", 1)
	decodeStrict(t, cli.ok("config", "set", "--device", "pump-2", "--file", file("max.json", indented), "-o", "json"), &set)
	require.Equal(t, 1, set.DevicesChanged)
	code, _, stderr = cli.run("", "config", "set", "--device", "pump-2", "--file", file("over.json", sized(apitypes.MaxConfigDocument+1)))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, fmt.Sprintf("%d bytes of JSON once compacted; a configuration layer holds at most %d", apitypes.MaxConfigDocument+1, apitypes.MaxConfigDocument))

	// Errors of the server, named.
	code, _, stderr = cli.run("", "config", "show", "pump-9")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(not_found)")
	code, _, stderr = cli.run("", "config", "set", "--group", "Bad Group!", "--file", file("ok.json", `{}`))
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(bad_data)")
}

// TestCommandsSendWait drives millwright commands against a real server and a device on a
// real MQTT 5 connection over TLS that answers on mw/v1/<id>/reply/<cmd-id>: the outcome of
// --wait and the exit status it sets, JSON and table output, expiry, listing, and the
// server's refusals.
func TestCommandsSendWait(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	connectDevice(t, srv, "pump-1", cli.device("pump-1"), func(c protocol.Command) (protocol.Reply, bool) {
		switch c.Name {
		case "diag.connectivity":
			res, _ := json.Marshal(map[string]any{"rtt_ms": 12, "probe": c.Args["probe"], "hosts": c.Args["hosts"]})
			return protocol.Reply{State: protocol.ReplySucceeded, Result: res}, true
		case "diag.fail":
			return protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailRefused, Detail: "not now"}, true
		}
		return protocol.Reply{}, false // the device keeps other commands unanswered
	})
	cli.device("pump-2") // never connects

	// Succeeded: exit 0, the result in JSON; arguments keep their commas.
	code, stdout, stderr := cli.run("", "commands", "send", "pump-1", "diag.connectivity", "--arg", "probe=dns", "--arg", "hosts=a,b", "--wait", "30s", "-o", "json")
	require.Zero(t, code, stderr)
	var raw map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(stdout), &raw))
	for _, k := range []string{"id", "state", "result"} {
		require.Contains(t, raw, k)
	}
	var ok apitypes.Command
	decodeStrict(t, stdout, &ok)
	require.Equal(t, "succeeded", ok.State)
	require.Equal(t, map[string]string{"probe": "dns", "hosts": "a,b"}, ok.Args)
	require.JSONEq(t, `{"rtt_ms": 12, "probe": "dns", "hosts": "a,b"}`, string(ok.Result))
	require.Equal(t, "admin", ok.CreatedBy)
	require.Equal(t, apitypes.DefaultCommandExpiry, ok.ExpiresAt.Sub(ok.CreatedAt), "the default expiry")

	table := cli.ok("commands", "send", "pump-1", "diag.connectivity", "--arg", "probe=icmp", "--wait", "30s")
	require.Regexp(t, `State:\s+succeeded\n`, table)
	require.Regexp(t, `Args:\s+probe=icmp\n`, table)
	require.Regexp(t, `Result:\s+\{"hosts":"","probe":"icmp","rtt_ms":12\}\n`, table)

	// Failed: exit 1, the outcome still printed.
	code, stdout, stderr = cli.run("", "commands", "send", "pump-1", "diag.fail", "--wait", "30s", "-o", "json")
	require.Equal(t, 1, code)
	var failed apitypes.Command
	decodeStrict(t, stdout, &failed)
	require.Equal(t, "failed", failed.State)
	require.Equal(t, "refused", failed.Reason)
	require.Contains(t, stderr, "command "+failed.ID+" failed on pump-1: refused: not now")

	// Still open when the wait ends: exit 3, with the way to follow it.
	code, stdout, stderr = cli.run("", "commands", "send", "pump-1", "diag.silent", "--wait", "1s")
	require.Equal(t, exitStillOpen, code, stderr)
	require.Regexp(t, `State:\s+(delivered|acknowledged)\n`, stdout)
	require.Regexp(t, `is still (delivered|acknowledged) after --wait 1s; follow it with: millwright commands show m-\S+ --wait 5m`, stderr)

	// Without --wait: exit 0 with the command queued, whatever comes of it.
	var queued apitypes.Command
	decodeStrict(t, cli.ok("commands", "send", "pump-2", "diag.spool", "--expires", "1s", "-o", "json"), &queued)
	require.Equal(t, "queued", queued.State)
	require.Equal(t, time.Second, queued.ExpiresAt.Sub(queued.CreatedAt))

	// Expired while show --wait waits for it: exit 1.
	type result struct {
		code           int
		stdout, stderr string
	}
	waited := make(chan result, 1)
	go func() {
		code, stdout, stderr := cli.run("", "commands", "show", queued.ID, "--wait", "1m", "-o", "json")
		waited <- result{code, stdout, stderr}
	}()
	var got result
	require.Eventually(t, func() bool {
		srv.Channel().ExpireNow(context.Background())
		select {
		case got = <-waited:
			return true
		default:
			return false
		}
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, 1, got.code, got.stderr)
	var expired apitypes.Command
	decodeStrict(t, got.stdout, &expired)
	require.Equal(t, "expired", expired.State)
	require.Contains(t, got.stderr, "command "+queued.ID+" expired before pump-2 answered it")

	// show without --wait prints the command and exits 0 whatever its state.
	var shown apitypes.Command
	decodeStrict(t, cli.ok("commands", "show", failed.ID, "-o", "json"), &shown)
	require.Equal(t, failed.ID, shown.ID)
	require.Equal(t, "not now", shown.Detail)
	require.Regexp(t, `Reason:\s+refused\n`, cli.ok("commands", "show", failed.ID))

	// list: newest first, pages followed with --all.
	var list []apitypes.Command
	decodeStrict(t, cli.ok("commands", "list", "pump-1", "-o", "json"), &list)
	require.Len(t, list, 4)
	require.Equal(t, []string{"diag.silent", "diag.fail", "diag.connectivity", "diag.connectivity"},
		[]string{list[0].Name, list[1].Name, list[2].Name, list[3].Name})
	var paged []apitypes.Command
	decodeStrict(t, cli.ok("commands", "list", "pump-1", "--limit", "1", "--all", "-o", "json"), &paged)
	require.Len(t, paged, 4)
	require.Equal(t, list[3].ID, paged[3].ID)
	var one []apitypes.Command
	decodeStrict(t, cli.ok("commands", "list", "pump-1", "--limit", "1", "-o", "json"), &one)
	require.Len(t, one, 1)
	table = cli.ok("commands", "list", "pump-1")
	require.Regexp(t, `ID\s+NAME\s+STATE\s+CREATED\s+UPDATED\s+OUTCOME\n`, table)
	require.Regexp(t, failed.ID+`\s+diag.fail\s+failed\s+\S+\s+\S+\s+refused: not now\n`, table)

	// The server's refusals, each named.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"commands", "send", "pump-9", "diag.spool"}, "(not_found)"},
		{[]string{"commands", "send", "pump-1", "Diag"}, "(bad_data)"},
		{[]string{"commands", "show", "m-1-nope"}, "(not_found)"},
		{[]string{"commands", "show", "not a command"}, "(bad_data)"},
	} {
		code, _, stderr := cli.run("", tc.args...)
		require.Equal(t, 1, code, "%v", tc.args)
		require.Contains(t, stderr, tc.want, "%v", tc.args)
	}

	// A device may have 100 open commands; the 101st is refused with 429.
	for range registry.DefaultMaxOpenCommands {
		_, err := srv.Registry().SendCommand(context.Background(), registry.CommandSpec{Device: "pump-2", Name: "diag.spool"}, "test", "")
		require.NoError(t, err)
	}
	code, _, stderr = cli.run("", "commands", "send", "pump-2", "diag.spool")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "too many open commands for the device (unavailable)")

	// A revoked device takes no command.
	cli.ok("devices", "revoke", "pump-2", "--yes")
	code, _, stderr = cli.run("", "commands", "send", "pump-2", "diag.spool")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "device is revoked (conflict)")

	// A viewer may read commands, not send them.
	var viewer apitypes.OperatorCreated
	decodeStrict(t, cli.ok("operators", "create", "watcher", "--role", "viewer", "-o", "json"), &viewer)
	tokenFile := filepath.Join(t.TempDir(), "viewer.token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(viewer.Token), 0o600))
	cli.ok("commands", "list", "pump-1", "--token-file", tokenFile)
	code, _, stderr = cli.run("", "commands", "send", "pump-1", "diag.spool", "--token-file", tokenFile)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(forbidden)")
}

// TestCommandWaitOutlastsWriteTimeout: a wait longer than the server's HTTPS write and body
// timeouts still gets its answer (the routes that wait have their deadlines moved), on both
// routes that wait.
func TestCommandWaitOutlastsWriteTimeout(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, func(o *server.Options) {
		o.HTTP.WriteTimeout = time.Second
		o.HTTP.BodyTimeout = time.Second
	})
	cli := newCLI(t, srv)
	cli.device("pump-1")
	start := time.Now()
	code, stdout, stderr := cli.run("", "commands", "send", "pump-1", "diag.spool", "--wait", "2500ms", "-o", "json")
	require.Equal(t, exitStillOpen, code, stderr)
	require.GreaterOrEqual(t, time.Since(start), 2500*time.Millisecond, "the wait was cut short")
	var c apitypes.Command
	decodeStrict(t, stdout, &c)
	require.Equal(t, "queued", c.State)

	start = time.Now()
	code, _, stderr = cli.run("", "commands", "show", c.ID, "--wait", "2500ms")
	require.Equal(t, exitStillOpen, code, stderr)
	require.GreaterOrEqual(t, time.Since(start), 2500*time.Millisecond, "the wait was cut short")
}

// TestChannelLimitsMatchServer: the limits the command line checks before sending are the
// server's.
func TestChannelLimitsMatchServer(t *testing.T) {
	require.Equal(t, registry.MaxConfigDocument, apitypes.MaxConfigDocument)
	require.Equal(t, registry.MaxCommandArgs, apitypes.MaxCommandArgs)
	require.Equal(t, registry.MaxCommandExpiry, apitypes.MaxCommandExpiry)
	require.Equal(t, api.MaxCommandWait, apitypes.MaxCommandWait)
}

// TestCommandsHelpNamesExitStatus: send and show say what their exit status means.
func TestCommandsHelpNamesExitStatus(t *testing.T) {
	for _, sub := range []string{"send", "show"} {
		code, stdout, _ := run("commands", sub, "--help")
		require.Zero(t, code)
		require.Contains(t, stdout, "Exit status: 0 when the command succeeded, or was queued (without --wait); 1 when it\nfailed or expired")
		require.Contains(t, stdout, "3 when\n--wait ended before the device answered")
	}
}

// TestConfigLayerLimit: with registry.MaxConfigLayers layers, a new one is refused and named;
// an existing one can still be changed and removed. (The layers are made through the registry:
// about a millisecond each on SQLite, against several through the API.)
func TestConfigLayerLimit(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	cli := newCLI(t, srv)
	for i := range registry.MaxConfigLayers {
		_, err := srv.Registry().SetConfigLayer(context.Background(), registry.ScopeGroup, fmt.Sprintf("g-%d", i),
			json.RawMessage(`{"log":{"level":"info"}}`), "test", "")
		require.NoError(t, err)
	}
	doc := filepath.Join(t.TempDir(), "doc.json")
	require.NoError(t, os.WriteFile(doc, []byte(`{"log": {"level": "warn"}}`), 0o600))
	code, _, stderr := cli.run("", "config", "set", "--fleet", "--file", doc)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, fmt.Sprintf("there are %d configuration layers, the limit (bad_data)", registry.MaxConfigLayers))
	require.Equal(t, "group g-7 set: 0 devices changed\n", cli.ok("config", "set", "--group", "g-7", "--file", doc))
	require.Equal(t, "group g-7 cleared: 0 devices changed\n", cli.ok("config", "set", "--group", "g-7", "--clear"))
	require.Equal(t, "fleet set: 0 devices changed\n", cli.ok("config", "set", "--fleet", "--file", doc))
}
