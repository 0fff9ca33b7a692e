package anomaly

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// weekly generates 13 weekly drop rates (90 days) of a group of devices: Poisson drops over
// the week's device-hours around a base rate that grows by growth per week (0: no trend), with
// an outage week now and then.
func weekly(r *rand.Rand, devices int, base, growth float64) []Point {
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var pts []Point
	for w := range 13 {
		rate := base * (1 + growth*float64(w))
		hours := float64(devices) * 168
		drops := poisson(r, rate*hours)
		if r.IntN(13) == 0 {
			drops *= 3 // an outage week
		}
		pts = append(pts, Point{T: start.Add(time.Duration(w) * 7 * 24 * time.Hour), V: drops / hours})
	}
	return pts
}

func TestTrendGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	const n = 300
	falsePos, found, wrongDir := 0, 0, 0
	for range n {
		devices := 5 + r.IntN(200)
		if Trend(weekly(r, devices, 0.05, 0)).Significant {
			falsePos++
		}
		res := Trend(weekly(r, devices, 0.05, 0.08)) // +8 % of the start rate a week: ×2 in 13 weeks
		if res.Significant {
			found++
			if res.Direction != "up" {
				wrongDir++
			}
		}
	}
	t.Logf("no trend: %d/%d significant; +8 %%/week: %d/%d significant, %d the wrong way", falsePos, n, found, n, wrongDir)
	// Floors (docs/monitoring.md, "Trends", has the measured values).
	require.LessOrEqual(t, falsePos, n/10)
	require.GreaterOrEqual(t, found, n*85/100)
	require.Zero(t, wrongDir)
}

func TestTrendExact(t *testing.T) {
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var pts []Point
	for i := range 10 {
		pts = append(pts, Point{T: start.Add(time.Duration(i) * 24 * time.Hour), V: 2 + 0.5*float64(i)})
	}
	pts[4].V = 100 // one wild point does not move Theil–Sen
	pts = append(pts, Point{T: start.Add(20 * 24 * time.Hour), V: math.NaN()})
	res := Trend(pts)
	require.Equal(t, 10, res.Points)
	require.InDelta(t, 0.5, res.SlopePerDay, 1e-9)
	require.InDelta(t, 2, res.Start, 1e-9)
	require.InDelta(t, 6.5, res.End, 1e-9)
	require.True(t, res.Significant)
	require.Equal(t, "up", res.Direction)

	flat := Trend([]Point{{start, 1}, {start.Add(time.Hour), 1}, {start.Add(2 * time.Hour), 1}, {start.Add(3 * time.Hour), 1}})
	require.False(t, flat.Significant)
	require.Equal(t, "flat", flat.Direction)
	require.Zero(t, flat.SlopePerDay)

	require.Equal(t, 0, Trend(nil).Points)
}

// FuzzParseTrendQuery feeds arbitrary API parameters to ParseTrendQuery: it returns a query
// that passes its own checks, or an error, never panics.
func FuzzParseTrendQuery(f *testing.F) {
	for _, s := range [][4]string{
		{"drops_per_device_hour", "firmware", "90d", "1w"},
		{"offline_ratio", "group", "2h", "15m"},
		{"latency", "firmware", "90d", "1w"},
		{"ingest_delay_seconds", "model", "1e300", "-1s"},
		{"ingest_delay_seconds", "operator", "10000h", "1m"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, metric, dimension, rng, step string) {
		q, err := ParseTrendQuery(metric, dimension, rng, step)
		if err == nil {
			require.NoError(t, q.check())
			require.LessOrEqual(t, int(q.Range/q.Step), MaxTrendPoints)
		}
	})
}

func TestAdjustSignificance(t *testing.T) {
	ss := []TrendSeries{
		{Value: "a", TrendResult: TrendResult{Points: 13, P: 0.001, Significant: true, Direction: "up"}},
		{Value: "b", TrendResult: TrendResult{Points: 13, P: 0.04, Significant: true, Direction: "down"}},
		{Value: "c", TrendResult: TrendResult{Points: 13, P: 0.03, Significant: true, Direction: "up"}},
		{Value: "d", TrendResult: TrendResult{Points: 13, P: 0.5, Direction: "flat"}},
	}
	adjustSignificance(ss)
	// Ranks by p: a (1), c (2), b (3), d (4); q = min over higher ranks of p·m/rank.
	require.InDelta(t, 0.004, ss[0].Q, 1e-12)
	require.InDelta(t, 0.04*4/3.0, ss[1].Q, 1e-12)
	require.InDelta(t, 0.04*4/3.0, ss[2].Q, 1e-12) // 0.03·4/2 = 0.06, but never above a higher rank's
	require.InDelta(t, 0.5, ss[3].Q, 1e-12)
	require.True(t, ss[0].Significant)
	require.Equal(t, "up", ss[0].Direction)
	for _, s := range ss[1:] {
		require.False(t, s.Significant, s.Value)
		require.Equal(t, "flat", s.Direction, s.Value)
	}
}
