package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

func cmdOf(id, name string, args map[string]string) protocol.Command {
	return protocol.Command{ID: id, Name: name, Args: args, ExpiresAt: t0.Add(time.Hour)}
}

// runCmd runs one command through the agent's own path and returns its reply.
func runCmd(t *testing.T, a *Agent, c protocol.Command) protocol.Reply {
	t.Helper()
	r, _, ok := a.command(context.Background(), c)
	require.True(t, ok, "command %s answered", c.ID)
	return r
}

func resultOf[T any](t *testing.T, r protocol.Reply) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(r.Result, &v), "result %s", r.Result)
	return v
}

// TestCommands runs each command of the allowlist, and the ways a command is refused,
// through Agent.command, with real processes and files.
func TestCommands(t *testing.T) {
	clk := clock.NewFake(t0)
	marker := filepath.Join(t.TempDir(), "ran")
	// A listener that closes every connection: diag.connectivity connects, and its TLS
	// handshake fails.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	shell, _ := newUnitAgent(t, clk, func(c *Config) {
		c.Commands.AllowShell = true
		c.Commands.RebootCommand = []string{"/bin/sh", "-c", "echo rebooting now"}
		c.Uplink.DevAddress = ln.Addr().String()
		c.Identity.NetworkOperator = "Telia"
	})
	plain, _ := newUnitAgent(t, clk, nil)
	writeN(t, plain, clk, 0, 3)
	plain.log.Info("first line")
	plain.log.Info("second line", "k", "v")
	plain.log.Debug("not kept: below info and below the logger's level")

	cases := []struct {
		name   string
		a      *Agent
		cmd    protocol.Command
		state  string
		reason string
		check  func(t *testing.T, r protocol.Reply)
	}{
		{"diag.logs", plain, cmdOf("c-logs", CmdDiagLogs, map[string]string{"lines": "2"}), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			l := resultOf[LogsResult](t, r)
			require.Len(t, l.Lines, 2)
			// The newest lines, oldest first: the last one is the command's own log line.
			require.Contains(t, l.Lines[0], `msg="second line"`)
			require.Contains(t, l.Lines[0], "k=v")
			require.Contains(t, l.Lines[1], `msg="running command"`)
		}},
		{"diag.spool", plain, cmdOf("c-spool", CmdDiagSpool, nil), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			s := resultOf[SpoolResult](t, r)
			require.Equal(t, uint64(3), s.Records)
			require.Equal(t, int64(64<<20), s.MaxBytes)
			require.Equal(t, plain.local.Spool.Dir, s.Dir)
		}},
		{"diag.health", plain, cmdOf("c-health", CmdDiagHealth, nil), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			h := resultOf[HealthResult](t, r)
			require.Equal(t, "pump-7", h.DeviceID)
			require.Equal(t, uint64(3), h.MeasurementsStored)
			require.Equal(t, uint64(3), h.Spool.Records)
		}},
		{"diag.logs bad lines", plain, cmdOf("c-logs-bad", CmdDiagLogs, map[string]string{"lines": "lots"}), protocol.ReplyFailed, protocol.FailBadArgs, func(t *testing.T, r protocol.Reply) {
			require.Contains(t, r.Detail, `lines "lots" is not a number from 1 to 200`)
		}},
		{"diag.connectivity", shell, cmdOf("c-conn", CmdDiagConnectivity, nil), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			c := resultOf[ConnectivityResult](t, r)
			require.Equal(t, "pump-7.gw.millwright.internal", c.Host)
			require.Equal(t, ln.Addr().String(), c.Endpoint)
			require.Equal(t, "mqtt", c.Transport)
			require.Empty(t, c.DialError)
			require.NotEmpty(t, c.TLSError, "the listener closes the connection before the handshake")
			require.Equal(t, "Telia", c.NetworkOperator)
			require.NotNil(t, c.Reconnects)
		}},
		{"agent.restart", plain, cmdOf("c-restart", CmdAgentRestart, nil), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			require.JSONEq(t, `{"restarting":true}`, string(r.Result))
		}},
		{"system.reboot without a hook", plain, cmdOf("c-reboot-off", CmdSystemReboot, nil), protocol.ReplyFailed, protocol.FailRefused, func(t *testing.T, r protocol.Reply) {
			require.Contains(t, r.Detail, "commands.reboot_command")
		}},
		{"system.reboot", shell, cmdOf("c-reboot", CmdSystemReboot, nil), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			e := resultOf[ExecResult](t, r)
			require.Equal(t, 0, e.ExitCode)
			require.Equal(t, "rebooting now\n", e.Output)
		}},
		{"shell.exec refused", plain, cmdOf("c-sh-off", CmdShellExec, map[string]string{"command": "touch " + marker}), protocol.ReplyFailed, protocol.FailRefused, func(t *testing.T, r protocol.Reply) {
			require.Contains(t, r.Detail, "commands.allow_shell: true")
			require.NoFileExists(t, marker)
		}},
		{"shell.exec", shell, cmdOf("c-sh", CmdShellExec, map[string]string{"command": "echo out; echo err >&2"}), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			e := resultOf[ExecResult](t, r)
			require.Equal(t, 0, e.ExitCode)
			require.Equal(t, "out\nerr\n", e.Output)
			require.Equal(t, int64(8), e.OutputBytes)
			require.False(t, e.Truncated)
		}},
		{"shell.exec exit status", shell, cmdOf("c-sh-3", CmdShellExec, map[string]string{"command": "echo failing; exit 3"}), protocol.ReplyFailed, protocol.FailError, func(t *testing.T, r protocol.Reply) {
			e := resultOf[ExecResult](t, r)
			require.Equal(t, 3, e.ExitCode)
			require.Equal(t, "failing\n", e.Output)
			require.Contains(t, r.Detail, "exit status 3")
		}},
		{"shell.exec output bound", shell, cmdOf("c-sh-big", CmdShellExec, map[string]string{"command": "head -c 100000 /dev/zero | tr '\\0' x"}), protocol.ReplySucceeded, "", func(t *testing.T, r protocol.Reply) {
			e := resultOf[ExecResult](t, r)
			require.Len(t, e.Output, maxCommandOutput)
			require.Equal(t, int64(100000), e.OutputBytes)
			require.True(t, e.Truncated)
		}},
		{"shell.exec without command", shell, cmdOf("c-sh-none", CmdShellExec, nil), protocol.ReplyFailed, protocol.FailBadArgs, nil},
		{"unknown argument", shell, cmdOf("c-sh-arg", CmdShellExec, map[string]string{"command": "true", "user": "root"}), protocol.ReplyFailed, protocol.FailBadArgs, func(t *testing.T, r protocol.Reply) {
			require.Contains(t, r.Detail, `unknown argument "user"`)
		}},
		{"unknown command", plain, cmdOf("c-unknown", "firmware.flash", nil), protocol.ReplyFailed, protocol.FailUnknown, func(t *testing.T, r protocol.Reply) {
			require.Contains(t, r.Detail, `no command named "firmware.flash"`)
			require.Contains(t, r.Detail, CmdDiagConnectivity)
		}},
		{"expired", shell, protocol.Command{ID: "c-expired", Name: CmdShellExec, Args: map[string]string{"command": "touch " + marker}, ExpiresAt: t0},
			protocol.ReplyFailed, protocol.FailExpired, func(t *testing.T, r protocol.Reply) {
				require.NoFileExists(t, marker, "an expired command does not run")
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, tc.a, tc.cmd)
			require.Equal(t, tc.state, r.State, "reply %+v", r)
			require.Equal(t, tc.reason, r.Reason, "reply %+v", r)
			b, err := json.Marshal(r)
			require.NoError(t, err)
			_, err = protocol.DecodeReply(b)
			require.NoError(t, err, "the server takes the reply")
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	st := shell.Stats()
	require.Equal(t, uint64(4), st.Commands[protocol.ReplySucceeded], "%v", st.Commands)
	require.Equal(t, uint64(2), st.Commands[protocol.FailBadArgs])
	require.Equal(t, uint64(1), st.Commands[protocol.FailExpired])
}

// TestCommandTimeout: a command that outlives its timeout on the agent's clock is killed
// with everything it started, and answered "timeout" with what it printed.
func TestCommandTimeout(t *testing.T) {
	clk := clock.NewFake(t0)
	a, _ := newUnitAgent(t, clk, func(c *Config) { c.Commands.AllowShell = true })
	done := make(chan protocol.Reply, 1)
	start := time.Now()
	go func() {
		done <- runCmd(t, a, cmdOf("c-slow", CmdShellExec, map[string]string{"command": "echo started; sleep 30 & sleep 30; echo never"}))
	}()
	clk.BlockUntil(1) // the command's timeout
	require.Eventually(t, func() bool {
		return strings.Contains(strings.Join(a.ring.last(5), "\n"), `msg="running command"`)
	}, 10*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond) // let the shell print before its time runs out
	clk.Advance(shellTimeout)
	r := <-done
	require.Less(t, time.Since(start), 20*time.Second, "killed, not waited for")
	require.Equal(t, protocol.ReplyFailed, r.State)
	require.Equal(t, protocol.FailTimeout, r.Reason)
	require.Equal(t, "did not finish within 1m0s", r.Detail)
	e := resultOf[ExecResult](t, r)
	require.Equal(t, -1, e.ExitCode)
	require.Equal(t, "started\n", e.Output)
}

// TestCommandRunsOnce: a command delivered again — while it runs, after it ran, and after
// the agent restarted on the same spool — runs once; later deliveries get the kept reply.
func TestCommandRunsOnce(t *testing.T) {
	clk := clock.NewFake(t0)
	dir := filepath.Join(t.TempDir(), "spool")
	count := filepath.Join(t.TempDir(), "count")
	mk := func() *Agent {
		a, _ := newUnitAgent(t, clk, func(c *Config) { c.Commands.AllowShell = true; c.Spool.Dir = dir })
		return a
	}
	lines := func() int {
		b, err := os.ReadFile(count)
		require.NoError(t, err)
		return strings.Count(string(b), "\n")
	}
	cmd := cmdOf("c-once", CmdShellExec, map[string]string{"command": "echo ran >> " + count + "; echo done"})

	a := mk()
	first := runCmd(t, a, cmd)
	require.Equal(t, protocol.ReplySucceeded, first.State)
	require.Equal(t, 1, lines())
	require.Equal(t, first, runCmd(t, a, cmd), "delivered again: the kept reply")
	require.Equal(t, 1, lines())
	require.Equal(t, uint64(1), a.Stats().Commands[counterResent])

	// While a command runs, a second delivery gets nothing: the reply follows.
	c, _, err := a.cmds.begin("c-running", nil)
	require.NoError(t, err)
	require.Equal(t, claimNew, c)
	_, _, ok := a.command(context.Background(), cmdOf("c-running", CmdShellExec, map[string]string{"command": "echo ran >> " + count}))
	require.False(t, ok)
	require.Equal(t, 1, lines())
	// A reboot that took the agent down before its hook returned: its provisional reply.
	_, _, err = a.cmds.begin("c-rebooted", commandSpecs[CmdSystemReboot].provisional)
	require.NoError(t, err)
	require.NoError(t, a.Close())

	b := mk()
	again := runCmd(t, b, cmd)
	require.Equal(t, first, again, "after a restart: the kept reply")
	require.Equal(t, 1, lines())
	r := runCmd(t, b, cmdOf("c-running", CmdShellExec, map[string]string{"command": "echo ran >> " + count}))
	require.Equal(t, protocol.FailDuplicate, r.Reason, "it may have run before the restart: not run again")
	require.Equal(t, 1, lines())
	r = runCmd(t, b, cmdOf("c-rebooted", CmdSystemReboot, nil))
	require.Equal(t, protocol.ReplySucceeded, r.State)
	require.JSONEq(t, `{"rebooting":true}`, string(r.Result))
}

// TestCommandRecordBound: the record keeps the last 256 command IDs and at most 256 KiB of
// their replies, newest first.
func TestCommandRecordBound(t *testing.T) {
	dir := t.TempDir()
	s, err := openCmdStore(dir)
	require.NoError(t, err)
	big := protocol.Reply{State: protocol.ReplySucceeded, Result: json.RawMessage(`"` + strings.Repeat("x", 10<<10) + `"`)}
	for i := range maxCommandRecords + 10 {
		id := fmt.Sprintf("c-%d", i)
		c, _, err := s.begin(id, nil)
		require.NoError(t, err)
		require.Equal(t, claimNew, c)
		require.NoError(t, s.finish(id, big))
	}
	info, err := os.Stat(filepath.Join(dir, CommandsFile))
	require.NoError(t, err)
	require.Less(t, info.Size(), int64(maxKeptReplyBytes+maxCommandRecords*64))

	s, err = openCmdStore(dir)
	require.NoError(t, err)
	require.Len(t, s.recs, maxCommandRecords)
	c, _, err := s.begin("c-9", nil)
	require.NoError(t, err)
	require.Equal(t, claimNew, c, "forgotten: the oldest 10 of 266")
	c, r, err := s.begin(fmt.Sprintf("c-%d", maxCommandRecords+9), nil)
	require.NoError(t, err)
	require.Equal(t, claimDone, c)
	require.Equal(t, big, r, "the newest keep their replies")
	c, r, err = s.begin("c-20", nil)
	require.NoError(t, err)
	require.Equal(t, claimDone, c)
	require.Equal(t, protocol.FailDuplicate, r.Reason, "an old one keeps its ID, not its reply")

	// A damaged record is reported and replaced.
	require.NoError(t, os.WriteFile(filepath.Join(dir, CommandsFile), []byte("{torn"), 0o600))
	s, err = openCmdStore(dir)
	require.ErrorContains(t, err, "damaged")
	require.Empty(t, s.recs)
}

func TestLogRingBound(t *testing.T) {
	r := newLogRing(3)
	for i := range 5 {
		fmt.Fprintf(r, "line %d\n", i)
	}
	require.Equal(t, []string{"line 2", "line 3", "line 4"}, r.last(10))
	require.Equal(t, []string{"line 4"}, r.last(1))
	long := strings.Repeat("é", maxLogLineBytes)
	_, _ = r.Write([]byte(long + "\n"))
	got := r.last(1)[0]
	require.LessOrEqual(t, len(got), maxLogLineBytes+len("…"))
	require.True(t, strings.HasSuffix(got, "…"))
	// The byte bound: 40 lines of 1 KiB keep 32 KiB.
	r = newLogRing(DefaultLogLines)
	for range 40 {
		_, _ = r.Write([]byte(strings.Repeat("x", maxLogLineBytes) + "\n"))
	}
	require.Len(t, r.last(DefaultLogLines), maxLogRingBytes/maxLogLineBytes)
}
