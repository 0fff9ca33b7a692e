package rollout

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// A Gate is one health check of a rollout's phase (docs/rollouts.md, "Health gates"). Two
// kinds:
//
//   - Comparison gates (Query set) compare the devices that run the new release with the
//     devices of the same scope still on the old one: Query is a PromQL expression giving one
//     value per device (a series with a device label) over the window "$window" — the time
//     since the phase began — such as drops or bytes. Summed per group, the values are
//     events; the exposure is device-hours in the window ("device_hours") or the number of
//     devices ("devices"). The gate fails when the new group's rate is worse than the old
//     one's by the relative Threshold and a one-sided Poisson rate-ratio test says so at
//     significance Alpha.
//   - Outcome gates (Outcome set) bound a fraction of the phase's offers: "failures" (the
//     device refused, failed or rolled back the update) or "unreachable" (it never reported
//     back within the deadline). The gate fails when the fraction exceeds Max and a one-sided
//     binomial test says so at Alpha.
//
// A gate with less exposure than MinExposure on either side neither fails nor passes: it is
// "insufficient", and does not hold a phase back.
type Gate struct {
	Name string `yaml:"name" json:"name"`
	// Query, Exposure, Worse, Threshold: a comparison gate.
	Query string `yaml:"query,omitempty" json:"query,omitempty"`
	// Exposure is "device_hours" (default) or "devices".
	Exposure string `yaml:"exposure,omitempty" json:"exposure,omitempty"`
	// Worse is "higher" (default: more events per exposure is worse) or "lower".
	Worse string `yaml:"worse,omitempty" json:"worse,omitempty"`
	// Threshold is the ratio new/old rate at which the gate may fail: above it for
	// Worse=higher (default 1.5), below it for Worse=lower (default 0.5).
	Threshold float64 `yaml:"threshold,omitempty" json:"threshold,omitempty"`
	// Outcome, Max: an outcome gate.
	Outcome string  `yaml:"outcome,omitempty" json:"outcome,omitempty"`
	Max     float64 `yaml:"max,omitempty" json:"max,omitempty"`
	// MinExposure is the least exposure (device-hours, devices, or finished offers) each
	// side needs before the gate decides. Default 24 device-hours, 20 devices, or 5 offers.
	MinExposure float64 `yaml:"min_exposure,omitempty" json:"min_exposure,omitempty"`
	// Alpha is the test's significance level. Default 0.0001: the engine looks at every step,
	// so each look must be strict for the whole soak to be.
	Alpha float64 `yaml:"alpha,omitempty" json:"alpha,omitempty"`
}

// Gate kinds' values.
const (
	ExposureDeviceHours = "device_hours"
	ExposureDevices     = "devices"
	WorseHigher         = "higher"
	WorseLower          = "lower"
	OutcomeFailures     = "failures"
	OutcomeUnreachable  = "unreachable"
)

// DefaultGates are the gates of a rollout that names none: drops per device-hour,
// reconnections per device-hour (a device that reboots reconnects), traffic per device-hour,
// the share of devices offline, feedback events (feedback, incidents, crashes recorded against
// devices) per device-hour, update failures and unreachable devices.
func DefaultGates() []Gate {
	return []Gate{
		{Name: "drops", Query: `increase(millwright_device_disconnects_total{cause=~"keepalive_timeout|reset|protocol_error"}[$window])`},
		{Name: "reconnects", Query: `increase(millwright_device_connects_total[$window])`},
		{Name: "traffic", Query: `increase(millwright_device_received_bytes_total[$window])`, Worse: WorseLower},
		{Name: "offline", Query: `1 - millwright_device_online`, Exposure: ExposureDevices, Threshold: 2},
		{Name: "feedback", Query: `increase(millwright_device_feedback_total[$window])`},
		{Name: "update_failures", Outcome: OutcomeFailures, Max: 0.05},
		{Name: "unreachable", Outcome: OutcomeUnreachable, Max: 0.10},
	}
}

// withDefaults fills a gate's zero fields.
func (g Gate) withDefaults() Gate {
	if g.Alpha == 0 {
		g.Alpha = 0.0001
	}
	if g.Outcome != "" {
		if g.MinExposure == 0 {
			g.MinExposure = 5
		}
		return g
	}
	if g.Exposure == "" {
		g.Exposure = ExposureDeviceHours
	}
	if g.Worse == "" {
		g.Worse = WorseHigher
	}
	if g.Threshold == 0 {
		g.Threshold = 1.5
		if g.Worse == WorseLower {
			g.Threshold = 0.5
		}
	}
	if g.MinExposure == 0 {
		g.MinExposure = 24
		if g.Exposure == ExposureDevices {
			g.MinExposure = 20
		}
	}
	return g
}

// validate checks a gate (after withDefaults).
func (g Gate) validate() error {
	switch {
	case g.Name == "":
		return fmt.Errorf("a gate needs a name")
	case (g.Query == "") == (g.Outcome == ""):
		return fmt.Errorf("gate %s: give either query or outcome", g.Name)
	case g.Alpha <= 0 || g.Alpha >= 0.5:
		return fmt.Errorf("gate %s: alpha %v is outside (0, 0.5)", g.Name, g.Alpha)
	case g.MinExposure < 0:
		return fmt.Errorf("gate %s: min_exposure %v is negative", g.Name, g.MinExposure)
	}
	if g.Outcome != "" {
		if g.Outcome != OutcomeFailures && g.Outcome != OutcomeUnreachable {
			return fmt.Errorf("gate %s: outcome %q is neither %q nor %q", g.Name, g.Outcome, OutcomeFailures, OutcomeUnreachable)
		}
		if g.Max <= 0 || g.Max >= 1 {
			return fmt.Errorf("gate %s: max %v is outside (0, 1)", g.Name, g.Max)
		}
		return nil
	}
	if len(g.Query) > 4096 {
		return fmt.Errorf("gate %s: query of %d bytes, at most 4096", g.Name, len(g.Query))
	}
	switch {
	case g.Exposure != ExposureDeviceHours && g.Exposure != ExposureDevices:
		return fmt.Errorf("gate %s: exposure %q is neither %q nor %q", g.Name, g.Exposure, ExposureDeviceHours, ExposureDevices)
	case g.Worse != WorseHigher && g.Worse != WorseLower:
		return fmt.Errorf("gate %s: worse %q is neither %q nor %q", g.Name, g.Worse, WorseHigher, WorseLower)
	case g.Worse == WorseHigher && g.Threshold <= 1:
		return fmt.Errorf("gate %s: threshold %v must be above 1 when higher is worse", g.Name, g.Threshold)
	case g.Worse == WorseLower && (g.Threshold <= 0 || g.Threshold >= 1):
		return fmt.Errorf("gate %s: threshold %v must be in (0, 1) when lower is worse", g.Name, g.Threshold)
	}
	return nil
}

// QueryFor is the gate's query over a window.
func (g Gate) QueryFor(window time.Duration) string {
	s := int64(max(window, time.Second) / time.Second)
	return strings.ReplaceAll(g.Query, "$window", fmt.Sprintf("%ds", s))
}

// Sample is one side of a gate: events over exposure, from Devices devices.
type Sample struct {
	Events   float64 `json:"events"`
	Exposure float64 `json:"exposure"`
	Devices  int     `json:"devices"`
}

// Rate is events per unit of exposure (NaN without exposure).
func (s Sample) Rate() float64 {
	if s.Exposure <= 0 {
		return math.NaN()
	}
	return s.Events / s.Exposure
}

// The verdicts of a gate.
const (
	GatePass         = "pass"
	GateFail         = "fail"
	GateInsufficient = "insufficient"
)

// Result is a gate's verdict with its evidence.
type Result struct {
	Gate    string  `json:"gate"`
	Verdict string  `json:"verdict"`
	New     Sample  `json:"new"`
	Old     *Sample `json:"old,omitempty"`
	// Ratio is new rate / old rate (comparison gates) or the failed fraction (outcome gates).
	Ratio     Number  `json:"ratio"`
	Threshold float64 `json:"threshold"`
	PValue    float64 `json:"p_value"`
	Alpha     float64 `json:"alpha"`
	Detail    string  `json:"detail"`
}

// Number is a float that JSON carries even when it is not finite, as Prometheus' API does:
// NaN (no exposure) as "NaN", infinities as "+Inf" and "-Inf".
type Number float64

// MarshalJSON writes a finite number as a number, any other as a string.
func (n Number) MarshalJSON() ([]byte, error) {
	f := float64(n)
	switch {
	case math.IsNaN(f):
		return []byte(`"NaN"`), nil
	case math.IsInf(f, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(f, -1):
		return []byte(`"-Inf"`), nil
	}
	return json.Marshal(f)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (n *Number) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("number %q: %w", s, err)
		}
		*n = Number(f)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Number(f)
	return nil
}

// Compare judges a comparison gate on the new and old samples.
func (g Gate) Compare(newS, oldS Sample) Result {
	g = g.withDefaults()
	r := Result{Gate: g.Name, New: newS, Old: &oldS, Threshold: g.Threshold, Alpha: g.Alpha, PValue: 1}
	unit := "per device-hour"
	if g.Exposure == ExposureDevices {
		unit = "per device"
	}
	rn, ro := newS.Rate(), oldS.Rate()
	ratio := rn / ro
	switch {
	case ro == 0 && rn == 0:
		ratio = 1
	case ro == 0:
		ratio = math.Inf(1)
	}
	r.Ratio = Number(ratio)
	if newS.Exposure < g.MinExposure || oldS.Exposure < g.MinExposure {
		r.Verdict = GateInsufficient
		r.Detail = fmt.Sprintf("%s: not enough exposure yet (new %.4g, old %.4g; %.4g needed on each side)", g.Name, newS.Exposure, oldS.Exposure, g.MinExposure)
		return r
	}
	// Conditional on the total, the new side's events are binomial with p0 = the new side's
	// share of the exposure when both rates are equal (H0).
	p0 := newS.Exposure / (newS.Exposure + oldS.Exposure)
	n := newS.Events + oldS.Events
	worse := ratio >= g.Threshold
	if g.Worse == WorseHigher {
		r.PValue = BinomialUpper(newS.Events, n, p0)
	} else {
		r.PValue = BinomialLower(newS.Events, n, p0)
		worse = ratio <= g.Threshold
	}
	r.Verdict = GatePass
	cmpWord := "at least"
	if g.Worse == WorseLower {
		cmpWord = "at most"
	}
	if worse && r.PValue < g.Alpha {
		r.Verdict = GateFail
	}
	r.Detail = fmt.Sprintf("%s: %.4g %s on the new release (%d devices, %.4g exposure) vs %.4g on the old (%d devices, %.4g): ratio %.3g (fails at %s %.3g), p = %.3g (fails below %.3g)",
		g.Name, rn, unit, newS.Devices, newS.Exposure, ro, oldS.Devices, oldS.Exposure, ratio, cmpWord, g.Threshold, r.PValue, g.Alpha)
	return r
}

// Bound judges an outcome gate: bad of finished offers.
func (g Gate) Bound(bad, finished int) Result {
	g = g.withDefaults()
	s := Sample{Events: float64(bad), Exposure: float64(finished), Devices: finished}
	r := Result{Gate: g.Name, New: s, Threshold: g.Max, Alpha: g.Alpha, PValue: 1}
	frac := 0.0
	if finished > 0 {
		frac = float64(bad) / float64(finished)
	}
	r.Ratio = Number(frac)
	if float64(finished) < g.MinExposure {
		r.Verdict = GateInsufficient
		r.Detail = fmt.Sprintf("%s: %d of %d finished offers (%.4g needed to decide)", g.Name, bad, finished, g.MinExposure)
		return r
	}
	r.PValue = BinomialUpper(float64(bad), float64(finished), g.Max)
	r.Verdict = GatePass
	if frac > g.Max && r.PValue < g.Alpha {
		r.Verdict = GateFail
	}
	r.Detail = fmt.Sprintf("%s: %d of %d finished offers (%.3g; fails above %.3g), p = %.3g (fails below %.3g)",
		g.Name, bad, finished, frac, g.Max, r.PValue, g.Alpha)
	return r
}

// BinomialUpper is P(X ≥ k) for X ~ Binomial(n, p), with k and n real (counts of events that
// PromQL's increase() extrapolates are not whole): the regularized incomplete beta
// I_p(k, n−k+1).
func BinomialUpper(k, n, p float64) float64 {
	switch {
	case k <= 0:
		return 1
	case k > n:
		return 0
	case p <= 0:
		return 0
	case p >= 1:
		return 1
	}
	return incBeta(k, n-k+1, p)
}

// BinomialLower is P(X ≤ k) for X ~ Binomial(n, p): 1 − I_p(k+1, n−k).
func BinomialLower(k, n, p float64) float64 {
	switch {
	case k >= n:
		return 1
	case k < 0:
		return 0
	case p <= 0:
		return 1
	case p >= 1:
		return 0
	}
	return 1 - incBeta(k+1, n-k, p)
}

// incBeta is the regularized incomplete beta function I_x(a, b), by its continued fraction
// (Lentz's method), taken on the side where it converges fast.
func incBeta(a, b, x float64) float64 {
	if x <= 0 {
		return 0
	}
	if x >= 1 {
		return 1
	}
	la, _ := math.Lgamma(a + b)
	lb, _ := math.Lgamma(a)
	lc, _ := math.Lgamma(b)
	front := math.Exp(la - lb - lc + a*math.Log(x) + b*math.Log1p(-x))
	if x < (a+1)/(a+b+2) {
		return front * betaCF(a, b, x) / a
	}
	return 1 - front*betaCF(b, a, 1-x)/b
}

func betaCF(a, b, x float64) float64 {
	const (
		maxIter = 10000
		eps     = 1e-14
		tiny    = 1e-300
	)
	qab, qap, qam := a+b, a+1, a-1
	c, d := 1.0, 1-qab*x/qap
	if math.Abs(d) < tiny {
		d = tiny
	}
	d = 1 / d
	h := d
	for m := 1; m <= maxIter; m++ {
		fm := float64(m)
		m2 := 2 * fm
		aa := fm * (b - fm) * x / ((qam + m2) * (a + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		h *= d * c
		aa = -(a + fm) * (qab + fm) * x / ((a + m2) * (qap + m2))
		d = 1 + aa*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		c = 1 + aa/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		d = 1 / d
		del := d * c
		h *= del
		if math.Abs(del-1) < eps {
			break
		}
	}
	return h
}
