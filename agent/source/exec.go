package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// ExecOptions configure an Exec source. The zero value of every field but
// Name and Command means its default; DefaultExecOptions shows them.
type ExecOptions struct {
	// Name identifies the source in logs and in Source.Name; required,
	// letters, digits, '_', '-' and '.'.
	Name string `yaml:"name"`
	// Command is the program to run: a path, or a name looked up in PATH.
	// It is run directly, not through a shell; use Command "sh" with Args
	// ["-c", "…"] for shell syntax. Required.
	Command string `yaml:"command"`
	// Args are the program's arguments.
	Args []string `yaml:"args"`
	// Interval is the time between the starts of two runs. Runs never
	// overlap. Default 60 s; zero means the default; minimum 1 s.
	Interval time.Duration `yaml:"interval"`
	// Timeout bounds one run: when it expires the command's whole process
	// group is killed with SIGKILL. Default 10 s, or Interval when that is
	// shorter; zero means the default; at most Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Event marks the command's measurements as events or alarms
	// (ClassEvent), which outlive raw samples when the spool is full.
	// Default false: raw samples (ClassRaw).
	Event bool `yaml:"event"`
	// MaxOutput bounds the standard output read from one run, in bytes;
	// a run that prints more is a failure and none of its output is used.
	// Default 1 MiB; zero means the default.
	MaxOutput int `yaml:"max_output"`

	// Clock drives the interval and the timeout and time-stamps the
	// records. Default the real clock; nil means the default.
	Clock clock.Clock `yaml:"-"`
	// Logger receives failed runs and bad output. Default: discard; nil
	// means the default.
	Logger *slog.Logger `yaml:"-"`
}

// Defaults of ExecOptions.
const (
	defaultExecInterval  = 60 * time.Second
	defaultExecTimeout   = 10 * time.Second
	defaultExecMaxOutput = 1 << 20
	// stderrKeep is how much of a command's standard error is kept for the
	// log.
	stderrKeep = 2048
)

// DefaultExecOptions returns the defaults (Name and Command have none).
func DefaultExecOptions() ExecOptions {
	return ExecOptions{Interval: defaultExecInterval, Timeout: defaultExecTimeout, MaxOutput: defaultExecMaxOutput}
}

func (o ExecOptions) withDefaults() ExecOptions {
	if o.Interval == 0 {
		o.Interval = defaultExecInterval
	}
	if o.Timeout == 0 {
		o.Timeout = min(defaultExecTimeout, o.Interval)
	}
	if o.MaxOutput == 0 {
		o.MaxOutput = defaultExecMaxOutput
	}
	return o
}

// Validate reports options that cannot work; the error wraps
// ErrInvalidOptions and names the field.
func (o ExecOptions) Validate() error {
	o = o.withDefaults()
	switch {
	case o.Name == "":
		return fmt.Errorf("%w: exec: name is required", ErrInvalidOptions)
	case sanitize(o.Name) != strings.ToLower(o.Name):
		return fmt.Errorf("%w: exec %q: name may hold only letters, digits, '_', '-' and '.'", ErrInvalidOptions, o.Name)
	case o.Command == "":
		return fmt.Errorf("%w: exec %q: command is required", ErrInvalidOptions, o.Name)
	case o.Interval < time.Second:
		return fmt.Errorf("%w: exec %q: interval %v is below the minimum of 1s", ErrInvalidOptions, o.Name, o.Interval)
	case o.Timeout < 0:
		return fmt.Errorf("%w: exec %q: timeout %v is negative", ErrInvalidOptions, o.Name, o.Timeout)
	case o.Timeout > o.Interval:
		return fmt.Errorf("%w: exec %q: timeout %v exceeds the interval %v", ErrInvalidOptions, o.Name, o.Timeout, o.Interval)
	case o.MaxOutput < 0:
		return fmt.Errorf("%w: exec %q: max_output %d is negative", ErrInvalidOptions, o.Name, o.MaxOutput)
	}
	return nil
}

// ExecStats are counters since the Exec was made.
type ExecStats struct {
	// Runs counts command runs.
	Runs uint64
	// Failures counts runs that did not exit with status 0: the command
	// could not start, exited non-zero, was killed by the timeout, or
	// printed more than MaxOutput.
	Failures uint64
	// Timeouts counts runs killed by the timeout (also in Failures).
	Timeouts uint64
	// BadLines counts lines of line-format output that could not be
	// parsed; the good lines of the same output are kept.
	BadLines uint64
	// BadOutput counts SenML outputs that Decode refused; nothing of such
	// an output is kept.
	BadOutput uint64
	// Records counts records written to the sink without error.
	Records uint64
	// WriteErrors counts runs whose records the sink refused; those
	// records are lost.
	WriteErrors uint64
}

// Exec runs a command every Interval and reads measurements from its
// standard output.
//
// Output that starts with '[' (after white space) is a SenML JSON pack,
// decoded and resolved by protocol.Decode with the clock's time as "now",
// so relative times ("t": -5) count back from the end of the run; the pack
// is used whole or, if invalid, not at all. Any other output is the line
// format, one measurement per line, time-stamped with the end of the run:
//
//	# comment
//	temperature 21.5 Cel
//	humidity 40.2 %RH
//	door_open false
//	mode "auto"
//
// A line is name, value and an optional unit, separated by white space; the
// value is a number, true, false or a double-quoted string with Go escapes.
// Bad lines are logged with their line number and counted; the good lines
// are kept. A command that fails (cannot start, exits non-zero) still has
// its output used; one killed by the timeout has its complete lines used.
// Failures are logged with the command name and the start of its standard
// error, once per new kind of failure (repeats go to Debug level).
type Exec struct {
	opts  ExecOptions
	clk   clock.Clock
	log   *slog.Logger
	probs *problems

	runs, failures, timeouts, badLines, badOutput, records, writeErrors atomic.Uint64
}

// NewExec returns an Exec source. It fails, wrapping ErrInvalidOptions, when
// opts do not validate.
func NewExec(opts ExecOptions) (*Exec, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	opts.Args = append([]string(nil), opts.Args...)
	e := &Exec{
		opts: opts,
		clk:  defaultClock(opts.Clock),
		log:  defaultLogger(opts.Logger).With("source", opts.Name, "command", opts.Command),
	}
	e.probs = newProblems(e.log)
	return e, nil
}

// Name returns ExecOptions.Name.
func (e *Exec) Name() string { return e.opts.Name }

// Stats returns the counters.
func (e *Exec) Stats() ExecStats {
	return ExecStats{
		Runs:        e.runs.Load(),
		Failures:    e.failures.Load(),
		Timeouts:    e.timeouts.Load(),
		BadLines:    e.badLines.Load(),
		BadOutput:   e.badOutput.Load(),
		Records:     e.records.Load(),
		WriteErrors: e.writeErrors.Load(),
	}
}

// Run runs the command at once and then every Interval until ctx ends,
// writing each run's records to the sink in one call (ClassEvent when
// Event is set, else ClassRaw). A write may take at most one Interval; a
// failed write is logged and its records are lost. When ctx ends, a
// running command is killed.
func (e *Exec) Run(ctx context.Context, sink Sink) error {
	class := ClassRaw
	if e.opts.Event {
		class = ClassEvent
	}
	every(ctx, e.clk, e.opts.Interval, func(ctx context.Context, _ time.Time) {
		recs := e.runOnce(ctx)
		if len(recs) == 0 || ctx.Err() != nil {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, e.opts.Interval)
		defer cancel()
		if err := sink.Write(wctx, recs, class); err != nil {
			e.writeErrors.Add(1)
			if ctx.Err() == nil {
				e.probs.report("write", "write exec output: "+err.Error(), "records", len(recs))
			}
			return
		}
		e.probs.ok("write", "exec output written again")
		e.records.Add(uint64(len(recs)))
	})
	return nil
}

// runOnce runs the command once and returns the records of its output.
func (e *Exec) runOnce(ctx context.Context) []protocol.Record {
	e.runs.Add(1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := e.clk.AfterFunc(e.opts.Timeout, func() {
		timedOut.Store(true)
		cancel()
	})
	cmd := exec.CommandContext(cctx, e.opts.Command, e.opts.Args...)
	OwnProcessGroup(cmd)
	// Output pipes held open by a background child must not stall Wait.
	cmd.WaitDelay = time.Second
	stdout := &capBuffer{max: e.opts.MaxOutput}
	stderr := &capBuffer{max: stderrKeep}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err := cmd.Run()
	timer.Stop()
	killGroup(cmd)
	if ctx.Err() != nil {
		return nil // shutting down
	}
	now := e.clk.Now()
	out := stdout.buf.Bytes()

	var exitErr *exec.ExitError
	switch {
	case timedOut.Load():
		e.failures.Add(1)
		e.timeouts.Add(1)
		e.probs.report("run", "exec "+e.opts.Name+": killed after timeout "+e.opts.Timeout.String(),
			"timeout", e.opts.Timeout, "stderr", stderr.text())
		// The last line may be cut short: use complete lines only.
		out = out[:bytes.LastIndexByte(out, '\n')+1]
	case stdout.over:
		e.failures.Add(1)
		e.probs.report("run", fmt.Sprintf("exec %s: output exceeds %d bytes, ignored", e.opts.Name, e.opts.MaxOutput),
			"max_output", e.opts.MaxOutput)
		return nil
	case errors.As(err, &exitErr):
		e.failures.Add(1)
		e.probs.report("run", "exec "+e.opts.Name+": "+err.Error(),
			"exit_code", exitErr.ExitCode(), "stderr", stderr.text())
	case errors.Is(err, exec.ErrWaitDelay):
		// It exited, but a background child kept its output open and was
		// killed: what it printed is still used.
		e.failures.Add(1)
		e.probs.report("run", "exec "+e.opts.Name+": a background process kept the output open and was killed")
	case err != nil:
		e.failures.Add(1)
		e.probs.report("run", "exec "+e.opts.Name+": "+err.Error())
		return nil
	default:
		e.probs.ok("run", "exec "+e.opts.Name+": succeeds again")
	}
	if !clockSet(now) {
		e.probs.report("clock", "system clock not set, output of "+e.opts.Name+" dropped", "now", now)
		return nil
	}
	return e.parse(out, now)
}

// parse turns output into records, logging and counting what is bad.
func (e *Exec) parse(out []byte, now time.Time) []protocol.Record {
	if isSenML(out) {
		lim := protocol.DefaultLimits()
		lim.MaxPayload = max(e.opts.MaxOutput, 1)
		b, _, err := protocol.Decode(out, now, lim)
		if err != nil {
			e.badOutput.Add(1)
			e.probs.report("output", "exec "+e.opts.Name+": SenML output refused: "+err.Error())
			return nil
		}
		e.probs.ok("output", "exec "+e.opts.Name+": output good again")
		return batchRecords(b)
	}
	recs, errs, nbad := parseLines(out, unixSeconds(now))
	if nbad == 0 {
		e.probs.ok("output", "exec "+e.opts.Name+": output good again")
		return recs
	}
	e.badLines.Add(uint64(nbad))
	lines := make([]int, len(errs))
	for i, le := range errs {
		lines[i] = le.Line
	}
	first := errs[0]
	e.probs.report("output",
		fmt.Sprintf("exec %s: %d bad output lines, first at line %d: %v", e.opts.Name, nbad, first.Line, first.Err),
		"line", first.Line, "bad_lines", nbad, "lines", lines, "kept", len(recs))
	return recs
}

// capBuffer keeps the first max bytes written to it and discards the rest,
// noting that it did, so a chatty command never blocks on a full pipe nor
// fills the agent's memory.
type capBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (c *capBuffer) Write(p []byte) (int, error) {
	room := c.max - c.buf.Len()
	if len(p) > room {
		c.over = true
		c.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	c.buf.Write(p)
	return len(p), nil
}

// text returns the kept bytes as a trimmed string, for logs.
func (c *capBuffer) text() string { return strings.TrimSpace(c.buf.String()) }
