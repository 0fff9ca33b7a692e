package ingest

import (
	"testing"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
)

func TestMetricName(t *testing.T) {
	cases := map[string]string{
		"temperature":                  "temperature",
		"urn:dev:ow:10e2073a01080063:": "urn:dev:ow:10e2073a01080063:",
		"motor-1.temp/bearing":         "motor_1_temp_bearing",
		"3phase_current":               "_3phase_current",
		"":                             "_",
	}
	for in, want := range cases {
		got := MetricName(in)
		require.Equal(t, want, got, in)
		require.True(t, model.LegacyValidation.IsValidMetricName(got), got)
	}
}

func FuzzMetricName(f *testing.F) {
	for _, s := range []string{"temperature", "a.b-c/d", "9x", "", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := MetricName(s); !model.LegacyValidation.IsValidMetricName(got) {
			t.Fatalf("MetricName(%q) = %q is not a valid metric name", s, got)
		}
	})
}
