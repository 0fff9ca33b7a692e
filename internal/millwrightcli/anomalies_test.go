package millwrightcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestAnomaliesAndTrends writes the monitor's series for 400 devices into a real server's
// store — two hours and three quarters of a drop per device-hour, then a quarter hour where
// firmware 2.1.0 drops five times as often — runs the anomaly finder, and reads its report
// and the trends through the commands.
func TestAnomaliesAndTrends(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, nil)
	conn := []string{"--server", "https://" + srv.HTTPAddr().String(), "--data", srv.DataDir()}
	cli := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := run(append(args, conn...)...)
		require.Zero(t, code, "%v: %s", args, stderr)
		return stdout
	}
	code, _, stderr := run(append([]string{"anomalies"}, conn...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "no anomaly report yet")

	now := time.Now().Truncate(time.Minute)
	start := now.Add(-165 * time.Minute)
	app, err := srv.Store().Appender(context.Background())
	require.NoError(t, err)
	for i := range 400 {
		id := fmt.Sprintf("dev-%03d", i)
		fw := []string{"2.0.0", "2.1.0", "1.9.0", "2.0.0"}[i%4]
		info := labels.FromStrings("__name__", "millwright_device_info", "device", id, "firmware", fw, "model", "gw-100", "operator", "op-a")
		drops := labels.FromStrings("__name__", "millwright_device_disconnects_total", "device", id, "cause", "reset")
		online := labels.FromStrings("__name__", "millwright_device_online", "device", id)
		n := 0.0
		for m := 0; start.Add(time.Duration(m) * time.Minute).Before(now.Add(time.Second)); m++ {
			ts := start.Add(time.Duration(m) * time.Minute)
			every := 60 // minutes between drops
			if fw == "2.1.0" && now.Sub(ts) < 15*time.Minute {
				every = 12
			}
			if (m+i)%every == 0 {
				n++
			}
			_, err = app.Append(0, info, ts.UnixMilli(), 1)
			require.NoError(t, err)
			_, err = app.Append(0, drops, ts.UnixMilli(), n)
			require.NoError(t, err)
			_, err = app.Append(0, online, ts.UnixMilli(), 1)
			require.NoError(t, err)
		}
	}
	require.NoError(t, app.Commit())
	_, err = srv.Anomaly().RunOnce(context.Background())
	require.NoError(t, err)

	var rep apitypes.AnomalyReport
	require.NoError(t, json.Unmarshal([]byte(cli("anomalies", "-o", "json")), &rep))
	require.Equal(t, 400, rep.Devices)
	require.Len(t, rep.Findings, 1)
	require.Equal(t, "drops_per_device_hour", rep.Findings[0].Metric)
	require.Equal(t, "firmware", rep.Findings[0].Dimension)
	require.Equal(t, "2.1.0", rep.Findings[0].Value)
	table := cli("anomalies")
	t.Logf("millwright anomalies:\n%s", table)
	require.Contains(t, table, "400 devices")
	require.Contains(t, table, "firmware=2.1.0")
	require.Contains(t, table, "drops per device-hour up ")

	var tr apitypes.TrendReport
	require.NoError(t, json.Unmarshal([]byte(cli("trends", "--metric", "drops_per_device_hour", "--by", "firmware", "--range", "2h", "--step", "15m", "-o", "json")), &tr))
	require.Len(t, tr.Series, 3)
	for _, s := range tr.Series {
		require.Len(t, s.Points, 8, s.Value)
	}
	table = cli("trends", "--metric", "drops_per_device_hour", "--by", "firmware", "--range", "2h", "--step", "15m")
	t.Logf("millwright trends:\n%s", table)
	require.Contains(t, table, "drops_per_device_hour by firmware")
	require.Equal(t, 5, len(strings.Split(strings.TrimSpace(table), "\n")), table) // title, header, 3 values

	code, _, stderr = run(append([]string{"trends", "--by", "firmware"}, conn...)...)
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "--metric is required")
	code, _, stderr = run(append([]string{"trends", "--metric", "drops", "--by", "firmware"}, conn...)...)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, `unknown metric "drops"`)
}
