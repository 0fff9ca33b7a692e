package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/prometheus/prometheus/promql"

	"github.com/millwright/millwright/internal/anomaly"
	"github.com/millwright/millwright/internal/api/apitypes"
)

// Anomalies is the anomaly finder, for GET /api/v1/anomalies and /api/v1/trends
// (anomaly.Finder has it).
type Anomalies interface {
	Latest() *anomaly.Report
	Trends(ctx context.Context, q anomaly.TrendQuery) (*anomaly.TrendReport, error)
}

var _ Anomalies = (*anomaly.Finder)(nil)

type anomalyAPI struct {
	finder Anomalies
	slots  *querySlots
}

func (a *anomalyAPI) needs(h func(*http.Request) (any, *apiError)) func(*http.Request) (any, *apiError) {
	return func(r *http.Request) (any, *apiError) {
		if a.finder == nil {
			return nil, &apiError{errUnavailable, errors.New("this server has no anomaly finder"), http.StatusServiceUnavailable}
		}
		return h(r)
	}
}

// finite keeps JSON encodable: a non-finite number (which a finding should not hold) is 0.
func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

func (a *anomalyAPI) latest(*http.Request) (any, *apiError) {
	rep := a.finder.Latest()
	if rep == nil {
		return nil, &apiError{errUnavailable, errors.New("no anomaly report yet: the finder has not run (it runs every interval, --anomaly-interval)"), http.StatusServiceUnavailable}
	}
	out := apitypes.AnomalyReport{
		Time:            rep.Time,
		WindowSeconds:   rep.Window.Seconds(),
		BaselineWindows: rep.BaselineWindows,
		Devices:         rep.Devices,
		Findings:        []apitypes.AnomalyFinding{},
		Outliers:        []apitypes.AnomalyOutlier{},
		DroppedValues:   rep.DroppedValues,
		TookSeconds:     rep.Took.Seconds(),
	}
	for _, f := range rep.Findings {
		e := f.Evidence
		out.Findings = append(out.Findings, apitypes.AnomalyFinding{
			Metric: string(f.Metric), Scope: f.Scope, Text: f.Text, Factor: finite(f.Factor),
			Dimension: f.Dimension, Value: f.Value, Share: finite(f.Share),
			GroupFactor: finite(f.GroupFactor), OwnFactor: finite(f.OwnFactor), RestNormal: f.RestNormal,
			Evidence: apitypes.AnomalyEvidence{
				FleetNow: finite(e.FleetNow), FleetBaseline: finite(e.FleetBaseline), FleetZ: finite(e.FleetZ),
				GroupNow: finite(e.GroupNow), GroupBaseline: finite(e.GroupBaseline), GroupZ: finite(e.GroupZ),
				GroupDevices: e.GroupDevices, GroupNum: finite(e.GroupCounts.Num), GroupDen: finite(e.GroupCounts.Den),
				RestNow: finite(e.RestNow), RestBaseline: finite(e.RestBaseline), RestZ: finite(e.RestZ),
				Candidates: e.Candidates,
			},
		})
	}
	for _, o := range rep.Outliers {
		out.Outliers = append(out.Outliers, apitypes.AnomalyOutlier{
			Metric: string(o.Metric), Dimension: o.Dimension, Value: o.Value, Text: o.Text,
			Factor: finite(o.Factor), FactorLow: finite(o.FactorLow), Z: finite(o.Z), Share: finite(o.Share),
			Devices: o.Devices, Now: finite(o.Now), RestNow: finite(o.RestNow),
		})
	}
	return out, nil
}

// trends answers GET /api/v1/trends?metric=…&dimension=…&range=90d&step=1w[&time=…][&source=…]:
// range and step default to 90d and 1w, time to now, source to auto.
func (a *anomalyAPI) trends(r *http.Request) (any, *apiError) {
	rng, step := r.FormValue("range"), r.FormValue("step")
	if rng == "" {
		rng = "90d"
	}
	if step == "" {
		step = "1w"
	}
	q, err := anomaly.ParseTrendQuery(r.FormValue("metric"), r.FormValue("dimension"), rng, step)
	if err != nil {
		return nil, badData(err)
	}
	if q.Source, err = anomaly.ParseTrendSource(r.FormValue("source")); err != nil {
		return nil, badData(err)
	}
	if r.FormValue("time") != "" {
		if q.End, err = parseTimeParam(r, "time", time.Time{}); err != nil {
			return nil, badData(err)
		}
	}
	if aerr := a.slots.acquire(r.Context()); aerr != nil {
		return nil, aerr
	}
	defer a.slots.release()
	rep, err := a.finder.Trends(r.Context(), q)
	if err != nil {
		var eqt promql.ErrQueryTimeout
		var eqc promql.ErrQueryCanceled
		switch {
		case errors.As(err, &eqt) || errors.Is(err, context.DeadlineExceeded):
			return nil, &apiError{errTimeout, err, http.StatusServiceUnavailable}
		case errors.As(err, &eqc) || errors.Is(err, context.Canceled):
			return nil, &apiError{errCanceled, err, http.StatusServiceUnavailable}
		}
		return nil, &apiError{errInternal, err, http.StatusInternalServerError}
	}
	out := apitypes.TrendReport{
		Metric: string(rep.Metric), Dimension: rep.Dimension, Start: rep.Start, End: rep.End,
		StepSeconds: rep.Step.Seconds(), Source: rep.Source, Series: []apitypes.TrendSeries{}, DroppedValues: rep.DroppedValues,
	}
	for _, s := range rep.Series {
		ts := apitypes.TrendSeries{
			Dimension: s.Dimension, Value: s.Value, Devices: s.Devices, Points: []apitypes.TrendPoint{},
			N: s.TrendResult.Points, SlopePerDay: finite(s.SlopePerDay), Start: finite(s.Start), End: finite(s.End),
			Tau: finite(s.Tau), P: finite(s.P), Q: finite(s.Q), Significant: s.Significant, Direction: s.Direction,
		}
		for _, p := range s.Points {
			ts.Points = append(ts.Points, apitypes.TrendPoint{T: p.T, V: finite(p.V)})
		}
		out.Series = append(out.Series, ts)
	}
	return out, nil
}
