// Package aggregate reduces measurements on the device before they reach the
// spool: edge aggregation. An Aggregator wraps the agent's sink (a
// source.Sink) and replaces the raw samples of the metrics its rules match
// by per-window statistics, so that a sensor read every second can be sent
// as a minute's min, max and mean.
//
// # Windows
//
// A rule's window is aligned to the Unix epoch: a sample at time t belongs
// to the window that starts at t truncated to a multiple of Window (for a
// one-minute window, whole UTC minutes). Each (name, unit) pair has its own
// window. A window closes, and its statistics are written to the wrapped
// sink, when
//
//   - a sample of the same series arrives for a later window, or
//   - the clock passes the window's end plus a grace period of Window/10
//     (at most 5 s), so that a metric that falls silent is still flushed.
//     A window that received samples after its end (data sent late, or
//     back-filled) waits for the grace period after its last sample
//     instead;
//   - or Flush is called, at shutdown.
//
// Each function of the rule gives one record named <name>_<function>
// ("boiler_temp_mean"), with the series' unit (none for count) and the
// window's END as its time: the statistic describes the window that ends
// at its timestamp, and a window's record never carries a time in the
// future of when it was computed. Aggregates are written as raw records
// (source.ClassRaw).
//
// A sample older than its series' open window, or than the last window
// already written, is late: it is passed through unchanged, under its own
// name, and counted in Stats.Late, rather than lost or folded into the
// wrong window.
//
// # What is aggregated
//
// Only raw records (source.ClassRaw) with a numeric value (v) and no sum
// whose name matches a rule; the first matching rule wins. Everything else
// passes through untouched, in the order given: events and alarms
// (source.ClassEvent), booleans, strings, data values, records with a sum,
// and names no rule matches.
//
// Aggregated samples are held in memory until their window closes: a sink
// call that returns nil for them means "accepted for aggregation", not
// "stored in the spool". A crash loses the open windows.
package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol"
)

// Func is an aggregation function.
type Func string

// The aggregation functions.
const (
	Min   Func = "min"   // smallest value
	Max   Func = "max"   // largest value
	Mean  Func = "mean"  // arithmetic mean
	Count Func = "count" // number of samples; the record has no unit
	Last  Func = "last"  // value of the latest sample by time (the later one given on a tie)
	Sum   Func = "sum"   // sum of the values, in the series' unit
)

// allFuncs are the functions in documentation order.
var allFuncs = []Func{Min, Max, Mean, Count, Last, Sum}

// DefaultFunctions are the functions of a rule that names none.
var DefaultFunctions = []Func{Min, Max, Mean}

// Rule says which metrics to aggregate, over what window, into which
// statistics.
type Rule struct {
	// Metric is a metric name, or a glob in which '*' matches any run of
	// characters ("line1_*_temp", "*"). Required.
	Metric string `yaml:"metric"`
	// Window is the aggregation window, aligned to the Unix epoch. At
	// least 1 s, in whole milliseconds. Required.
	Window time.Duration `yaml:"window"`
	// Functions are the statistics to emit per window, each once. Default
	// DefaultFunctions (min, max, mean); empty means the default.
	Functions []Func `yaml:"functions"`
}

// Validate reports a rule that cannot work.
func (r Rule) Validate() error {
	if r.Metric == "" {
		return fmt.Errorf("aggregate rule: metric is required")
	}
	for i := 0; i < len(r.Metric); i++ {
		c := r.Metric[i]
		if !(c == '*' || nameByte(c) || i > 0 && (c == '-' || c == ':' || c == '.' || c == '/' || c == '_')) {
			return fmt.Errorf("aggregate rule %q: metric: byte %d (%q) cannot be in a SenML name", r.Metric, i, c)
		}
	}
	if r.Window < time.Second {
		return fmt.Errorf("aggregate rule %q: window %v is below the minimum of 1s", r.Metric, r.Window)
	}
	if r.Window%time.Millisecond != 0 {
		return fmt.Errorf("aggregate rule %q: window %v is not a whole number of milliseconds", r.Metric, r.Window)
	}
	for i, f := range r.Functions {
		if !slices.Contains(allFuncs, f) {
			return fmt.Errorf("aggregate rule %q: functions: unknown function %q, known: min, max, mean, count, last, sum", r.Metric, f)
		}
		if slices.Contains(r.Functions[:i], f) {
			return fmt.Errorf("aggregate rule %q: functions: %q given twice", r.Metric, f)
		}
	}
	return nil
}

// ValidateRules validates every rule; the agent's configuration loader
// calls it, since Wrap panics on rules that do not validate.
func ValidateRules(rules []Rule) error {
	for i, r := range rules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("rule %d: %w", i, err)
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Stats are counters since Wrap.
type Stats struct {
	// Folded counts samples folded into windows.
	Folded uint64
	// Windows counts windows closed and written.
	Windows uint64
	// Emitted counts aggregate records written without error.
	Emitted uint64
	// Late counts samples passed through because their window was already
	// written or behind the open one.
	Late uint64
	// Passed counts records passed through untouched (events, non-numeric
	// values, names no rule matches; late samples count in Late).
	Passed uint64
	// EmitErrors counts timer flushes whose write to the wrapped sink
	// failed; their aggregates are lost. (Errors of writes made within
	// Write and Flush are returned to the caller instead.)
	EmitErrors uint64
}

// flushWriteTimeout bounds a write of the flush timer, which has no caller
// context.
const flushWriteTimeout = 30 * time.Second

// Aggregator is a source.Sink that aggregates matching records and passes
// the rest to the sink it wraps. It is safe for concurrent use.
type Aggregator struct {
	next  source.Sink
	rules []Rule
	clk   clock.Clock
	log   *slog.Logger

	mu     sync.Mutex
	series map[seriesKey]*series
	// ruleOf caches the index of the rule a name matches, -1 for none.
	ruleOf map[string]int
	timer  clock.Timer
	due    time.Time // when timer fires; zero when it is not armed

	folded, windows, emitted, late, passed, emitErrors atomic.Uint64
}

var _ source.Sink = (*Aggregator)(nil)

type seriesKey struct{ name, unit string }

// series is one (name, unit) pair's state.
type series struct {
	key  seriesKey
	rule int
	// open is true while a window collects samples.
	open bool
	// start and end bound the open window, Unix milliseconds [start, end).
	start, end int64
	// closedUntil is the end of the last window written: samples before it
	// are late.
	closedUntil int64
	// seen is the clock's time of the last sample folded.
	seen time.Time

	count     int64
	min, max  float64
	mean, sum float64
	last      float64
	lastT     int64
}

// Wrap returns an Aggregator that applies rules to what is written to it and
// writes the results to next. Rules are tried in order; the first whose
// Metric matches a record's name applies. clk aligns windows with the
// records' times and drives the flush timer; nil means the real clock.
// Wrap panics if ValidateRules(rules) fails: validate rules when loading
// the configuration. Rules with no Functions get DefaultFunctions.
func Wrap(next source.Sink, rules []Rule, clk clock.Clock) *Aggregator {
	if err := ValidateRules(rules); err != nil {
		panic("aggregate.Wrap: " + err.Error())
	}
	if clk == nil {
		clk = clock.Real()
	}
	rs := make([]Rule, len(rules))
	for i, r := range rules {
		if len(r.Functions) == 0 {
			r.Functions = DefaultFunctions
		}
		r.Functions = slices.Clone(r.Functions)
		rs[i] = r
	}
	return &Aggregator{
		next:   next,
		rules:  rs,
		clk:    clk,
		log:    slog.New(slog.DiscardHandler),
		series: make(map[seriesKey]*series),
		ruleOf: make(map[string]int),
	}
}

// SetLogger sets where failed timer flushes are logged (default: nowhere).
// Call it before the first Write.
func (a *Aggregator) SetLogger(l *slog.Logger) {
	if l != nil {
		a.log = l
	}
}

// Stats returns the counters.
func (a *Aggregator) Stats() Stats {
	return Stats{
		Folded:     a.folded.Load(),
		Windows:    a.windows.Load(),
		Emitted:    a.emitted.Load(),
		Late:       a.late.Load(),
		Passed:     a.passed.Load(),
		EmitErrors: a.emitErrors.Load(),
	}
}

// Write folds the matching raw numeric records into their windows and
// writes, in one call to the wrapped sink, the records that pass through
// followed by the aggregates of the windows these records closed. Events
// (any class but raw) go to the wrapped sink as they are. Write returns the
// wrapped sink's error, and nil when every record was folded and nothing
// needed writing.
func (a *Aggregator) Write(ctx context.Context, recs []protocol.Record, class source.Class) error {
	if class != source.ClassRaw || len(a.rules) == 0 {
		a.passed.Add(uint64(len(recs)))
		return a.next.Write(ctx, recs, class)
	}
	a.mu.Lock()
	now := a.clk.Now()
	var out, aggs []protocol.Record
	var passed, late uint64
	for i := range recs {
		r := &recs[i]
		ri := a.match(r)
		if ri < 0 {
			out = append(out, *r)
			passed++
			continue
		}
		t := recordMillis(r.Time, now)
		k := seriesKey{r.Name, r.Unit}
		s := a.series[k]
		if s == nil {
			s = &series{key: k, rule: ri}
			a.series[k] = s
		}
		w := a.rules[s.rule].Window.Milliseconds()
		start := floorDiv(t, w) * w
		switch {
		case s.open && start == s.start:
		case s.open && start > s.start:
			aggs = a.closeLocked(aggs, s)
			a.openLocked(s, start, w, now)
		case !s.open && t >= s.closedUntil:
			a.openLocked(s, start, w, now)
		default:
			out = append(out, *r)
			late++
			continue
		}
		s.fold(*r.Value, t)
		s.seen = now
		a.folded.Add(1)
	}
	a.mu.Unlock()
	a.passed.Add(passed)
	a.late.Add(late)
	out = append(out, aggs...)
	if len(out) == 0 {
		return nil
	}
	err := a.next.Write(ctx, out, source.ClassRaw)
	if err == nil {
		a.emitted.Add(uint64(len(aggs)))
	}
	return err
}

// Flush closes every open window, early, and writes its aggregates, with
// the window's end as their time like any other. Call it at shutdown,
// before the wrapped sink closes. Samples that arrive later for a flushed
// window are late and pass through.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.mu.Lock()
	open := make([]*series, 0, len(a.series))
	for _, s := range a.series {
		if s.open {
			open = append(open, s)
		}
	}
	aggs := a.closeAllLocked(nil, open)
	if a.timer != nil {
		a.timer.Stop()
		a.due = time.Time{}
	}
	a.mu.Unlock()
	if len(aggs) == 0 {
		return nil
	}
	if err := a.next.Write(ctx, aggs, source.ClassRaw); err != nil {
		return fmt.Errorf("flush aggregates: %w", err)
	}
	a.emitted.Add(uint64(len(aggs)))
	return nil
}

// fire is the flush timer: it closes the windows that are due and re-arms
// for the next one.
func (a *Aggregator) fire() {
	a.mu.Lock()
	now := a.clk.Now()
	a.due = time.Time{}
	var dueSeries []*series
	var next time.Time
	for k, s := range a.series {
		if !s.open {
			// Forget series idle for ten windows, so that the state of
			// names that stopped does not accumulate.
			w := a.rules[s.rule].Window
			if s.seen.Add(10 * w).Before(now) {
				delete(a.series, k)
			}
			continue
		}
		d := a.dueOf(s)
		if !d.After(now) {
			dueSeries = append(dueSeries, s)
		} else if next.IsZero() || d.Before(next) {
			next = d
		}
	}
	aggs := a.closeAllLocked(nil, dueSeries)
	if !next.IsZero() {
		a.armLocked(next, now)
	}
	a.mu.Unlock()
	if len(aggs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushWriteTimeout)
	defer cancel()
	if err := a.next.Write(ctx, aggs, source.ClassRaw); err != nil {
		a.emitErrors.Add(1)
		a.log.Warn("write aggregates: "+err.Error(), "records", len(aggs))
		return
	}
	a.emitted.Add(uint64(len(aggs)))
}

// match returns the index of the rule that applies to r, or -1.
func (a *Aggregator) match(r *protocol.Record) int {
	if r.Value == nil || r.Sum != nil || r.BoolValue != nil || r.StringValue != nil || r.DataValue != nil ||
		math.IsNaN(*r.Value) || math.IsInf(*r.Value, 0) {
		return -1
	}
	if ri, ok := a.ruleOf[r.Name]; ok {
		return ri
	}
	ri := -1
	for i := range a.rules {
		if source.MatchGlob(a.rules[i].Metric, r.Name) {
			ri = i
			break
		}
	}
	if len(a.ruleOf) >= 1<<16 {
		clear(a.ruleOf)
	}
	a.ruleOf[r.Name] = ri
	return ri
}

// openLocked starts a window at start for s and makes sure the timer will
// close it.
func (a *Aggregator) openLocked(s *series, start, w int64, now time.Time) {
	s.open = true
	s.start, s.end = start, start+w
	s.count = 0
	s.seen = now
	a.armLocked(a.dueOf(s), now)
}

// dueOf is when the timer closes s's window: a grace period after its end,
// or after its last sample if that came later.
func (a *Aggregator) dueOf(s *series) time.Time {
	end := time.UnixMilli(s.end)
	if s.seen.After(end) {
		end = s.seen
	}
	return end.Add(grace(a.rules[s.rule].Window))
}

// grace is how long after a window's end the timer waits for samples taken
// just before the end but written just after it.
func grace(w time.Duration) time.Duration { return min(w/10, 5*time.Second) }

// armLocked makes the timer fire no later than due.
func (a *Aggregator) armLocked(due, now time.Time) {
	if !a.due.IsZero() && !due.Before(a.due) {
		return
	}
	a.due = due
	d := due.Sub(now)
	if a.timer == nil {
		a.timer = a.clk.AfterFunc(d, a.fire)
		return
	}
	a.timer.Reset(d)
}

// closeAllLocked closes the windows of ss, in the order of their end, name
// and unit, and appends their aggregates to dst.
func (a *Aggregator) closeAllLocked(dst []protocol.Record, ss []*series) []protocol.Record {
	slices.SortFunc(ss, func(x, y *series) int {
		if x.end != y.end {
			return int(x.end - y.end)
		}
		if c := strings.Compare(x.key.name, y.key.name); c != 0 {
			return c
		}
		return strings.Compare(x.key.unit, y.key.unit)
	})
	for _, s := range ss {
		dst = a.closeLocked(dst, s)
	}
	return dst
}

// closeLocked closes s's window and appends its aggregates to dst.
func (a *Aggregator) closeLocked(dst []protocol.Record, s *series) []protocol.Record {
	s.open = false
	s.closedUntil = s.end
	if s.count == 0 {
		return dst
	}
	a.windows.Add(1)
	t := float64(s.end) / 1000
	for _, f := range a.rules[s.rule].Functions {
		unit := s.key.unit
		var v float64
		switch f {
		case Min:
			v = s.min
		case Max:
			v = s.max
		case Mean:
			v = s.mean
		case Count:
			v, unit = float64(s.count), ""
		case Last:
			v = s.last
		case Sum:
			v = s.sum
		}
		if math.IsInf(v, 0) || math.IsNaN(v) {
			continue // a sum that overflowed float64: not sendable
		}
		dst = append(dst, protocol.Record{Name: s.key.name + "_" + string(f), Unit: unit, Time: t, Value: &v})
	}
	return dst
}

// fold adds a sample taken at t (Unix milliseconds) to the open window.
func (s *series) fold(v float64, t int64) {
	s.count++
	if s.count == 1 {
		s.min, s.max, s.mean, s.sum = v, v, v, v
		s.last, s.lastT = v, t
		return
	}
	s.min = min(s.min, v)
	s.max = max(s.max, v)
	s.sum += v
	// The running mean does not overflow where the sum would.
	s.mean += (v - s.mean) / float64(s.count)
	if t >= s.lastT {
		s.last, s.lastT = v, t
	}
}

// recordMillis is a record's time in Unix milliseconds. Records given to a
// Sink carry absolute times; a relative one (below 2^28 s) is taken
// relative to now, as SenML would.
func recordMillis(t float64, now time.Time) int64 {
	if t < 1<<28 {
		return now.UnixMilli() + int64(math.Round(t*1000))
	}
	return int64(math.Round(t * 1000))
}

// floorDiv is a/b rounded towards minus infinity.
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
