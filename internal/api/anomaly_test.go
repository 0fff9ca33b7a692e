package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/anomaly"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
)

type fakeFinder struct {
	report *anomaly.Report
	asked  []anomaly.TrendQuery
	err    error
}

func (f *fakeFinder) Latest() *anomaly.Report { return f.report }

func (f *fakeFinder) Trends(_ context.Context, q anomaly.TrendQuery) (*anomaly.TrendReport, error) {
	f.asked = append(f.asked, q)
	if f.err != nil {
		return nil, f.err
	}
	t0 := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var pts []anomaly.Point
	for i := range 6 {
		pts = append(pts, anomaly.Point{T: t0.Add(time.Duration(i) * 7 * 24 * time.Hour), V: float64(i + 1)})
	}
	return &anomaly.TrendReport{Metric: q.Metric, Dimension: q.Dimension, Start: t0, End: pts[5].T, Step: q.Step,
		Series: []anomaly.TrendSeries{{Dimension: q.Dimension, Value: "2.1.0", Devices: 40, Points: pts, TrendResult: anomaly.Trend(pts)}}}, nil
}

func anomalyServer(t *testing.T, f api.Anomalies) func(path string) (int, apitypes.Response[json.RawMessage]) {
	srv := httptest.NewServer(api.Handler(api.Config{
		Anomalies: f,
		Authenticate: func(_ context.Context, tok string) (api.Principal, error) {
			if tok != "viewer" {
				return api.Principal{}, errors.New("no")
			}
			return api.Principal{Name: "operator:v", Role: registry.RoleViewer}, nil
		},
	}))
	t.Cleanup(srv.Close)
	return func(path string) (int, apitypes.Response[json.RawMessage]) {
		req, err := http.NewRequest("GET", srv.URL+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer viewer")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var body apitypes.Response[json.RawMessage]
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		return resp.StatusCode, body
	}
}

func TestAnomalyRoutes(t *testing.T) {
	get := anomalyServer(t, nil)
	code, body := get("/api/v1/anomalies")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, apitypes.ErrorUnavailable, body.ErrorType)

	f := &fakeFinder{}
	get = anomalyServer(t, f)
	code, body = get("/api/v1/anomalies")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body.Error, "no anomaly report yet")

	f.report = &anomaly.Report{Time: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC), Window: 15 * time.Minute, BaselineWindows: 8, Devices: 400,
		Findings: []anomaly.Finding{{Metric: anomaly.DropsPerDeviceHour, Factor: 4.1, Dimension: "firmware", Value: "2.1.0", Share: 0.92,
			GroupFactor: 9, OwnFactor: 8, RestNormal: true, Text: "drops per device-hour up 4.1×, explained by firmware=2.1.0 (92 % of the excess)",
			Evidence: anomaly.Evidence{GroupDevices: 40, GroupCounts: anomaly.Counts{Num: 90, Den: 10}}}},
		Outliers: []anomaly.Outlier{{Metric: anomaly.IngestDelaySeconds, Dimension: "operator", Value: "op-b", Factor: 4.5, Devices: 30, Text: "t"}}}
	code, body = get("/api/v1/anomalies")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, apitypes.StatusSuccess, body.Status)
	var rep apitypes.AnomalyReport
	require.NoError(t, json.Unmarshal(body.Data, &rep))
	require.Equal(t, 900.0, rep.WindowSeconds)
	require.Len(t, rep.Findings, 1)
	require.Equal(t, "drops per device-hour up 4.1×, explained by firmware=2.1.0 (92 % of the excess)", rep.Findings[0].Text)
	require.Equal(t, 90.0, rep.Findings[0].Evidence.GroupNum)
	require.Equal(t, "firmware", rep.Findings[0].Dimension)
	require.Equal(t, []apitypes.AnomalyOutlier{{Metric: "ingest_delay_seconds", Dimension: "operator", Value: "op-b", Factor: 4.5, Devices: 30, Text: "t"}}, rep.Outliers)

	code, body = get("/api/v1/trends?metric=drops_per_device_hour&dimension=firmware")
	require.Equal(t, http.StatusOK, code, body.Error)
	var tr apitypes.TrendReport
	require.NoError(t, json.Unmarshal(body.Data, &tr))
	require.Equal(t, anomaly.TrendQuery{Metric: anomaly.DropsPerDeviceHour, Dimension: "firmware", Range: 90 * 24 * time.Hour, Step: 7 * 24 * time.Hour}, f.asked[0])
	code, body = get("/api/v1/trends?metric=drops_per_device_hour&dimension=firmware&source=raw")
	require.Equal(t, http.StatusOK, code, body.Error)
	require.Equal(t, anomaly.SourceRaw, f.asked[1].Source)
	require.Equal(t, float64(7*24*3600), tr.StepSeconds)
	require.Len(t, tr.Series, 1)
	require.Equal(t, "up", tr.Series[0].Direction)
	require.Equal(t, 6, tr.Series[0].N)
	require.InDelta(t, 1.0/7, tr.Series[0].SlopePerDay, 1e-9)

	for q, want := range map[string]string{
		"metric=latency&dimension=firmware":                         `unknown metric "latency"`,
		"metric=offline_ratio&dimension=colour":                     `unknown dimension "colour"`,
		"metric=offline_ratio&dimension=model&range=soon":           "bad range",
		"metric=offline_ratio&dimension=model&step=0s":              "bad step",
		"metric=offline_ratio&dimension=model&range=90d&step=30s":   "at least 1m",
		"metric=offline_ratio&dimension=model&range=2w&step=1w":     "at least 3 steps",
		"metric=offline_ratio&dimension=model&range=10000h&step=1m": "too many points",
		"metric=offline_ratio&dimension=model&source=cache":         `unknown source "cache"`,
		"metric=offline_ratio&dimension=model&time=yesterday":       `invalid parameter "time"`,
	} {
		code, body = get("/api/v1/trends?" + url.PathEscape(q))
		require.Equal(t, http.StatusBadRequest, code, q)
		require.Equal(t, apitypes.ErrorBadData, body.ErrorType, q)
		require.Contains(t, body.Error, want, q)
	}
	f.err = context.DeadlineExceeded
	code, body = get("/api/v1/trends?metric=offline_ratio&dimension=group&range=30d&step=1d")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, apitypes.ErrorTimeout, body.ErrorType)
}
