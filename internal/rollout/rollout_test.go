package rollout

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
)

// fleet makes n devices, every 400th tagged as a test device.
func fleet(prefix string, n int) []Device {
	devs := make([]Device, n)
	for i := range devs {
		devs[i] = Device{ID: fmt.Sprintf("%s-%05d", prefix, i), Model: []string{"gw-200", "sb-10"}[i%2],
			Operator: []string{"Telia", "Vodafone", "Orange"}[i%3], Tags: map[string]string{}}
		if i%400 == 0 {
			devs[i].Tags["ring"] = "test"
		}
	}
	return devs
}

// TestGuidePlanOverFleet runs the guide plan over 10,000 devices on an injected clock, from
// the test devices to complete: every phase's cohort has its exact size (within rounding),
// cohorts are nested, the assignment does not depend on the devices' order, 1,000 devices that
// join the scope halfway are placed by the same hash, and the phases follow their soaks.
func TestGuidePlanOverFleet(t *testing.T) {
	start := time.Now()
	plan, err := Builtin(PlanGuide)
	require.NoError(t, err)
	devs := fleet("dev", 10_000)
	const id = "rollout-7f3a"
	assigned := plan.Assign(id, devs)

	require.Equal(t, []int{10, 500, 1500, 10_000}, plan.Sizes(assigned), "test ≤ 10 tagged, canary 5 %, expansion 15 %, all")
	for i, k := range assigned {
		if k == 0 {
			require.Equal(t, "test", devs[i].Tags["ring"], "only tagged devices in the test phase")
		}
	}
	// The same decision in any order, and again.
	shuffled := append([]Device(nil), devs...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	again := plan.Assign(id, shuffled)
	byID := map[string]int{}
	for i, d := range shuffled {
		byID[d.ID] = again[i]
	}
	for i, d := range devs {
		require.Equal(t, assigned[i], byID[d.ID], d.ID)
	}
	// Another rollout draws other canaries.
	other := plan.Assign("rollout-other", devs)
	overlap := 0
	for i := range devs {
		if assigned[i] == 1 && other[i] == 1 {
			overlap++
		}
	}
	require.Less(t, overlap, 60, "canaries of two rollouts overlap as chance has it (5 %% of 490 ≈ 25): %d", overlap)

	// On an injected clock: test for 2 days, canary a week, expansion a week, complete.
	clk := clock.NewFake(time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC))
	pr := plan.Start(clk.Now())
	var phases []string
	var offered []int
	late := fleet("late", 1_000)
	for step := 0; !pr.Complete; step++ {
		clk.Advance(time.Hour)
		next := plan.Advance(pr, clk.Now(), nil)
		if next.Phase != pr.Phase {
			phases = append(phases, fmt.Sprintf("%s after %s", plan.Phases[next.Phase].Name, clk.Now().Sub(pr.Since)))
		}
		pr = next
		if pr.Phase == 2 && len(offered) == 0 {
			// Halfway: 1,000 devices join the scope; those offered so far keep their place.
			all := append(append([]Device(nil), devs...), late...)
			for i, k := range assigned {
				if pr.Offered(k) {
					all[i].Placed, all[i].Phase = true, k
				}
			}
			placed := plan.Assign(id, all)
			sizes := plan.Sizes(placed)
			require.Equal(t, []int{10, 550, 1650, 11_000}, sizes)
			n := 0
			for i, k := range placed {
				if pr.Offered(k) {
					n++
				}
				if i < len(devs) && pr.Offered(assigned[i]) {
					require.Equal(t, assigned[i], k, "an offered device keeps its phase")
				}
				if i < len(devs) && assigned[i] != k {
					require.LessOrEqual(t, int(math.Abs(float64(assigned[i]-k))), 1, "a device not offered yet moves at most to a neighbouring phase")
				}
			}
			offered = append(offered, n)
			joined := 0
			for _, k := range placed[len(devs):] {
				if k == 1 || k == 2 {
					joined++
				}
			}
			require.InDelta(t, 150, joined, 45, "late joiners fall in canary and expansion as their share says")
		}
	}
	require.Equal(t, []string{"canary after 48h0m0s", "expansion after 168h0m0s", "complete after 168h0m0s"}, phases)
	require.Equal(t, []int{1650}, offered)
	require.Less(t, time.Since(start), time.Minute)
}

func TestAdvanceWaitsForHealth(t *testing.T) {
	plan, err := ParsePlan([]byte("phases:\n  - {name: canary, percent: 10, soak: 20s}\n  - {name: complete, percent: 100}\n"))
	require.NoError(t, err)
	t0 := time.Unix(1_000_000, 0)
	pr := plan.Start(t0)
	healthy := false
	gate := func(int) bool { return healthy }
	pr = plan.Advance(pr, t0.Add(30*time.Second), gate)
	require.Equal(t, 0, pr.Phase, "an unhealthy canary holds the rollout")
	healthy = true
	pr = plan.Advance(pr, t0.Add(40*time.Second), gate)
	require.Equal(t, Progress{Phase: 1, Since: t0.Add(40 * time.Second), Complete: true}, pr)
	require.True(t, pr.Offered(1))
	require.False(t, pr.Offered(-1))
}

func TestPlan151(t *testing.T) {
	plan, err := Builtin(Plan151)
	require.NoError(t, err)
	require.Equal(t, []int{100, 500, 1000, 10_000}, plan.Sizes(plan.Assign("r", fleet("d", 10_000))))
	_, err = Builtin("yolo")
	require.ErrorIs(t, err, ErrPlan)
}

func TestParsePlan(t *testing.T) {
	plan, err := ParsePlan([]byte(`
phases:
  - {name: lab, select: {tag: ring=test, model: gw-200}, max: 3, soak: 1d}
  - {name: canary, percent: 10, soak: 20s}
  - {name: complete, percent: 100}
`))
	require.NoError(t, err)
	require.Equal(t, 24*time.Hour, plan.Phases[0].Soak)
	sizes := plan.Sizes(plan.Assign("r", fleet("d", 2_000)))
	require.Equal(t, []int{3, 200, 2_000}, sizes)
	require.Equal(t, DefaultDownloadWindow, plan.WithDefaults().DownloadWindow)
	short, err := ParsePlan([]byte("phases:\n  - {name: all, percent: 100}\ndeadline: 2m\n"))
	require.NoError(t, err)
	require.Equal(t, time.Minute, short.WithDefaults().DownloadWindow, "half the deadline when that is shorter than the default")
	wide, err := ParsePlan([]byte("phases:\n  - {name: all, percent: 100}\ndownload_window: 1h\n"))
	require.NoError(t, err)
	require.Equal(t, time.Hour, wide.WithDefaults().DownloadWindow)

	for _, c := range []struct{ yaml, want string }{
		{"phases: []", "phases: want 1 to 20 phases, got 0"},
		{"phases:\n  - {percent: 100}", "phases[0].name: required"},
		{"phases:\n  - {name: a, percent: 50}\n  - {name: b, percent: 40}\n  - {name: c, percent: 100}", "phases[1].percent: 40 is less than an earlier phase's 50"},
		{"phases:\n  - {name: a, percent: 150}", "phases[0].percent: want 0 to 100, got 150"},
		{"phases:\n  - {name: a, percent: 50}", "phases[0]: the last phase must reach every device"},
		{"phases:\n  - {name: a}\n  - {name: b, percent: 100}", "phases[0]: adds no device"},
		{"phases:\n  - {name: a, percent: 5, soak: -1h}\n  - {name: b, percent: 100}", "phases[0].soak: must not be negative"},
		{"phases:\n  - {name: a, percent: 5, max: -1}\n  - {name: b, percent: 100}", "phases[0].max: must not be negative"},
		{"phases:\n  - {name: a, percent: 5}\n  - {name: a, percent: 100}", `phases[1].name: "a" is already the name of phases[0]`},
		{"phases:\n  - {name: a, select: {tag: ring}, max: 2}\n  - {name: b, percent: 100}", `phases[0].select.tag: "ring" is not key=value`},
		{"phases:\n  - {name: a, percent: 5, soak: soon}\n  - {name: b, percent: 100}", `phases[0].soak: invalid duration "soon"`},
		{"phases:\n  - {name: a, percnt: 5}", `unknown key`},
		{"phases:\n  - {name: a, percent: 100}\ndownload_window: 25h", "download_window: want 0 (the default, 10m0s) to 24h0m0s, got 25h0m0s"},
		{"phases:\n  - {name: a, percent: 100}\ndownload_window: -1s", "download_window: want 0"},
		{"phases:\n  - {name: a, percent: 100}\ndownload_window: 2h\ndeadline: 1h", "download_window: 2h0m0s is not less than the deadline 1h0m0s"},
	} {
		_, err := ParsePlan([]byte(c.yaml))
		require.Error(t, err, c.yaml)
		require.True(t, errors.Is(err, ErrPlan), c.yaml)
		require.Contains(t, err.Error(), c.want, c.yaml)
	}
}

func TestRankUniform(t *testing.T) {
	var buckets [10]int
	for i := range 100_000 {
		buckets[int(Rank("r", fmt.Sprint(i))*10)]++
	}
	for _, n := range buckets {
		require.InDelta(t, 10_000, n, 400, "ranks spread evenly: %v", buckets)
	}
	require.Equal(t, Rank("a", "b"), Rank("a", "b"))
	require.NotEqual(t, Rank("ab", "c"), Rank("a", "bc"), "the IDs are separated")
}
