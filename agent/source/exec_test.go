package source

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

func newTestExec(t *testing.T, script string, mod func(*ExecOptions)) (*Exec, *logBuffer) {
	t.Helper()
	log, logs := newTestLogger()
	opts := ExecOptions{
		Name:    "probe",
		Command: "sh",
		Args:    []string{"-c", script},
		Clock:   clock.NewFake(epoch),
		Logger:  log,
	}
	if mod != nil {
		mod(&opts)
	}
	e, err := NewExec(opts)
	require.NoError(t, err)
	return e, logs
}

func ptr[T any](v T) *T { return &v }

func TestExecLineOutput(t *testing.T) {
	e, logs := newTestExec(t, `
echo '# a comment'
echo 'temp 21.5 Cel'
echo
echo 'door_open false'
printf 'mode "auto \\"eco\\"" # trailing comment\n'
printf 'pressure\t1.5e5\tPa\r\n'
printf 'count 7'`, nil)
	recs := e.runOnce(context.Background())
	requireResolved(t, recs)
	tm := float64(epoch.Unix())
	require.Equal(t, []protocol.Record{
		{Name: "temp", Unit: "Cel", Time: tm, Value: ptr(21.5)},
		{Name: "door_open", Time: tm, BoolValue: ptr(false)},
		{Name: "mode", Time: tm, StringValue: ptr(`auto "eco"`)},
		{Name: "pressure", Unit: "Pa", Time: tm, Value: ptr(1.5e5)},
		{Name: "count", Time: tm, Value: ptr(7.0)},
	}, recs)
	require.Equal(t, ExecStats{Runs: 1}, e.Stats())
	require.Empty(t, logs.String())
}

func TestExecSenMLOutput(t *testing.T) {
	e, _ := newTestExec(t, `echo '  [{"bn":"pump1_","n":"flow","u":"m3/s","v":0.25,"t":-5},{"n":"on","vb":true,"mw_seq":1}]'`, nil)
	recs := e.runOnce(context.Background())
	require.Empty(t, recs, "mw_seq on the second record makes the pack invalid")
	require.Equal(t, uint64(1), e.Stats().BadOutput)

	e, _ = newTestExec(t, `echo '[{"bn":"pump1_","n":"flow","u":"m3/s","v":0.25,"t":-5,"mw_seq":9},{"n":"on","vb":true},{"n":"abs","v":1,"t":1740000000.5}]'`, nil)
	recs = e.runOnce(context.Background())
	requireResolved(t, recs)
	tm := float64(epoch.Unix())
	require.Equal(t, []protocol.Record{
		{Name: "pump1_flow", Unit: "m3/s", Time: tm - 5, Value: ptr(0.25)},
		{Name: "pump1_on", Time: tm, BoolValue: ptr(true)},
		{Name: "pump1_abs", Time: 1740000000.5, Value: ptr(1.0)},
	}, recs, "relative times resolve against the clock, mw_seq is dropped")
}

func TestExecBadLinesKeepGoodOnes(t *testing.T) {
	e, logs := newTestExec(t, `printf 'temp 21.5\ntemp\nbad name 1\nhum 40 %%RH\nx NaN\ny 1 u extra\n'`, nil)
	recs := e.runOnce(context.Background())
	require.Len(t, recs, 2)
	require.Equal(t, "temp", recs[0].Name)
	require.Equal(t, "hum", recs[1].Name)
	require.Equal(t, "%RH", recs[1].Unit)
	st := e.Stats()
	require.Equal(t, uint64(4), st.BadLines)
	require.Zero(t, st.Failures, "the command itself succeeded")
	out := logs.String()
	require.Contains(t, out, "exec probe: 4 bad output lines, first at line 2")
	require.Contains(t, out, "line=2")
	require.Contains(t, out, "source=probe")
	require.Contains(t, out, "command=sh")
	require.Contains(t, out, "lines=\"[2 3 5 6]\"")

	// The same bad output again is not logged at Warn again.
	e.runOnce(context.Background())
	require.Equal(t, 1, strings.Count(logs.String(), "bad output lines"))
}

func TestExecFailures(t *testing.T) {
	t.Run("non-zero exit keeps output", func(t *testing.T) {
		e, logs := newTestExec(t, `echo 'level 3'; echo 'sensor offline' >&2; exit 3`, nil)
		recs := e.runOnce(context.Background())
		require.Len(t, recs, 1)
		require.Equal(t, uint64(1), e.Stats().Failures)
		require.Contains(t, logs.String(), "exit_code=3")
		require.Contains(t, logs.String(), `stderr="sensor offline"`)
	})
	t.Run("missing command", func(t *testing.T) {
		log, logs := newTestLogger()
		e, err := NewExec(ExecOptions{Name: "missing", Command: "/nonexistent/probe", Clock: clock.NewFake(epoch), Logger: log})
		require.NoError(t, err)
		require.Empty(t, e.runOnce(context.Background()))
		require.Equal(t, uint64(1), e.Stats().Failures)
		require.Contains(t, logs.String(), "exec missing:")
		require.Contains(t, logs.String(), "no such file")
	})
	t.Run("output over the limit", func(t *testing.T) {
		e, logs := newTestExec(t, `i=0; while [ $i -lt 100 ]; do echo "v$i $i"; i=$((i+1)); done`, func(o *ExecOptions) { o.MaxOutput = 100 })
		require.Empty(t, e.runOnce(context.Background()))
		require.Equal(t, uint64(1), e.Stats().Failures)
		require.Contains(t, logs.String(), "output exceeds 100 bytes")
	})
	t.Run("clock not set", func(t *testing.T) {
		e, _ := newTestExec(t, `echo a 1`, func(o *ExecOptions) { o.Clock = clock.NewFake(time.Unix(100, 0)) })
		require.Empty(t, e.runOnce(context.Background()))
	})
}

// TestExecTimeoutKillsProcessGroup runs a command that starts a background
// child and hangs: the timeout must kill both, and the complete lines
// printed before it are kept.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	e, logs := newTestExec(t, `sleep 60 & echo $! > `+pidFile+`; echo 'early 1'; printf 'cut 2'; wait`, func(o *ExecOptions) {
		o.Clock = clock.Real()
		o.Timeout = 300 * time.Millisecond
		o.Interval = time.Second
	})
	start := time.Now()
	recs := e.runOnce(context.Background())
	require.Less(t, time.Since(start), 5*time.Second)
	require.Len(t, recs, 1, "only complete lines of a killed command are used")
	require.Equal(t, "early", recs[0].Name)
	st := e.Stats()
	require.Equal(t, uint64(1), st.Timeouts)
	require.Equal(t, uint64(1), st.Failures)
	require.Contains(t, logs.String(), "killed after timeout 300ms")

	b, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !processAlive(pid) }, 5*time.Second, 20*time.Millisecond,
		"background child %d survived the timeout", pid)
}

// processAlive reports whether pid runs (a zombie waiting for a reaper
// counts as dead).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestExecRun(t *testing.T) {
	clk := clock.NewFake(epoch)
	dir := t.TempDir()
	counter := filepath.Join(dir, "n")
	e, _ := newTestExec(t, `n=$(cat `+counter+` 2>/dev/null || echo 0); n=$((n+1)); echo $n > `+counter+`; echo "alarm_count $n"`, func(o *ExecOptions) {
		o.Clock = clk
		o.Interval = time.Minute
		o.Event = true
	})
	sink := newRecordSink()
	stop := runSource(t, e, sink)
	w := sink.next(t)
	require.Equal(t, ClassEvent, w.class)
	require.Equal(t, 1.0, value(t, w.recs[0]))
	require.Equal(t, float64(epoch.Unix()), w.recs[0].Time)

	clk.BlockUntil(1)
	clk.Advance(time.Minute)
	w = sink.next(t)
	require.Equal(t, 2.0, value(t, w.recs[0]))
	require.Equal(t, float64(epoch.Add(time.Minute).Unix()), w.recs[0].Time)
	require.NoError(t, stop())
	require.Equal(t, uint64(2), e.Stats().Records)
	require.Equal(t, "probe", e.Name())
}

func TestExecRunStopsRunningCommand(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	e, _ := newTestExec(t, `touch `+started+` && sleep 60`, func(o *ExecOptions) { o.Clock = clock.Real() })
	sink := newRecordSink()
	stop := runSource(t, e, sink)
	require.Eventually(t, func() bool { _, err := os.Stat(started); return err == nil }, 10*time.Second, time.Millisecond,
		"the command runs")
	start := time.Now()
	require.NoError(t, stop())
	require.Less(t, time.Since(start), 5*time.Second)
	sink.none(t)
}

func TestExecOptionsValidate(t *testing.T) {
	ok := ExecOptions{Name: "t", Command: "true"}
	for _, tc := range []struct {
		name string
		mod  func(*ExecOptions)
		err  string
	}{
		{"minimal", func(*ExecOptions) {}, ""},
		{"no name", func(o *ExecOptions) { o.Name = "" }, "name is required"},
		{"bad name", func(o *ExecOptions) { o.Name = "a b" }, "name may hold only"},
		{"no command", func(o *ExecOptions) { o.Command = "" }, "command is required"},
		{"short interval", func(o *ExecOptions) { o.Interval = time.Millisecond }, "below the minimum"},
		{"timeout over interval", func(o *ExecOptions) { o.Interval, o.Timeout = 5*time.Second, 6*time.Second }, "exceeds the interval"},
		{"timeout defaults to interval", func(o *ExecOptions) { o.Interval = 2 * time.Second }, ""},
		{"negative output", func(o *ExecOptions) { o.MaxOutput = -1 }, "max_output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mod(&o)
			_, err := NewExec(o)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidOptions)
			require.ErrorContains(t, err, tc.err)
		})
	}
	e, err := NewExec(ExecOptions{Name: "t", Command: "true", Interval: 2 * time.Second})
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, e.opts.Timeout)
}

// parseLineCases is the table of the line format, also the seed of
// FuzzParseLines.
var parseLineCases = []struct {
	line string
	want *protocol.Record // nil: blank or comment
	err  error
}{
	{"temp 21.5", &protocol.Record{Name: "temp", Value: ptr(21.5)}, nil},
	{"temp 21.5 Cel", &protocol.Record{Name: "temp", Unit: "Cel", Value: ptr(21.5)}, nil},
	{"  temp\t-4e-3\t%RH  ", &protocol.Record{Name: "temp", Unit: "%RH", Value: ptr(-4e-3)}, nil},
	{"line1/pump.flow:a-b 0x1p-2", &protocol.Record{Name: "line1/pump.flow:a-b", Value: ptr(0.25)}, nil},
	{"on true", &protocol.Record{Name: "on", BoolValue: ptr(true)}, nil},
	{"on false # closed", &protocol.Record{Name: "on", BoolValue: ptr(false)}, nil},
	{`mode "auto"`, &protocol.Record{Name: "mode", StringValue: ptr("auto")}, nil},
	{`msg "a \"b\" # c\tü" txt`, &protocol.Record{Name: "msg", Unit: "txt", StringValue: ptr("a \"b\" # c\tü")}, nil},
	{`empty ""`, &protocol.Record{Name: "empty", StringValue: ptr("")}, nil},
	{"", nil, nil},
	{"   \t", nil, nil},
	{"# temp 1", nil, nil},
	{"  #", nil, nil},
	{"temp", nil, errFields},
	{"temp 1 Cel extra", nil, errFields},
	{"temp TRUE", nil, errValue},
	{"temp 1,5", nil, errValue},
	{"temp NaN", nil, errNotFinite},
	{"temp +Inf", nil, errNotFinite},
	{"temp 1e999", nil, errNotFinite},
	{"_temp 1", nil, errName},
	{"tëmp 1", nil, errName},
	{`"temp" 1`, nil, errName},
	{`mode "auto`, nil, errQuote},
	{`mode "auto"x`, nil, errQuote},
	{`mode "\xff"`, nil, errStringUTF8},
	{`temp 1 "Cel"`, nil, errUnit},
	{"temp 1 C\xffl", nil, errUnit},
}

func TestParseLine(t *testing.T) {
	for _, tc := range parseLineCases {
		t.Run(tc.line, func(t *testing.T) {
			rec, ok, err := parseLine(tc.line+"\n", 1.75e9)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			if tc.want == nil {
				require.False(t, ok)
				return
			}
			require.True(t, ok)
			want := *tc.want
			want.Time = 1.75e9
			require.Equal(t, want, rec)
		})
	}
}

func TestParseLinesNumbersAndLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("a 1\n\n")
	for range maxLineErrors + 5 {
		b.WriteString("bad\n")
	}
	b.WriteString("z 2")
	recs, errs, nbad := parseLines([]byte(b.String()), 1.75e9)
	require.Len(t, recs, 2)
	require.Equal(t, maxLineErrors+5, nbad)
	require.Len(t, errs, maxLineErrors)
	require.Equal(t, 3, errs[0].Line)
	require.Equal(t, "line 3: want name, value and an optional unit", errs[0].Error())
}
