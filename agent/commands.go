package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/agent/spool"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// The commands the agent runs (docs/agent.md, "Commands"). Any other name is answered
// failed, reason "unknown".
const (
	CmdDiagConnectivity = "diag.connectivity"
	CmdDiagSpool        = "diag.spool"
	CmdDiagLogs         = "diag.logs"
	CmdDiagHealth       = "diag.health"
	CmdAgentRestart     = "agent.restart"
	CmdSystemReboot     = "system.reboot"
	CmdShellExec        = "shell.exec"
)

// Limits of the commands.
const (
	// diagTimeout bounds diag.spool, diag.health, diag.logs and agent.restart.
	diagTimeout = 5 * time.Second
	// connectivityTimeout bounds diag.connectivity: name resolution, TCP connect and TLS
	// handshake together.
	connectivityTimeout = 30 * time.Second
	// shellTimeout bounds shell.exec; the command's whole process group is killed then.
	shellTimeout = 60 * time.Second
	// rebootTimeout bounds the reboot hook of system.reboot.
	rebootTimeout = 60 * time.Second
	// maxCommandOutput bounds the output (stdout and stderr together) of shell.exec and of
	// the reboot hook that a reply carries; the rest is counted, not kept.
	maxCommandOutput = 16 << 10
	// defaultLogLinesArg is how many lines diag.logs returns without a "lines" argument.
	defaultLogLinesArg = 50
	// maxReplyDetail is the longest Detail of a reply (the server refuses longer ones).
	maxReplyDetail = 4096
)

// ErrRestartRequested is returned by Agent.Run when the server sent agent.restart: the agent
// answered it and stopped, and the program should start it again (millwright-agent executes
// itself anew; the fleet simulator makes a new agent for the device).
var ErrRestartRequested = errors.New("restart requested by the server")

// errCommandTimeout is the cause of a command's context when its time ran out.
var errCommandTimeout = errors.New("command timed out")

// cmdError is a command's failure with its reply reason and, optionally, a result.
type cmdError struct {
	reason, detail string
	result         any
}

func (e *cmdError) Error() string { return e.reason + ": " + e.detail }

func failf(reason, format string, args ...any) error {
	return &cmdError{reason: reason, detail: fmt.Sprintf(format, args...)}
}

// commandSpec is one command of the allowlist.
type commandSpec struct {
	timeout time.Duration
	args    []string // the arguments it takes; any other is bad_args
	run     func(a *Agent, ctx context.Context, args map[string]string) (any, error)
	// provisional is the reply kept while it runs, given if the command comes again after
	// the agent stopped before it ended. Nil: "duplicate".
	provisional *protocol.Reply
	// after runs once the reply has been sent (agent.restart stops the agent there).
	after func(a *Agent)
	// failed, if set, runs once a failed reply has been sent (firmware.update reports the
	// failure in an update report then, so that the server has the reply's reason first).
	failed func(a *Agent, ctx context.Context, cmd protocol.Command, reply protocol.Reply)
	// timeoutOf, when set, gives the timeout from the agent's configuration instead.
	timeoutOf func(a *Agent, args map[string]string) time.Duration
}

var commandSpecs = map[string]commandSpec{
	CmdDiagConnectivity: {timeout: connectivityTimeout, run: (*Agent).diagConnectivity},
	CmdDiagSpool:        {timeout: diagTimeout, run: (*Agent).diagSpool},
	CmdDiagLogs:         {timeout: diagTimeout, args: []string{"lines"}, run: (*Agent).diagLogs},
	CmdDiagHealth:       {timeout: diagTimeout, run: (*Agent).diagHealth},
	CmdAgentRestart: {timeout: diagTimeout, run: func(*Agent, context.Context, map[string]string) (any, error) {
		return map[string]any{"restarting": true}, nil
	}, after: (*Agent).requestRestart},
	CmdSystemReboot: {timeout: rebootTimeout, run: (*Agent).systemReboot,
		provisional: &protocol.Reply{State: protocol.ReplySucceeded, Detail: "the reboot command was started; the agent stopped before it returned",
			Result: json.RawMessage(`{"rebooting":true}`)}},
	CmdShellExec: {timeout: shellTimeout, args: []string{"command"}, run: (*Agent).shellExec},
	protocol.CmdFirmwareUpdate: {args: []string{protocol.ArgManifest, protocol.ArgArtifactPath, protocol.ArgRollout, protocol.ArgStartWithin},
		run: (*Agent).firmwareUpdate, timeoutOf: (*Agent).firmwareUpdateTimeout, after: (*Agent).requestRestart, failed: (*Agent).updateFailed,
		provisional: &protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailDownload,
			Detail: "the agent stopped before the update ended; a new offer resumes the download where it stopped"}},
}

// CommandNames returns the names of the commands the agent runs, sorted.
func CommandNames() []string { return slices.Sorted(maps.Keys(commandSpecs)) }

// command runs cmd once and returns the reply to send, or ok false when there is nothing to
// send now: it is running already (its reply follows), or the agent stopped while it ran.
// A command seen before is not run again: its kept reply is returned. after, if not nil,
// is to be called once the reply was sent.
func (a *Agent) command(ctx context.Context, cmd protocol.Command) (reply protocol.Reply, after func(context.Context), ok bool) {
	spec, known := commandSpecs[cmd.Name]
	c, kept, err := a.cmds.begin(cmd.ID, spec.provisional)
	switch {
	case c == claimRunning:
		return protocol.Reply{}, nil, false
	case c == claimDone:
		a.m.command(counterResent)
		a.log.Info("command delivered again; answered with its kept reply", "id", cmd.ID, "name", cmd.Name)
		return kept, nil, true
	case err != nil:
		// Without a record it could run twice: refuse it.
		a.log.Error("record a command", "id", cmd.ID, "error", err)
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailError, Detail: clip("the device cannot record the command: " + err.Error())}
		a.finishCommand(cmd, reply)
		return reply, nil, true
	}
	switch {
	case !known:
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailUnknown, Detail: fmt.Sprintf("no command named %q; the agent knows %s", cmd.Name, strings.Join(CommandNames(), ", "))}
	case !cmd.ExpiresAt.IsZero() && !a.clk.Now().Before(cmd.ExpiresAt):
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailExpired, Detail: fmt.Sprintf("expired at %s, reached the device at %s", cmd.ExpiresAt.UTC().Format(time.RFC3339), a.clk.Now().UTC().Format(time.RFC3339))}
	default:
		var stopped bool
		reply, stopped = a.execute(ctx, cmd, spec)
		if stopped {
			a.cmds.abandon(cmd.ID)
			return protocol.Reply{}, nil, false
		}
	}
	a.finishCommand(cmd, reply)
	switch {
	case spec.after != nil && reply.State == protocol.ReplySucceeded:
		after = func(context.Context) { spec.after(a) }
	case spec.failed != nil && reply.State == protocol.ReplyFailed:
		after = func(ctx context.Context) { spec.failed(a, ctx, cmd, reply) }
	}
	return reply, after, true
}

func (a *Agent) finishCommand(cmd protocol.Command, reply protocol.Reply) {
	if err := a.cmds.finish(cmd.ID, reply); err != nil {
		a.log.Error("record a command's reply", "id", cmd.ID, "error", err)
	}
	outcome := reply.State
	if reply.State == protocol.ReplyFailed {
		outcome = reply.Reason
	}
	a.m.command(outcome)
	a.log.Info("command", "id", cmd.ID, "name", cmd.Name, "outcome", outcome, "detail", reply.Detail)
}

// execute runs a known, unexpired command within its timeout. stopped is true when ctx
// ended first (the agent is stopping).
func (a *Agent) execute(ctx context.Context, cmd protocol.Command, spec commandSpec) (protocol.Reply, bool) {
	for _, k := range slices.Sorted(maps.Keys(cmd.Args)) {
		if !slices.Contains(spec.args, k) {
			takes := "no arguments"
			if len(spec.args) > 0 {
				takes = "the arguments " + strings.Join(spec.args, ", ")
			}
			return protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailBadArgs, Detail: clip(fmt.Sprintf("unknown argument %q; %s takes %s", k, cmd.Name, takes))}, false
		}
	}
	a.log.Info("running command", "id", cmd.ID, "name", cmd.Name)
	timeout := spec.timeout
	if spec.timeoutOf != nil {
		timeout = spec.timeoutOf(a, cmd.Args)
	}
	tctx, cancel := clockTimeout(context.WithValue(ctx, commandIDKey{}, cmd.ID), a.clk, timeout)
	defer cancel()
	result, err := spec.run(a, tctx, cmd.Args)
	if ctx.Err() != nil {
		return protocol.Reply{}, true
	}
	var reply protocol.Reply
	var ce *cmdError
	switch {
	case errors.Is(context.Cause(tctx), errCommandTimeout):
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailTimeout, Detail: fmt.Sprintf("did not finish within %v", timeout)}
		if errors.As(err, &ce) {
			result = ce.result
		}
	case errors.As(err, &ce):
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: ce.reason, Detail: clip(ce.detail)}
		result = ce.result
	case err != nil:
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailError, Detail: clip(err.Error())}
	default:
		reply = protocol.Reply{State: protocol.ReplySucceeded}
	}
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailError, Detail: clip("encode the result: " + err.Error())}, false
		}
		reply.Result = b
	}
	if b, _ := json.Marshal(reply); len(b) > protocol.MaxChannelMessage {
		reply = protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailError,
			Detail: fmt.Sprintf("the result of %d bytes exceeds the channel's limit of %d", len(b), protocol.MaxChannelMessage)}
	}
	return reply, false
}

// clip cuts a reply's detail to what the server takes.
func clip(s string) string {
	if len(s) <= maxReplyDetail {
		return s
	}
	return strings.ToValidUTF8(s[:maxReplyDetail-len("…")], "") + "…"
}

// clockTimeout is context.WithTimeout on clk; the context's cause is errCommandTimeout when
// the time ran out.
func clockTimeout(parent context.Context, clk clock.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	t := clk.AfterFunc(d, func() { cancel(errCommandTimeout) })
	return ctx, func() { t.Stop(); cancel(context.Canceled) }
}

// millis is a duration in milliseconds, to three decimals.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ConnectivityResult is the result of diag.connectivity.
type ConnectivityResult struct {
	// Host is the gateway's DNS name, <device-id>.<zone>.
	Host string `json:"host"`
	// Addresses are what Host resolved to, ResolveMs how long that took, ResolveError why
	// it failed.
	Addresses    []string `json:"addresses,omitempty"`
	ResolveMs    float64  `json:"resolve_ms"`
	ResolveError string   `json:"resolve_error,omitempty"`
	// Endpoint is the address the agent connects to (Host and the transport's port, or
	// uplink.dev_address) and Transport its transport.
	Endpoint  string `json:"endpoint"`
	Transport string `json:"transport"`
	// DialMs is the TCP connect time, TLSMs the TLS handshake's; an error ends the test
	// there.
	DialMs     float64 `json:"dial_ms"`
	DialError  string  `json:"dial_error,omitempty"`
	TLSMs      float64 `json:"tls_ms"`
	TLSError   string  `json:"tls_error,omitempty"`
	TLSVersion string  `json:"tls_version,omitempty"`
	// Connected says whether the agent's MQTT connection is up (always true on HTTPS).
	Connected bool `json:"connected"`
	// LastBatchRTTMs is the acknowledgement latency of the last batch.
	LastBatchRTTMs float64 `json:"last_batch_rtt_ms"`
	// ConnectAttempts, Reconnects and ConnectFailures are the agent's counters since it
	// started, by cause.
	ConnectAttempts uint64            `json:"connect_attempts"`
	Reconnects      map[string]uint64 `json:"reconnects"`
	ConnectFailures map[string]uint64 `json:"connect_failures"`
	// NetworkOperator is identity.network_operator.
	NetworkOperator string `json:"network_operator,omitempty"`
}

func (a *Agent) diagConnectivity(ctx context.Context, _ map[string]string) (any, error) {
	u := a.local.Uplink
	port := u.MQTTPort
	if u.Transport == TransportHTTPS {
		port = u.HTTPSPort
	}
	st := a.Stats()
	r := ConnectivityResult{
		Host:            hostName(a.device, u.Zone),
		Endpoint:        endpoint(u, a.device, port),
		Transport:       u.Transport.String(),
		Connected:       st.Connected,
		LastBatchRTTMs:  millis(st.LastRTT),
		ConnectAttempts: st.ConnectAttempts,
		Reconnects:      st.Reconnects,
		ConnectFailures: st.ConnectFailures,
		NetworkOperator: a.local.Identity.NetworkOperator,
	}
	start := a.clk.Now()
	addrs, err := net.DefaultResolver.LookupHost(ctx, r.Host)
	r.ResolveMs = millis(a.clk.Now().Sub(start))
	if err != nil {
		r.ResolveError = err.Error()
	}
	r.Addresses = addrs

	start = a.clk.Now()
	raw, err := a.dialer.DialContext(ctx, "tcp", r.Endpoint)
	r.DialMs = millis(a.clk.Now().Sub(start))
	if err != nil {
		r.DialError = err.Error()
		return r, ctx.Err()
	}
	defer raw.Close()
	tc := tls.Client(raw, a.tls)
	start = a.clk.Now()
	err = tc.HandshakeContext(ctx)
	r.TLSMs = millis(a.clk.Now().Sub(start))
	if err != nil {
		r.TLSError = err.Error()
		return r, ctx.Err()
	}
	r.TLSVersion = tls.VersionName(tc.ConnectionState().Version)
	return r, nil
}

// SpoolResult is the result of diag.spool: the spool's counters (package agent/spool,
// Stats) and its bound.
type SpoolResult struct {
	Dir                   string  `json:"dir"`
	MaxBytes              int64   `json:"max_bytes"`
	Records               uint64  `json:"records"`
	Bytes                 int64   `json:"bytes"`
	Segments              int     `json:"segments"`
	OldestAgeSeconds      float64 `json:"oldest_age_seconds"`
	NextID                uint64  `json:"next_id"`
	DurableID             uint64  `json:"durable_id"`
	AckedID               uint64  `json:"acked_id"`
	DroppedOverflow       uint64  `json:"dropped_overflow"`
	DroppedOverflowEvents uint64  `json:"dropped_overflow_events"`
	MovedEvents           uint64  `json:"moved_events"`
	TornRecords           uint64  `json:"torn_records"`
	TornBytes             int64   `json:"torn_bytes"`
	CorruptSegments       int     `json:"corrupt_segments"`
	Syncs                 uint64  `json:"syncs"`
	SyncErrors            uint64  `json:"sync_errors"`
	WriteErrors           uint64  `json:"write_errors"`
	LastSyncMs            float64 `json:"last_sync_ms"`
	AvgSyncMs             float64 `json:"avg_sync_ms"`
}

func spoolResult(dir string, maxBytes int64, s spool.Stats) SpoolResult {
	return SpoolResult{
		Dir: dir, MaxBytes: maxBytes,
		Records: s.Records, Bytes: s.Bytes, Segments: s.Segments, OldestAgeSeconds: s.OldestAge.Seconds(),
		NextID: s.NextID, DurableID: s.DurableID, AckedID: s.AckedID,
		DroppedOverflow: s.DroppedOverflow, DroppedOverflowEvents: s.DroppedOverflowEvents, MovedEvents: s.MovedEvents,
		TornRecords: s.TornRecords, TornBytes: s.TornBytes, CorruptSegments: s.CorruptSegments,
		Syncs: s.Syncs, SyncErrors: s.SyncErrors, WriteErrors: s.WriteErrors,
		LastSyncMs: millis(s.LastSyncLatency), AvgSyncMs: millis(s.AvgSyncLatency),
	}
}

func (a *Agent) diagSpool(context.Context, map[string]string) (any, error) {
	return spoolResult(a.local.Spool.Dir, a.spoolMaxBytes(), a.sp.Stats()), nil
}

// HealthResult is the result of diag.health: Agent.Stats.
type HealthResult struct {
	DeviceID            string            `json:"device_id"`
	Connected           bool              `json:"connected"`
	ConnectAttempts     uint64            `json:"connect_attempts"`
	Connects            uint64            `json:"connects"`
	ConnectFailures     map[string]uint64 `json:"connect_failures"`
	Reconnects          map[string]uint64 `json:"reconnects"`
	Dropped             map[string]uint64 `json:"dropped"`
	BatchesSent         uint64            `json:"batches_sent"`
	RecordsSent         uint64            `json:"records_sent"`
	BytesSent           uint64            `json:"bytes_sent"`
	RefusedForRetry     uint64            `json:"refused_for_retry"`
	MeasurementsStored  uint64            `json:"measurements_stored"`
	MeasurementsInvalid uint64            `json:"measurements_invalid"`
	LastRTTMs           float64           `json:"last_rtt_ms"`
	WindowSeconds       float64           `json:"window_seconds"`
	Seq                 uint64            `json:"seq"`
	CommandsReceived    uint64            `json:"commands_received"`
	Commands            map[string]uint64 `json:"commands"`
	ConfigVersion       int64             `json:"config_version"`
	ChannelMalformed    uint64            `json:"channel_malformed"`
	Spool               SpoolResult       `json:"spool"`
}

func (a *Agent) diagHealth(context.Context, map[string]string) (any, error) {
	st := a.Stats()
	return HealthResult{
		DeviceID: st.DeviceID, Connected: st.Connected, ConnectAttempts: st.ConnectAttempts, Connects: st.Connects,
		ConnectFailures: st.ConnectFailures, Reconnects: st.Reconnects, Dropped: st.Dropped,
		BatchesSent: st.BatchesSent, RecordsSent: st.RecordsSent, BytesSent: st.BytesSent, RefusedForRetry: st.RefusedForRetry,
		MeasurementsStored: st.MeasurementsStored, MeasurementsInvalid: st.MeasurementsInvalid,
		LastRTTMs: millis(st.LastRTT), WindowSeconds: st.Window.Seconds(), Seq: st.Seq,
		CommandsReceived: st.CommandsReceived, Commands: st.Commands, ConfigVersion: st.ConfigVersion, ChannelMalformed: st.ChannelMalformed,
		Spool: spoolResult(a.local.Spool.Dir, a.spoolMaxBytes(), st.Spool),
	}, nil
}

// LogsResult is the result of diag.logs.
type LogsResult struct {
	// Lines are the newest log lines, oldest first, in the text format of log/slog.
	Lines []string `json:"lines"`
	// Truncated says that older lines were left out so that the reply fits the channel.
	Truncated bool `json:"truncated,omitempty"`
}

// maxLogsResult bounds the lines of diag.logs in a reply (JSON escaping may grow them).
const maxLogsResult = 40 << 10

func (a *Agent) diagLogs(_ context.Context, args map[string]string) (any, error) {
	n := defaultLogLinesArg
	if v, ok := args["lines"]; ok {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > a.ring.max {
			return nil, failf(protocol.FailBadArgs, "lines %q is not a number from 1 to %d", v, a.ring.max)
		}
	}
	lines := a.ring.last(n)
	r := LogsResult{Lines: lines}
	size := 0
	for i := len(lines) - 1; i >= 0; i-- {
		b, _ := json.Marshal(lines[i])
		if size += len(b) + 1; size > maxLogsResult {
			r.Lines, r.Truncated = lines[i+1:], true
			break
		}
	}
	if r.Lines == nil {
		r.Lines = []string{}
	}
	return r, nil
}

// ExecResult is the result of shell.exec and system.reboot.
type ExecResult struct {
	// ExitCode is the command's exit status; -1 when it did not exit by itself (killed at
	// its timeout, or not started).
	ExitCode int `json:"exit_code"`
	// Output is its standard output and error, interleaved, up to 16 KiB (invalid UTF-8
	// replaced); OutputBytes counts all of it, Truncated says some was left out.
	Output      string `json:"output"`
	OutputBytes int64  `json:"output_bytes"`
	Truncated   bool   `json:"truncated,omitempty"`
	// DurationMs is how long it ran.
	DurationMs float64 `json:"duration_ms"`
}

func (a *Agent) shellExec(ctx context.Context, args map[string]string) (any, error) {
	if !a.local.Commands.AllowShell {
		return nil, failf(protocol.FailRefused, "shell commands are off on this device; its local configuration must set commands.allow_shell: true")
	}
	command := args["command"]
	if strings.TrimSpace(command) == "" {
		return nil, failf(protocol.FailBadArgs, "shell.exec needs the argument \"command\"")
	}
	return a.runProgram(ctx, "/bin/sh", "-c", command)
}

func (a *Agent) systemReboot(ctx context.Context, _ map[string]string) (any, error) {
	argv := a.local.Commands.RebootCommand
	if len(argv) == 0 {
		return nil, failf(protocol.FailRefused, "no reboot command on this device; its local configuration must set commands.reboot_command")
	}
	a.log.Warn("rebooting the device on the server's request", "command", argv)
	return a.runProgram(ctx, argv[0], argv[1:]...)
}

// runProgram runs a program in a process group of its own until it exits or ctx ends, and
// returns its exit status and bounded output. A non-zero exit is a failure with reason
// "error" that carries the result.
func (a *Agent) runProgram(ctx context.Context, name string, args ...string) (any, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	source.OwnProcessGroup(cmd)
	cmd.WaitDelay = time.Second // children that keep the output open
	out := &boundedBuffer{max: maxCommandOutput}
	cmd.Stdout, cmd.Stderr = out, out
	start := a.clk.Now()
	err := cmd.Run()
	r := ExecResult{ExitCode: -1, Output: strings.ToValidUTF8(out.buf.String(), "\uFFFD"), OutputBytes: out.n,
		Truncated: out.n > int64(out.buf.Len()), DurationMs: millis(a.clk.Now().Sub(start))}
	if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
		r.ExitCode = cmd.ProcessState.ExitCode()
	}
	var exitErr *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return nil, &cmdError{reason: protocol.FailTimeout, result: r}
	case errors.As(err, &exitErr):
		return nil, &cmdError{reason: protocol.FailError, detail: err.Error(), result: r}
	case err != nil:
		return nil, &cmdError{reason: protocol.FailError, detail: err.Error(), result: r}
	}
	return r, nil
}

func (a *Agent) spoolMaxBytes() int64 {
	if n := a.local.Spool.MaxBytes; n > 0 {
		return n
	}
	return spool.DefaultMaxBytes
}

// boundedBuffer keeps the first max bytes written to it and counts them all.
type boundedBuffer struct {
	max  int
	buf  bytes.Buffer
	n    int64
	full bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.n += int64(len(p))
	if b.full {
		return len(p), nil
	}
	q := p
	if room := b.max - b.buf.Len(); len(q) > room {
		q = q[:room]
		// Do not cut a UTF-8 sequence at the bound.
		for len(q) > 0 && !utf8.RuneStart(p[len(q)]) {
			q = q[:len(q)-1]
		}
		b.full = true
	}
	b.buf.Write(q)
	return len(p), nil
}
