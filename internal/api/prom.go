package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/internal/api/apitypes"
)

// Error types, listed with their meanings in apitypes.
const (
	errBadData      = apitypes.ErrorBadData
	errExecution    = apitypes.ErrorExecution
	errTimeout      = apitypes.ErrorTimeout
	errCanceled     = apitypes.ErrorCanceled
	errInternal     = apitypes.ErrorInternal
	errNotFound     = apitypes.ErrorNotFound
	errUnavailable  = apitypes.ErrorUnavailable
	errUnauthorized = apitypes.ErrorUnauthorized
	errForbidden    = apitypes.ErrorForbidden
	errConflict     = apitypes.ErrorConflict
)

var (
	minTime = time.Unix(math.MinInt64/1000+62135596801, 0).UTC()
	maxTime = time.Unix(math.MaxInt64/1000-62135596801, 999999999).UTC()
)

// promAPI answers the Prometheus-compatible query endpoints over a queryable and an engine.
type promAPI struct {
	queryable storage.Queryable
	engine    *promql.Engine
	parser    parser.Parser
	now       func() time.Time
	// timeout bounds a query, its wait for a slot included; zero for no bound here.
	timeout time.Duration
	slots   *querySlots
}

type queryData struct {
	ResultType parser.ValueType `json:"resultType"`
	Result     parser.Value     `json:"result"`
}

func (a *promAPI) query(r *http.Request) (any, *apiError) {
	ts, err := parseTimeParam(r, "time", a.now())
	if err != nil {
		return nil, badData(err)
	}
	ctx, cancel, err := a.queryContext(r)
	if err != nil {
		return nil, badData(err)
	}
	defer cancel()
	q, err := a.engine.NewInstantQuery(ctx, a.queryable, nil, r.FormValue("query"), ts)
	if err != nil {
		return nil, badData(err)
	}
	return a.exec(ctx, q)
}

func (a *promAPI) queryRange(r *http.Request) (any, *apiError) {
	start, err := parseTime(r.FormValue("start"))
	if err != nil {
		return nil, badData(fmt.Errorf("invalid parameter \"start\": %w", err))
	}
	end, err := parseTime(r.FormValue("end"))
	if err != nil {
		return nil, badData(fmt.Errorf("invalid parameter \"end\": %w", err))
	}
	if end.Before(start) {
		return nil, badData(errors.New("end timestamp must not be before start time"))
	}
	step, err := parseDuration(r.FormValue("step"))
	if err != nil {
		return nil, badData(fmt.Errorf("invalid parameter \"step\": %w", err))
	}
	if step <= 0 {
		return nil, badData(errors.New("zero or negative query resolution step widths are not accepted. Try a positive integer"))
	}
	if end.Sub(start)/step > 11000 {
		return nil, badData(errors.New("exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"))
	}
	ctx, cancel, err := a.queryContext(r)
	if err != nil {
		return nil, badData(err)
	}
	defer cancel()
	q, err := a.engine.NewRangeQuery(ctx, a.queryable, nil, r.FormValue("query"), start, end, step)
	if err != nil {
		return nil, badData(err)
	}
	return a.exec(ctx, q)
}

// exec runs q once it holds a query slot; ctx bounds the wait and the run together.
func (a *promAPI) exec(ctx context.Context, q promql.Query) (any, *apiError) {
	defer q.Close()
	if aerr := a.slots.acquire(ctx); aerr != nil {
		return nil, aerr
	}
	defer a.slots.release()
	res := q.Exec(ctx)
	if res.Err != nil {
		var (
			eqc promql.ErrQueryCanceled
			eqt promql.ErrQueryTimeout
			es  promql.ErrStorage
		)
		switch {
		case errors.As(res.Err, &eqc):
			return nil, &apiError{errCanceled, res.Err, http.StatusServiceUnavailable}
		case errors.As(res.Err, &eqt):
			return nil, &apiError{errTimeout, res.Err, http.StatusServiceUnavailable}
		case errors.As(res.Err, &es):
			return nil, &apiError{errInternal, res.Err, http.StatusInternalServerError}
		}
		return nil, &apiError{errExecution, res.Err, http.StatusUnprocessableEntity}
	}
	v := res.Value
	switch t := v.(type) {
	case promql.Vector:
		if t == nil {
			v = promql.Vector{}
		}
	case promql.Matrix:
		if t == nil {
			v = promql.Matrix{}
		}
	}
	return queryData{ResultType: v.Type(), Result: v}, nil
}

func (a *promAPI) series(r *http.Request) (any, *apiError) {
	if err := r.ParseForm(); err != nil {
		return nil, badData(err)
	}
	sel := r.Form["match[]"]
	if len(sel) == 0 {
		return nil, badData(errors.New("no match[] parameter provided"))
	}
	matcherSets, err := a.parser.ParseMetricSelectors(sel)
	if err != nil {
		return nil, badData(err)
	}
	q, hints, aerr := a.querier(r)
	if aerr != nil {
		return nil, aerr
	}
	defer q.Close()
	limit := hints.Limit
	var sets []storage.SeriesSet
	for _, ms := range matcherSets {
		sets = append(sets, q.Select(r.Context(), true, hints, ms...))
	}
	set := storage.NewMergeSeriesSet(sets, 0, storage.ChainedSeriesMerge)
	out := []labels.Labels{}
	for set.Next() {
		out = append(out, set.At().Labels())
		if limit > 0 && len(out) >= limit {
			break
		}
	}
	if err := set.Err(); err != nil {
		return nil, &apiError{errExecution, err, http.StatusUnprocessableEntity}
	}
	return out, nil
}

func (a *promAPI) labelNames(r *http.Request) (any, *apiError) {
	return a.labelStrings(r, func(q storage.Querier, lh *storage.LabelHints, ms []*labels.Matcher) ([]string, error) {
		n, _, err := q.LabelNames(r.Context(), lh, ms...)
		return n, err
	})
}

func (a *promAPI) labelValues(r *http.Request, name string) (any, *apiError) {
	if !model.UTF8Validation.IsValidLabelName(name) {
		return nil, badData(fmt.Errorf("invalid label name: %q", name))
	}
	return a.labelStrings(r, func(q storage.Querier, lh *storage.LabelHints, ms []*labels.Matcher) ([]string, error) {
		v, _, err := q.LabelValues(r.Context(), name, lh, ms...)
		return v, err
	})
}

// metricMetadata is one entry of /api/v1/metadata, as Prometheus answers it.
type metricMetadata struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// maxMetadataUnits bounds the units listed for one measurement.
const maxMetadataUnits = 10

// metadata answers /api/v1/metadata: each metric name's type and unit, for Grafana's query
// builder and unit display. Measurements are gauges with their SenML units (one entry per unit
// label value, at most 10); the server's own device series follow Prometheus' naming
// conventions (_total is a counter, _bytes and _seconds give the unit). "metric" selects one
// name, "limit" bounds the names.
func (a *promAPI) metadata(r *http.Request) (any, *apiError) {
	if err := r.ParseForm(); err != nil {
		return nil, badData(err)
	}
	limit := 0
	if s := r.FormValue("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, badData(fmt.Errorf(`"limit" %q is not a number of metrics`, s))
		}
		limit = n
	}
	q, _, aerr := a.querier(r)
	if aerr != nil {
		return nil, aerr
	}
	defer q.Close()
	names := []string{}
	if m := r.FormValue("metric"); m != "" {
		names = append(names, m)
	} else {
		var err error
		if names, _, err = q.LabelValues(r.Context(), labels.MetricName, &storage.LabelHints{Limit: limit}); err != nil {
			return nil, &apiError{errExecution, err, http.StatusUnprocessableEntity}
		}
	}
	out := map[string][]metricMetadata{}
	for _, name := range limitStrings(names, limit) {
		if md, ok := seriesMetadata(name); ok {
			out[name] = []metricMetadata{md}
			continue
		}
		units, _, err := q.LabelValues(r.Context(), "unit", &storage.LabelHints{Limit: maxMetadataUnits},
			labels.MustNewMatcher(labels.MatchEqual, labels.MetricName, name))
		if err != nil {
			return nil, &apiError{errExecution, err, http.StatusUnprocessableEntity}
		}
		if len(units) == 0 {
			units = []string{""}
		}
		for _, u := range units {
			out[name] = append(out[name], metricMetadata{Type: "gauge", Help: "a device measurement (SenML)", Unit: u})
		}
	}
	return out, nil
}

// seriesMetadata describes the series the server writes itself (millwright_*), by
// Prometheus' naming conventions.
func seriesMetadata(name string) (metricMetadata, bool) {
	if !strings.HasPrefix(name, "millwright_") {
		return metricMetadata{}, false
	}
	md := metricMetadata{Type: "gauge", Help: "written by the Millwright server (docs/monitoring.md)"}
	base := name
	switch {
	case strings.HasSuffix(name, "_total"):
		md.Type, base = "counter", strings.TrimSuffix(name, "_total")
	case strings.HasSuffix(name, "_info"):
		md.Type = "info"
	}
	switch {
	case strings.HasSuffix(base, "_bytes"):
		md.Unit = "bytes"
	case strings.HasSuffix(base, "_seconds"), strings.HasSuffix(base, "_seconds_sum"), strings.HasSuffix(base, "_seconds_count"):
		md.Unit = "seconds"
	}
	return md, true
}

// labelStrings runs get once per match[] selector (or once without matchers) and returns the
// sorted union, as the label-names and label-values endpoints answer.
func (a *promAPI) labelStrings(r *http.Request, get func(storage.Querier, *storage.LabelHints, []*labels.Matcher) ([]string, error)) (any, *apiError) {
	if err := r.ParseForm(); err != nil {
		return nil, badData(err)
	}
	matcherSets, err := a.parser.ParseMetricSelectors(r.Form["match[]"])
	if err != nil {
		return nil, badData(err)
	}
	q, hints, aerr := a.querier(r)
	if aerr != nil {
		return nil, aerr
	}
	defer q.Close()
	if len(matcherSets) == 0 {
		matcherSets = [][]*labels.Matcher{nil}
	}
	lh := &storage.LabelHints{Limit: hints.Limit}
	out := []string{}
	for _, ms := range matcherSets {
		v, err := get(q, lh, ms)
		if err != nil {
			return nil, &apiError{errExecution, err, http.StatusUnprocessableEntity}
		}
		out = append(out, v...)
	}
	slices.Sort(out)
	return limitStrings(slices.Compact(out), hints.Limit), nil
}

// querier opens a querier over the request's start and end (default: all time).
func (a *promAPI) querier(r *http.Request) (storage.Querier, *storage.SelectHints, *apiError) {
	start, err := parseTimeParam(r, "start", minTime)
	if err != nil {
		return nil, nil, badData(err)
	}
	end, err := parseTimeParam(r, "end", maxTime)
	if err != nil {
		return nil, nil, badData(err)
	}
	limit, err := parseLimit(r)
	if err != nil {
		return nil, nil, badData(err)
	}
	hints := &storage.SelectHints{Start: start.UnixMilli(), End: end.UnixMilli(), Func: "series", Limit: limit}
	q, err := a.queryable.Querier(hints.Start, hints.End)
	if err != nil {
		return nil, nil, &apiError{errUnavailable, err, http.StatusServiceUnavailable}
	}
	return q, hints, nil
}

func limitStrings(s []string, limit int) []string {
	if limit > 0 && len(s) > limit {
		return s[:limit]
	}
	return s
}

func parseLimit(r *http.Request) (int, error) {
	s := r.FormValue("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid parameter \"limit\": %q is not a non-negative integer", s)
	}
	return n, nil
}

// queryContext bounds a query by its timeout parameter and the API's query timeout, whichever
// is shorter, from now: the wait for a query slot and the evaluation share it.
func (a *promAPI) queryContext(r *http.Request) (context.Context, context.CancelFunc, error) {
	d, bounded := a.timeout, a.timeout > 0
	if s := r.FormValue("timeout"); s != "" {
		p, err := parseDuration(s)
		if err != nil {
			return nil, nil, fmt.Errorf("invalid parameter \"timeout\": %w", err)
		}
		if !bounded || p < d {
			d, bounded = p, true
		}
	}
	if !bounded {
		return r.Context(), func() {}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	return ctx, cancel, nil
}

func parseTimeParam(r *http.Request, name string, def time.Time) (time.Time, error) {
	s := r.FormValue(name)
	if s == "" {
		return def, nil
	}
	t, err := parseTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid parameter %q: %w", name, err)
	}
	return t, nil
}

// parseTime reads a Unix timestamp in seconds (with fraction) or an RFC 3339 time, as
// Prometheus does.
func parseTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f > float64(maxTime.Unix()) || f < float64(minTime.Unix()) {
			return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp: out of range", s)
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1000))*int64(time.Millisecond)).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	switch s {
	case minTime.Format(time.RFC3339Nano):
		return minTime, nil
	case maxTime.Format(time.RFC3339Nano):
		return maxTime, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

// parseDuration reads seconds (with fraction) or a Prometheus duration such as 5m.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		d := f * float64(time.Second)
		if math.IsNaN(d) || d > float64(math.MaxInt64) || d < float64(math.MinInt64) {
			return 0, fmt.Errorf("cannot parse %q to a valid duration: it overflows int64", s)
		}
		return time.Duration(d), nil
	}
	if d, err := model.ParseDuration(strings.TrimSpace(s)); err == nil {
		return time.Duration(d), nil
	}
	return 0, fmt.Errorf("cannot parse %q to a valid duration", s)
}
