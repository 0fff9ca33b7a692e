package anomaly

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
)

// Store is what the finder needs of the telemetry store (internal/tsdb.Store has it).
type Store interface {
	Engine() *promql.Engine
	Queryable() storage.Queryable
	Appender(ctx context.Context) (storage.Appender, error)
}

// ErrTooManyPoints is returned for a trend query whose range holds more steps than
// MaxTrendPoints.
var ErrTooManyPoints = errors.New("range / step gives too many points")

// MaxTrendPoints bounds the steps of one trend query: Theil–Sen and Mann–Kendall are
// quadratic in the points.
const MaxTrendPoints = 1000

// facts is one snapshot of the fleet's devices and their dimension values.
type facts struct {
	keys map[string][]Key // device → its keys
	// values counts the devices per key; dropped counts, per dimension, the values left out by
	// MaxValues.
	values  map[Key]int
	dropped map[string]int
}

// perDevice is, per device, a value per window (NaN: no sample).
type perDevice map[string][]float64

// promDuration writes d as PromQL reads it: whole seconds.
func promDuration(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// instant evaluates qs at ts.
func instant(ctx context.Context, st Store, qs string, ts time.Time) (promql.Vector, error) {
	q, err := st.Engine().NewInstantQuery(ctx, st.Queryable(), nil, qs, ts)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, err)
	}
	return v, nil
}

// byDevice evaluates qs (a query whose series each have a distinct device label) at the
// steps start, start+step, …, end and returns each device's values, n of them.
func byDevice(ctx context.Context, st Store, qs string, start time.Time, step time.Duration, n int) (perDevice, error) {
	end := start.Add(time.Duration(n-1) * step)
	q, err := st.Engine().NewRangeQuery(ctx, st.Queryable(), nil, qs, start, end, step)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, res.Err)
	}
	m, err := res.Matrix()
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, err)
	}
	out := perDevice{}
	for _, s := range m {
		dev := s.Metric.Get("device")
		vals := make([]float64, n)
		for i := range vals {
			vals[i] = math.NaN()
		}
		for _, p := range s.Floats {
			i := int((p.T - start.UnixMilli()) / step.Milliseconds())
			if i >= 0 && i < n {
				vals[i] = p.F
			}
		}
		out[dev] = vals
	}
	return out, nil
}

// loadFacts reads the devices' firmware, model, operator and groups at ts, keeping at most
// maxValues values per dimension (the largest).
func loadFacts(ctx context.Context, st Store, ts time.Time, maxValues int) (*facts, error) {
	info, err := instant(ctx, st, "millwright_device_info", ts)
	if err != nil {
		return nil, err
	}
	groups, err := instant(ctx, st, "millwright_device_group", ts)
	if err != nil {
		return nil, err
	}
	f := &facts{keys: map[string][]Key{}, values: map[Key]int{}, dropped: map[string]int{}}
	for _, s := range info {
		dev := s.Metric.Get("device")
		if _, seen := f.keys[dev]; seen || dev == "" {
			continue // one info series per device (the monitor ends a changed one at once)
		}
		var ks []Key
		for _, d := range []string{"firmware", "model", "operator"} {
			if v := s.Metric.Get(d); v != "" {
				ks = append(ks, Key{d, v})
			}
		}
		f.keys[dev] = ks
	}
	for _, s := range groups {
		dev, g := s.Metric.Get("device"), s.Metric.Get("group")
		ks, known := f.keys[dev]
		if !known || g == "" || slices.Contains(ks, Key{"group", g}) {
			continue // only devices the info series knows are in the fleet, each group once
		}
		f.keys[dev] = append(ks, Key{"group", g})
	}
	for _, ks := range f.keys {
		for _, k := range ks {
			f.values[k]++
		}
	}
	// The cardinality bound: per dimension, keep the maxValues values with the most devices.
	for _, d := range Dimensions {
		var vs []Key
		for k := range f.values {
			if k.Dimension == d {
				vs = append(vs, k)
			}
		}
		if len(vs) <= maxValues {
			continue
		}
		slices.SortFunc(vs, func(a, b Key) int {
			if c := f.values[b] - f.values[a]; c != 0 {
				return c
			}
			return cmp.Compare(a.Value, b.Value)
		})
		for _, k := range vs[maxValues:] {
			delete(f.values, k)
		}
		f.dropped[d] = len(vs) - maxValues
	}
	return f, nil
}

// input builds metric m's Input from the per-device values of windows+1 windows (the last
// one current). Devices without facts are left out; a device's keys dropped by the
// cardinality bound still count in the fleet.
//
// For drops, den holds each device's online fraction of the window, and the exposure is
// that times hours, the device-hours it was online: a device added to the fleet an hour ago,
// or switched off, adds no exposure to the windows it was not there for.
func (f *facts) input(m Metric, windows int, num, den perDevice, hours float64) Input {
	in := Input{Metric: m, Slices: map[Key]Series{}}
	newSeries := func() Series { return Series{Baseline: make([]Counts, windows)} }
	in.Fleet = newSeries()
	for k, n := range f.values {
		s := newSeries()
		s.Devices = n
		in.Slices[k] = s
	}
	in.Fleet.Devices = len(f.keys)
	for dev, ks := range f.keys {
		for w := 0; w <= windows; w++ {
			var c Counts
			switch m {
			case DropsPerDeviceHour:
				c = Counts{Num: at(num[dev], w, 0), Den: at(den[dev], w, 0) * hours}
			case OfflineRatio: // num holds the online fraction; no sample: not counted
				on := at(num[dev], w, math.NaN())
				if math.IsNaN(on) {
					continue
				}
				c = Counts{Num: 1 - on, Den: 1}
			default:
				c = Counts{Num: at(num[dev], w, 0), Den: at(den[dev], w, 0)}
			}
			if c.Num == 0 && c.Den == 0 {
				continue
			}
			addTo(&in.Fleet, w, c)
			for _, k := range ks {
				s, ok := in.Slices[k]
				if !ok {
					continue
				}
				addTo(&s, w, c)
				in.Slices[k] = s
			}
		}
	}
	return in
}

func at(vs []float64, i int, missing float64) float64 {
	if i >= len(vs) || math.IsNaN(vs[i]) {
		return missing
	}
	return vs[i]
}

// onlineQuery is the per-device online fraction of a window.
func onlineQuery(w time.Duration) string {
	return `avg_over_time(millwright_device_online[` + promDuration(w) + `])`
}

// metricQueries are the per-device PromQL expressions of a metric's numerator and
// denominator over a window w (the denominator empty for the offline ratio).
func metricQueries(m Metric, w time.Duration) (num, den string) {
	r := "[" + promDuration(w) + "]"
	switch m {
	case DropsPerDeviceHour:
		return `sum by (device) (increase(millwright_device_disconnects_total{cause!="clean"}` + r + `))`, onlineQuery(w)
	case IngestDelaySeconds:
		return `sum by (device) (increase(millwright_device_ingest_delay_seconds_sum` + r + `))`,
			`sum by (device) (increase(millwright_device_ingest_delay_seconds_count` + r + `))`
	case OfflineRatio:
		return onlineQuery(w), ""
	}
	return "", ""
}

// collect reads metric m's Input for the windows+1 windows of length w ending at now, with the
// devices and values of fs. cache (nil: none) keeps the per-device answers of one run by
// query, so that the online fraction, which two metrics use, is read once.
func collect(ctx context.Context, st Store, fs *facts, m Metric, now time.Time, w time.Duration, windows int, cache map[string]perDevice) (Input, error) {
	numQ, denQ := metricQueries(m, w)
	start := now.Add(-time.Duration(windows) * w)
	read := func(q string) (perDevice, error) {
		if v, ok := cache[q]; ok {
			return v, nil
		}
		v, err := byDevice(ctx, st, q, start, w, windows+1)
		if err == nil && cache != nil {
			cache[q] = v
		}
		return v, err
	}
	num, err := read(numQ)
	if err != nil {
		return Input{}, err
	}
	var den perDevice
	if denQ != "" {
		if den, err = read(denQ); err != nil {
			return Input{}, err
		}
	}
	return fs.input(m, windows, num, den, w.Hours()), nil
}

// modelDuration parses a Prometheus duration ("90d", "1w", "15m").
func modelDuration(s string) (time.Duration, error) {
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: must be positive", s)
	}
	return time.Duration(d), nil
}
