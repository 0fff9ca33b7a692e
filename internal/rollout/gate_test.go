package rollout

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBinomialTails checks the tails against exact sums.
func TestBinomialTails(t *testing.T) {
	exactUpper := func(k, n int, p float64) float64 {
		s := 0.0
		for i := k; i <= n; i++ {
			lc, _ := math.Lgamma(float64(n + 1))
			la, _ := math.Lgamma(float64(i + 1))
			lb, _ := math.Lgamma(float64(n - i + 1))
			s += math.Exp(lc - la - lb + float64(i)*math.Log(p) + float64(n-i)*math.Log1p(-p))
		}
		return s
	}
	require.InDelta(t, 56.0/1024, BinomialUpper(8, 10, 0.5), 1e-12, "P(X ≥ 8), X ~ B(10, ½) = 56/1024")
	for _, c := range []struct {
		k, n int
		p    float64
	}{{1, 1, 0.3}, {3, 20, 0.05}, {0, 5, 0.2}, {40, 100, 0.25}, {200, 1000, 0.15}, {7, 7, 0.9}, {950, 1000, 0.97}} {
		want := 1.0
		if c.k > 0 {
			want = exactUpper(c.k, c.n, c.p)
		}
		require.InDelta(t, want, BinomialUpper(float64(c.k), float64(c.n), c.p), 1e-9*math.Max(1, want), "upper %+v", c)
		require.InDelta(t, 1-exactUpper(c.k+1, c.n, c.p), BinomialLower(float64(c.k), float64(c.n), c.p), 1e-9, "lower %+v", c)
	}
	// Large counts (bytes) stay finite and ordered.
	require.Less(t, BinomialUpper(6e8, 1e9, 0.5), 1e-100)
	require.Greater(t, BinomialUpper(4.9e8, 1e9, 0.5), 0.999)
}

// poisson draws a Poisson variate (Knuth for small means, normal beyond).
func poisson(r *rand.Rand, mean float64) float64 {
	if mean > 50 {
		return math.Max(0, math.Round(mean+math.Sqrt(mean)*r.NormFloat64()))
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// TestDropsGateFalseAndMissedHalts measures the drops gate on simulated counts: five
// canaries of a release exactly as good as the old one, looked at every hour over a two-day
// soak, 2,000 times: how often it halts (false halts); and a release with three times the
// drop rate, 2,000 times: how often it does not halt within the soak (missed halts).
func TestDropsGateFalseAndMissedHalts(t *testing.T) {
	g := DefaultGates()[0]
	run := func(seed uint64, canaries, rest int, ratio float64) bool {
		r := rand.New(rand.NewPCG(seed, 7))
		const perHour = 0.5 // drops per device-hour of the old release
		var nx, ox float64
		for h := 1; h <= 48; h++ {
			nx += poisson(r, perHour*ratio*float64(canaries))
			ox += poisson(r, perHour*float64(rest))
			res := g.Compare(Sample{Events: nx, Exposure: float64(canaries * h), Devices: canaries}, Sample{Events: ox, Exposure: float64(rest * h), Devices: rest})
			if res.Verdict == GateFail {
				return true
			}
		}
		return false
	}
	const trials = 2000
	falseHalts, missed := 0, 0
	for s := range uint64(trials) {
		if run(s, 5, 95, 1) {
			falseHalts++
		}
		if !run(s+1e6, 5, 95, 3) {
			missed++
		}
	}
	t.Logf("5 canaries, 48 hourly looks: %d false halts of %d healthy releases, %d missed of %d releases with 3× the drops", falseHalts, trials, missed, trials)
	require.LessOrEqual(t, falseHalts, trials/100, "at most 1 % of healthy releases halted")
	require.LessOrEqual(t, missed, trials/20, "at most 5 % of bad releases missed")
}

// TestGateNeedsExposureAndSignificance: with less than the minimum exposure a gate does
// not decide; a large ratio on small numbers does not fail it; the same ratio on enough
// numbers does.
func TestGateNeedsExposureAndSignificance(t *testing.T) {
	g := Gate{Name: "drops", Query: "x"}
	require.Equal(t, GateInsufficient, g.Compare(Sample{Events: 9, Exposure: 10, Devices: 5}, Sample{Events: 1, Exposure: 1000, Devices: 95}).Verdict)
	require.Equal(t, GatePass, g.Compare(Sample{Events: 2, Exposure: 30, Devices: 5}, Sample{Events: 10, Exposure: 600, Devices: 95}).Verdict,
		"2 drops in 30 device-hours against 10 in 600: a ratio of 4, but not significant")
	res := g.Compare(Sample{Events: 40, Exposure: 30, Devices: 5}, Sample{Events: 10, Exposure: 600, Devices: 95})
	require.Equal(t, GateFail, res.Verdict, res.Detail)
	require.Less(t, res.PValue, 1e-10)
	low := Gate{Name: "traffic", Query: "x", Worse: WorseLower}
	require.Equal(t, GateFail, low.Compare(Sample{Events: 1e5, Exposure: 30, Devices: 5}, Sample{Events: 1e7, Exposure: 600, Devices: 95}).Verdict)
	require.Equal(t, GatePass, low.Compare(Sample{Events: 4.9e5, Exposure: 30, Devices: 5}, Sample{Events: 1e7, Exposure: 600, Devices: 95}).Verdict,
		"traffic 2 % lower is not a regression")
	out := Gate{Name: "update_failures", Outcome: OutcomeFailures, Max: 0.05}
	require.Equal(t, GateInsufficient, out.Bound(2, 3).Verdict)
	require.Equal(t, GatePass, out.Bound(1, 10).Verdict, "1 failure of 10 is not evidence of more than 5 %")
	require.Equal(t, GateFail, out.Bound(30, 100).Verdict)
}

// TestNumberJSON: ratios that are not finite travel in JSON as Prometheus writes them.
func TestNumberJSON(t *testing.T) {
	for f, want := range map[float64]string{1.5: `1.5`, math.Inf(1): `"+Inf"`, math.Inf(-1): `"-Inf"`} {
		b, err := json.Marshal(Number(f))
		require.NoError(t, err)
		require.Equal(t, want, string(b))
		var back Number
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, f, float64(back))
	}
	b, err := json.Marshal(Result{Ratio: Number(math.NaN())})
	require.NoError(t, err)
	require.Contains(t, string(b), `"ratio":"NaN"`)
}
