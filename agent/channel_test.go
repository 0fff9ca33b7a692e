package agent_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/protocol"
)

// The device channel end to end: a real server (its API, registry mailbox, MQTT gateway and
// HTTPS mailbox) and real agents.

// api calls the server's API with the admin token and decodes the envelope's data into out;
// it returns the HTTP status and the envelope's error.
func (s *testServer) api(t *testing.T, method, path string, body, out any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "https://"+s.httpAddr+path, rd)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+s.token)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"}}}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var env apitypes.Response[json.RawMessage]
	require.NoError(t, json.Unmarshal(raw, &env), "%s", raw)
	if out != nil && env.Status == apitypes.StatusSuccess {
		require.NoError(t, json.Unmarshal(env.Data, out), "%s", env.Data)
	}
	return resp.StatusCode, env.Error
}

// command sends a command to device through the API and waits up to 30 s for its
// outcome.
func (s *testServer) command(t *testing.T, device, name string, args map[string]string) apitypes.Command {
	t.Helper()
	var c apitypes.Command
	code, e := s.api(t, http.MethodPost, "/api/v1/devices/"+device+"/commands", apitypes.CommandRequest{Name: name, Args: args, Wait: "30s"}, &c)
	require.Equal(t, http.StatusOK, code, e)
	return c
}

// commandState reads a command's state, waiting up to wait for it to end.
func (s *testServer) commandState(t *testing.T, id string, wait time.Duration) apitypes.Command {
	t.Helper()
	var c apitypes.Command
	code, e := s.api(t, http.MethodGet, "/api/v1/commands/"+id+"?wait="+wait.String(), nil, &c)
	require.Equal(t, http.StatusOK, code, e)
	return c
}

func (s *testServer) setDeviceConfig(t *testing.T, device, doc string) {
	t.Helper()
	code, e := s.api(t, http.MethodPost, "/api/v1/config/layers", apitypes.ConfigLayerRequest{Scope: "device", Selector: device, Document: json.RawMessage(doc)}, nil)
	require.Equal(t, http.StatusOK, code, e)
}

func (s *testServer) deviceConfig(t *testing.T, device string) apitypes.DeviceConfig {
	t.Helper()
	var dc apitypes.DeviceConfig
	code, e := s.api(t, http.MethodGet, "/api/v1/devices/"+device+"/config", nil, &dc)
	require.Equal(t, http.StatusOK, code, e)
	return dc
}

// TestChannelCommandsMQTT sends each kind of command through the server's API to an agent
// connected over MQTT and reads the outcome the server recorded.
func TestChannelCommandsMQTT(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const id = "chan-cmd"
	cfg := srv.agentConfig(t)
	cfg.Commands.AllowShell = true
	cfg.Identity = agent.IdentityConfig{HardwareModel: "gw-300", NetworkOperator: "Telia", FirmwareVersion: "3.0.1"}
	a, err := agent.New(cfg, srv.options(t, id))
	require.NoError(t, err)
	runAgent(t, a)
	require.Eventually(t, func() bool { return a.Stats().Connected }, 20*time.Second, 10*time.Millisecond)

	c := srv.command(t, id, agent.CmdDiagConnectivity, nil)
	require.Equal(t, "succeeded", c.State, "%+v", c)
	var conn agent.ConnectivityResult
	require.NoError(t, json.Unmarshal(c.Result, &conn))
	require.Equal(t, srv.mqttAddr, conn.Endpoint)
	require.Empty(t, conn.DialError)
	require.Empty(t, conn.TLSError, "a full handshake with the device's certificate")
	require.NotEmpty(t, conn.TLSVersion)
	require.True(t, conn.Connected)
	require.Equal(t, "Telia", conn.NetworkOperator)

	c = srv.command(t, id, agent.CmdDiagHealth, nil)
	require.Equal(t, "succeeded", c.State, "%+v", c)
	var h agent.HealthResult
	require.NoError(t, json.Unmarshal(c.Result, &h))
	require.Equal(t, id, h.DeviceID)
	require.True(t, h.Connected)
	// A command may legitimately arrive twice (at-least-once delivery; the agent answers a
	// repeat with its kept reply), so count what was answered.
	require.GreaterOrEqual(t, h.CommandsReceived, uint64(2), "this one and diag.connectivity")
	require.Equal(t, uint64(1), h.Commands["succeeded"], "diag.connectivity answered, this one running")
	require.Equal(t, cfg.Spool.Dir, h.Spool.Dir)

	c = srv.command(t, id, agent.CmdShellExec, map[string]string{"command": "echo hello from $((40+2))"})
	require.Equal(t, "succeeded", c.State, "%+v", c)
	require.JSONEq(t, `"hello from 42\n"`, string(mustField(t, c.Result, "output")))

	c = srv.command(t, id, "firmware.flash", nil)
	require.Equal(t, "failed", c.State)
	require.Equal(t, protocol.FailUnknown, c.Reason)

	c = srv.command(t, id, agent.CmdSystemReboot, nil)
	require.Equal(t, "failed", c.State)
	require.Equal(t, protocol.FailRefused, c.Reason)
	require.Contains(t, c.Detail, "commands.reboot_command")

	c = srv.command(t, id, agent.CmdDiagLogs, map[string]string{"lines": "5"})
	require.Equal(t, "succeeded", c.State, "%+v", c)
	require.Contains(t, string(c.Result), "system.reboot", "the log holds the commands it ran")

	// The state message after the connection reached the registry (MQTT 5 sends the same
	// in CONNECT).
	require.Eventually(t, func() bool {
		d, err := srv.srv.Registry().Device(context.Background(), id)
		return err == nil && d.HardwareModel == "gw-300" && d.FirmwareVersion == "3.0.1"
	}, 10*time.Second, 20*time.Millisecond)
	st := a.Stats()
	// At-least-once: a repeat is answered from the kept reply and counted as received only.
	require.GreaterOrEqual(t, st.CommandsReceived, uint64(6))
	require.Equal(t, uint64(4), st.Commands["succeeded"], "%v", st.Commands)
}

func mustField(t *testing.T, raw json.RawMessage, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	return m[key]
}

// blackholeDialer dials normally; while holding, what the agent writes on its connections
// is dropped (the link went silent), so nothing it sends reaches the server.
type blackholeDialer struct {
	holding atomic.Bool
}

func (d *blackholeDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &blackholeConn{Conn: c, d: d}, nil
}

type blackholeConn struct {
	net.Conn
	d *blackholeDialer
}

func (c *blackholeConn) Write(p []byte) (int, error) {
	if c.d.holding.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestChannelCommandRunsOnceAcrossRestart: the agent runs a command and its reply is lost;
// the agent stops. At its next start the server delivers the command again, and the agent
// answers with the reply it kept instead of running the command a second time.
func TestChannelCommandRunsOnceAcrossRestart(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const id = "chan-once"
	cfg := srv.agentConfig(t)
	cfg.Commands.AllowShell = true
	cfg.Uplink.AckTimeout = 30 * time.Second // the lost reply waits; the stop ends it
	count := filepath.Join(t.TempDir(), "count")
	opts := srv.options(t, id)
	bh := &blackholeDialer{}
	opts.Dialer = bh
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	stop := runAgent(t, a)
	require.Eventually(t, func() bool { return a.Stats().Connected }, 20*time.Second, 10*time.Millisecond)

	var c apitypes.Command
	code, e := srv.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands",
		apitypes.CommandRequest{Name: agent.CmdShellExec, Args: map[string]string{"command": "echo ran >> " + count + "; sleep 1; echo done"}}, &c)
	require.Equal(t, http.StatusOK, code, e)
	require.Eventually(t, func() bool { _, err := os.Stat(count); return err == nil }, 20*time.Second, time.Millisecond)
	bh.holding.Store(true) // the reply, a second later, is lost
	require.Eventually(t, func() bool { return a.Stats().Commands["succeeded"] == 1 }, 20*time.Second, 10*time.Millisecond)
	stop()
	require.Equal(t, "acknowledged", srv.commandState(t, c.ID, 0).State, "the server never got the reply")

	opts.Dialer = nil
	b, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, b)
	got := srv.commandState(t, c.ID, 30*time.Second)
	require.Equal(t, "succeeded", got.State, "%+v", got)
	require.JSONEq(t, `"done\n"`, string(mustField(t, got.Result, "output")))
	data, err := os.ReadFile(count)
	require.NoError(t, err)
	require.Equal(t, "ran\n", string(data), "run once")
	require.Equal(t, uint64(1), b.Stats().Commands["resent"])
	require.Zero(t, b.Stats().Commands["succeeded"])
}

// TestChannelRestartCommand: agent.restart is answered, then Run returns
// ErrRestartRequested; an agent started again on the same spool is not restarted a second
// time by the same command.
func TestChannelRestartCommand(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const id = "chan-restart"
	cfg := srv.agentConfig(t)
	opts := srv.options(t, id)
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	require.Eventually(t, func() bool { return a.Stats().Connected }, 20*time.Second, 10*time.Millisecond)
	c := srv.command(t, id, agent.CmdAgentRestart, nil)
	require.Equal(t, "succeeded", c.State, "%+v", c)
	select {
	case err := <-done:
		require.ErrorIs(t, err, agent.ErrRestartRequested)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after agent.restart")
	}
	b, err := agent.New(cfg, opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- b.Run(ctx) }()
	c = srv.command(t, id, agent.CmdDiagSpool, nil)
	require.Equal(t, "succeeded", c.State)
	cancel()
	require.NoError(t, <-done2, "stopped by its context, not by a second restart")
}

// TestChannelRemoteConfigMQTT: a configuration set for the device through the API reaches
// the agent, which applies it, reports it (the server shows no difference left) and keeps
// it; a new keepalive makes the agent reconnect at once. After a restart the agent runs the
// kept configuration before it connects.
func TestChannelRemoteConfigMQTT(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const id = "chan-config"
	cfg := srv.agentConfig(t)
	opts := srv.options(t, id)
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	stop := runAgent(t, a)
	require.Eventually(t, func() bool { return a.Stats().Connected }, 20*time.Second, 10*time.Millisecond)

	srv.setDeviceConfig(t, id, `{"uplink": {"keepalive": "7s"}, "schedule": {"max_batches_per_cycle": 3}, "batch": {"max_window": "2s"}}`)
	var dc apitypes.DeviceConfig
	require.Eventually(t, func() bool {
		dc = srv.deviceConfig(t, id)
		return dc.AppliedVersion == dc.DesiredVersion && dc.DesiredVersion > 0
	}, 30*time.Second, 50*time.Millisecond)
	require.Empty(t, dc.Difference, "applied as desired")
	require.Empty(t, dc.Refused)
	require.Eventually(t, func() bool {
		st := a.Stats()
		return st.Reconnects["reconfigure"] == 1 && st.Connected && st.Connects == 2
	}, 20*time.Second, 10*time.Millisecond, "reconnected once, at once, for the keepalive")
	require.Equal(t, dc.DesiredVersion, a.Stats().ConfigVersion)

	// A second change that leaves the keepalive alone does not reconnect.
	srv.setDeviceConfig(t, id, `{"uplink": {"keepalive": "7s"}, "schedule": {"max_batches_per_cycle": 4}}`)
	require.Eventually(t, func() bool {
		dc = srv.deviceConfig(t, id)
		return dc.AppliedVersion == dc.DesiredVersion && dc.DesiredVersion == 2
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, uint64(2), a.Stats().Connects)
	stop()

	b, err := agent.New(cfg, opts)
	require.NoError(t, err)
	require.Equal(t, int64(2), b.Stats().ConfigVersion, "kept across the restart")
	require.NoError(t, b.Close())
}

// TestChannelHTTPSMailbox: an HTTPS agent on an injected clock fetches its mailbox every
// uplink.mailbox_interval of that clock and after every batch it delivers; it runs the
// commands it finds, applies the configuration, and POSTs its state, replies and report.
func TestChannelHTTPSMailbox(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const id = "chan-https"
	clk := clock.NewFake(time.Now())
	cfg := srv.agentConfig(t)
	cfg.Uplink.Transport = agent.TransportHTTPS
	cfg.Uplink.DevAddress = srv.httpAddr
	cfg.Uplink.MailboxInterval = 30 * time.Second
	cfg.Schedule.Interval = time.Hour // batches only when flushed
	cfg.Health.Interval = 0
	cfg.Spool.Sync = spool.SyncNever // records readable at once, no sync timer on the fake clock
	cfg.Identity = agent.IdentityConfig{HardwareModel: "meter-9"}
	opts := srv.options(t, id)
	opts.Clock = clk
	opts.Rand = func(int64) int64 { return 0 } // the first fetch at once
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, a)

	// At start: the state, then the (empty) mailbox.
	require.Eventually(t, func() bool { return a.Stats().MailboxFetches == 1 }, 20*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		d, err := srv.srv.Registry().Device(context.Background(), id)
		return err == nil && d.HardwareModel == "meter-9"
	}, 10*time.Second, 20*time.Millisecond)

	var c apitypes.Command
	code, e := srv.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands", apitypes.CommandRequest{Name: agent.CmdDiagSpool}, &c)
	require.Equal(t, http.StatusOK, code, e)
	srv.setDeviceConfig(t, id, `{"log": {"level": "warn"}, "schedule": {"jitter": "1s"}}`)
	// Nothing is fetched until the interval has passed on the agent's clock.
	require.Equal(t, "queued", srv.commandState(t, c.ID, 0).State)
	clk.BlockUntil(2) // the send schedule and the mailbox interval
	clk.Advance(30 * time.Second)
	got := srv.commandState(t, c.ID, 30*time.Second)
	require.Equal(t, "succeeded", got.State, "%+v", got)
	require.Contains(t, string(got.Result), `"records"`)
	var dc apitypes.DeviceConfig
	require.Eventually(t, func() bool {
		dc = srv.deviceConfig(t, id)
		return dc.AppliedVersion == 1
	}, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, []string{"log.level"}, dc.Difference, "the test's logger has no level variable")
	require.Contains(t, dc.Refused["log.level"], "sets its own log level")
	require.Equal(t, uint64(2), a.Stats().MailboxFetches)

	// A delivered batch brings a fetch without waiting for the interval.
	code, e = srv.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands", apitypes.CommandRequest{Name: agent.CmdDiagHealth}, &c)
	require.Equal(t, http.StatusOK, code, e)
	v := 1.0
	require.NoError(t, a.Sink().Write(context.Background(), []protocol.Record{{Name: "m", Value: &v}}, 0))
	a.Flush()
	got = srv.commandState(t, c.ID, 30*time.Second)
	require.Equal(t, "succeeded", got.State, "%+v", got)
	require.GreaterOrEqual(t, a.Stats().MailboxFetches, uint64(3))
	require.GreaterOrEqual(t, a.Stats().BatchesSent, uint64(1))
}

// TestChannelRedeliveryWhileRunning: a command delivered again while it runs (the connection
// was cut and the server sends it again at the next one) runs once, and its reply goes on
// the new connection.
func TestChannelRedeliveryWhileRunning(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nil)
	const id = "chan-running"
	cfg := srv.agentConfig(t)
	cfg.Commands.AllowShell = true
	count := filepath.Join(t.TempDir(), "count")
	proxy := newCutProxy(t, srv.mqttAddr)
	cfg.Uplink.DevAddress = proxy.addr()
	a, err := agent.New(cfg, srv.options(t, id))
	require.NoError(t, err)
	runAgent(t, a)
	require.Eventually(t, func() bool { return a.Stats().Connected }, 20*time.Second, 10*time.Millisecond)

	var c apitypes.Command
	code, e := srv.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands",
		apitypes.CommandRequest{Name: agent.CmdShellExec, Args: map[string]string{"command": "echo ran >> " + count + "; sleep 2"}}, &c)
	require.Equal(t, http.StatusOK, code, e)
	require.Eventually(t, func() bool { _, err := os.Stat(count); return err == nil }, 20*time.Second, time.Millisecond)
	proxy.mu.Lock()
	for conn := range proxy.conns {
		_ = conn.Close()
	}
	proxy.mu.Unlock()
	got := srv.commandState(t, c.ID, 30*time.Second)
	require.Equal(t, "succeeded", got.State, "%+v", got)
	data, err := os.ReadFile(count)
	require.NoError(t, err)
	require.Equal(t, "ran\n", string(data))
	st := a.Stats()
	require.GreaterOrEqual(t, st.Connects, uint64(2))
	require.GreaterOrEqual(t, st.CommandsReceived, uint64(2), "delivered again on the new connection")
	require.Equal(t, uint64(1), st.Commands["succeeded"])
}

// TestChannelOfflineAgentAfterServerRestart: a configuration change and a command made while
// the agent is off, followed by a server restart, reach the agent when it comes back: the
// mailbox is in the registry, not in the server's memory.
func TestChannelOfflineAgentAfterServerRestart(t *testing.T) {
	srv := startServer(t, nil)
	const id = "chan-offline"
	cfg := srv.agentConfig(t)
	opts := srv.options(t, id)
	a, err := agent.New(cfg, opts)
	require.NoError(t, err)
	stop := runAgent(t, a)
	require.Eventually(t, func() bool { return a.Stats().Connected }, 20*time.Second, 10*time.Millisecond)
	stop()

	srv.setDeviceConfig(t, id, `{"schedule": {"max_batches_per_cycle": 5}, "health": {"interval": "3m"}}`)
	var queued apitypes.Command
	code, e := srv.api(t, http.MethodPost, "/api/v1/devices/"+id+"/commands", apitypes.CommandRequest{Name: "diag.spool", Expires: "720h"}, &queued)
	require.Equal(t, http.StatusOK, code, e)
	require.Equal(t, "queued", queued.State)
	srv.stop()
	srv.start()

	b, err := agent.New(cfg, opts)
	require.NoError(t, err)
	runAgent(t, b)
	var dc apitypes.DeviceConfig
	require.Eventually(t, func() bool {
		dc = srv.deviceConfig(t, id)
		return dc.DesiredVersion > 0 && dc.AppliedVersion == dc.DesiredVersion
	}, 30*time.Second, 50*time.Millisecond, "the agent applied the configuration made while it was off")
	require.Empty(t, dc.Difference)
	c := srv.commandState(t, queued.ID, 30*time.Second)
	require.Equal(t, "succeeded", c.State, "%+v", c)
	require.NotEmpty(t, c.Result)
}
