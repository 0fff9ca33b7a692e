package alerting

import (
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// TestDefaultRules runs each rule of the built-in set on a synthetic fleet written into a real
// store: with its fault it fires (with the labels that name the fault), without it nothing
// does.
func TestDefaultRules(t *testing.T) {
	offlineFrom := func(at time.Time, state string) func(time.Time) string {
		return func(ts time.Time) string {
			if ts.Before(at) {
				return "online"
			}
			return state
		}
	}
	// When a fault starts; the evaluation runs from an hour before to 70 minutes after.
	fault := t0.Add(2 * time.Hour)
	end := fault.Add(70 * time.Minute)
	cases := []struct {
		name  string
		alert string
		n     int
		fault func(ds []*device)
		// want: the labels of each alert that fires; none for a fleet without a fault.
		want []map[string]string
		// also are alerts the fault may fire too.
		also []string
	}{
		{name: "firmware drops 6x", alert: "MillwrightGroupDropRateHigh", n: 100,
			fault: func(ds []*device) {
				for _, d := range ds[:40] {
					d.firmware, d.faultDrops = "2.1.0", 2.5
				}
			},
			want: []map[string]string{{"dimension": "firmware", "value": "2.1.0"}}},
		{name: "a 3-device group cannot fire on noise", alert: "MillwrightGroupDropRateHigh", n: 100,
			fault: func(ds []*device) {
				for _, d := range ds[:3] {
					d.firmware, d.faultDrops = "beta", 20
				}
			}},
		{name: "fleet drops evenly", alert: "MillwrightGroupDropRateHigh", n: 100,
			fault: func(ds []*device) {
				for _, d := range ds {
					d.faultDrops = 3
				}
			}},
		{name: "a fifth of the fleet goes silent", alert: "MillwrightFleetOnlineRatioLow", n: 50,
			fault: func(ds []*device) {
				for _, d := range ds[:10] {
					d.state = offlineFrom(fault, "silent")
				}
			},
			want: []map[string]string{{"severity": "critical"}}, also: []string{"MillwrightDevicesSilent"}},
		{name: "one device goes silent", alert: "MillwrightFleetOnlineRatioLow", n: 50,
			fault: func(ds []*device) { ds[0].state = offlineFrom(fault, "silent") }},
		{name: "long offline devices are not the live fleet", alert: "MillwrightFleetOnlineRatioLow", n: 50,
			fault: func(ds []*device) {
				for _, d := range ds[:30] {
					d.state = func(time.Time) string { return "offline" }
				}
			}},
		{name: "5 of 50 silent", alert: "MillwrightDevicesSilent", n: 50,
			fault: func(ds []*device) {
				for _, d := range ds[:5] {
					d.state = offlineFrom(fault, "silent")
				}
			},
			want: []map[string]string{{"severity": "warning"}}},
		{name: "1 of 50 silent", alert: "MillwrightDevicesSilent", n: 50,
			fault: func(ds []*device) { ds[0].state = offlineFrom(fault, "silent") }},
		{name: "malformed batches", alert: "MillwrightIngestRefusals", n: 50,
			fault: func(ds []*device) {
				for _, d := range ds[:10] {
					d.faultRefused, d.reason = 30, "malformed"
				}
			},
			want: []map[string]string{{"result": "malformed"}}},
		{name: "a few refusals", alert: "MillwrightIngestRefusals", n: 50,
			fault: func(ds []*device) { ds[0].faultRefused, ds[0].reason = 2, "too_large" }},
		{name: "a certificate expires in 7 days", alert: "MillwrightCertificatesExpiring", n: 20,
			fault: func(ds []*device) { ds[3].certExpiry = fault.Add(14*24*time.Hour - time.Second) },
			want:  []map[string]string{{"severity": "warning"}}},
		{name: "expired certificates of offline devices", alert: "MillwrightCertificatesExpiring", n: 20,
			fault: func(ds []*device) {
				ds[3].certExpiry = t0.Add(-30 * 24 * time.Hour)
				ds[3].state = func(time.Time) string { return "offline" }
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			ds := fleet(tc.n, t0)
			tc.fault(ds)
			writeFleet(t, s, ds, t0, end, fault, time.Minute)
			m := newManual(t, s, DefaultOptions(), Config{})
			// Before the fault nothing fires; after it, only the faulty case's alert (the
			// state of the previous evaluation is checked before each).
			seen := map[string]labels.Labels{}
			evalEvery(m, t0.Add(time.Hour), end, time.Minute, func(ts time.Time) {
				for _, r := range m.AlertingRules() {
					for _, a := range firing(t, m, r.Name()) {
						require.False(t, ts.Before(fault.Add(time.Minute)), "%s fired at %s before the fault", a.Labels, ts)
						if r.Name() != tc.alert {
							require.Contains(t, tc.also, r.Name(), "%s fired at %s", a.Labels, ts)
							continue
						}
						seen[a.Labels.String()] = a.Labels
					}
				}
			})
			require.Len(t, seen, len(tc.want), "%v", seen)
			for _, w := range tc.want {
				found := false
				for _, ls := range seen {
					match := true
					for k, v := range w {
						match = match && ls.Get(k) == v
					}
					found = found || match
				}
				require.True(t, found, "no alert with %v among %v", w, seen)
			}
		})
	}
}

// TestDefaultRulesAnomaly: the anomaly alert fires on a finding of the anomaly finder and
// says what it found.
func TestDefaultRulesAnomaly(t *testing.T) {
	s := openStore(t)
	finding := []string{"metric", "drops_per_device_hour", "dimension", "firmware", "value", "2.1.0"}
	writeSeries(t, s, labels.FromStrings(append([]string{labels.MetricName, "millwright_anomaly_factor"}, finding...)...), t0, t0.Add(10*time.Minute), time.Minute, 4.1)
	writeSeries(t, s, labels.FromStrings(append([]string{labels.MetricName, "millwright_anomaly_share"}, finding...)...), t0, t0.Add(10*time.Minute), time.Minute, 0.92)
	// A finding below the thresholds does not fire: the fleet's move too small, or the
	// group's share of it.
	small := []string{"metric", "offline_ratio", "dimension", "operator", "value", "op-b"}
	writeSeries(t, s, labels.FromStrings(append([]string{labels.MetricName, "millwright_anomaly_factor"}, small...)...), t0, t0.Add(10*time.Minute), time.Minute, 1.2)
	writeSeries(t, s, labels.FromStrings(append([]string{labels.MetricName, "millwright_anomaly_share"}, small...)...), t0, t0.Add(10*time.Minute), time.Minute, 0.9)
	part := []string{"metric", "ingest_delay_seconds", "dimension", "model", "value", "m-1"}
	writeSeries(t, s, labels.FromStrings(append([]string{labels.MetricName, "millwright_anomaly_factor"}, part...)...), t0, t0.Add(10*time.Minute), time.Minute, 3)
	writeSeries(t, s, labels.FromStrings(append([]string{labels.MetricName, "millwright_anomaly_share"}, part...)...), t0, t0.Add(10*time.Minute), time.Minute, 0.4)

	m := newManual(t, s, DefaultOptions(), Config{})
	evalEvery(m, t0, t0.Add(10*time.Minute), time.Minute, nil)
	got := firing(t, m, "MillwrightAnomaly")
	require.Len(t, got, 1)
	require.Equal(t, "drops_per_device_hour up 4.1×, explained by firmware=2.1.0", got[0].Annotations.Get("summary"))
	require.Equal(t, "drops_per_device_hour up 4.1×, explained by firmware=2.1.0 (92% of the excess). The finding in full: GET /api/v1/anomalies.", got[0].Annotations.Get("description"))

	// keep_firing_for: the finding gone (its series stale after 5 minutes), the alert keeps
	// firing for 15 minutes, then resolves.
	evalEvery(m, t0.Add(11*time.Minute), t0.Add(25*time.Minute), time.Minute, nil)
	require.Len(t, firing(t, m, "MillwrightAnomaly"), 1)
	evalEvery(m, t0.Add(26*time.Minute), t0.Add(40*time.Minute), time.Minute, nil)
	require.Empty(t, firing(t, m, "MillwrightAnomaly"))
}

// TestDefaultRulesRolloutHalted: a rollout halted by a gate raises an alert that carries the
// gate's evidence, and only while it is halted.
func TestDefaultRulesRolloutHalted(t *testing.T) {
	s := openStore(t)
	reason := "drops: 2 per device-hour on the new release (40 devices, 200 exposure) vs 0.2 on the old (360 devices, 3600): ratio 10 (fails at at least 1.5), p = 1e-30 (fails below 0.001)"
	writeSeries(t, s, labels.FromStrings(labels.MetricName, "millwright_rollout_halted", "rollout", "r-1", "version", "1.1.0", "reason", reason),
		t0, t0.Add(5*time.Minute), time.Minute, 1)
	m := newManual(t, s, DefaultOptions(), Config{})
	evalEvery(m, t0, t0.Add(5*time.Minute), time.Minute, nil)
	got := firing(t, m, "MillwrightRolloutHalted")
	require.Len(t, got, 1)
	require.Equal(t, "critical", got[0].Labels.Get("severity"))
	require.Equal(t, "Rollout r-1 of 1.1.0 halted by a health gate", got[0].Annotations.Get("summary"))
	require.Contains(t, got[0].Annotations.Get("description"), reason)
	require.Contains(t, got[0].Annotations.Get("description"), "millwright rollouts show r-1")
	evalEvery(m, t0.Add(11*time.Minute), t0.Add(12*time.Minute), time.Minute, nil)
	require.Empty(t, firing(t, m, "MillwrightRolloutHalted"), "the series ended: the rollout was resumed")
}
