package rollout

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"math"
	"slices"
	"time"
)

// Device is what a plan needs to know of a device in a rollout's scope.
type Device struct {
	ID              string
	Model, Operator string
	Tags            map[string]string
	Groups          []string
	// Placed marks a device already offered the release, in phase Phase: it keeps its place
	// (and counts toward its phase's size) whoever joins the scope later.
	Placed bool
	Phase  int
}

// Rank places a device in a rollout: a number in [0, 1) from SHA-256 of the rollout's and the
// device's IDs. It is spread uniformly, the same at every call (a restarted server, another
// server, decides the same), and unrelated between rollouts (the canaries of one release are
// not those of the next).
func Rank(rollout, device string) float64 {
	h := sha256.New()
	h.Write([]byte(rollout))
	h.Write([]byte{0})
	h.Write([]byte(device))
	return float64(binary.BigEndian.Uint64(h.Sum(nil))>>11) / (1 << 53)
}

// Assign gives every device in devs the index of the phase that offers it the release, in
// devs' order. The devices of phases 0…k together are the cohort of phase k: nested by
// construction. Each phase adds, in rank order, devices its selector matches and no earlier
// phase took, until the devices taken by the end of the phase reach round(percent × devices),
// bounded by its max (a phase with a selector and no percent takes every match up to its
// max). So sizes are exact within rounding, the order is random but stable (Rank), and a
// device that joins the scope later is placed by the same rank. A device already offered
// (Device.Placed) keeps its phase and counts toward it.
func (p Plan) Assign(rollout string, devs []Device) []int {
	type ranked struct {
		i    int
		rank float64
	}
	order := make([]ranked, len(devs))
	for i, d := range devs {
		order[i] = ranked{i, Rank(rollout, d.ID)}
	}
	slices.SortFunc(order, func(a, b ranked) int {
		if c := cmp.Compare(a.rank, b.rank); c != 0 {
			return c
		}
		return cmp.Compare(devs[a.i].ID, devs[b.i].ID)
	})
	phase := make([]int, len(devs))
	placed := make([]int, len(p.Phases)) // devices placed before, by phase
	for i, d := range devs {
		phase[i] = -1
		if d.Placed && d.Phase >= 0 && d.Phase < len(p.Phases) {
			phase[i] = d.Phase
			placed[d.Phase]++
		}
	}
	taken := 0
	for k, ph := range p.Phases {
		taken += placed[k]
		target := len(devs)
		if ph.Percent > 0 || ph.Select.IsZero() {
			target = int(math.Round(ph.Percent / 100 * float64(len(devs))))
		}
		if ph.Max > 0 {
			target = min(target, ph.Max)
		}
		for _, o := range order {
			if taken >= target {
				break
			}
			if phase[o.i] >= 0 || !ph.Select.Matches(devs[o.i]) {
				continue
			}
			phase[o.i] = k
			taken++
		}
	}
	return phase
}

// Sizes counts, for each phase, the devices offered by its end (its cohort, nested).
func (p Plan) Sizes(assigned []int) []int {
	sizes := make([]int, len(p.Phases))
	for _, k := range assigned {
		if k >= 0 {
			sizes[k]++
		}
	}
	for k := 1; k < len(sizes); k++ {
		sizes[k] += sizes[k-1]
	}
	return sizes
}

// Progress is where a rollout is in its plan.
type Progress struct {
	// Phase is the phase whose devices are being offered the release and soak now.
	Phase int
	// Since is when the phase began.
	Since time.Time
	// Complete is set once the last phase began: every device in scope is offered.
	Complete bool
}

// Start is the progress of a rollout that starts at now.
func (p Plan) Start(now time.Time) Progress {
	return Progress{Since: now, Complete: len(p.Phases) == 1}
}

// Advance moves a rollout on at now: when the phase has soaked for its time and healthy says
// its devices are well (nil: always), the next phase begins, at now — the moment its devices
// can first be offered the release, so its soak counts from then (a phase a failing health
// check held back soaks from when it was let through). Phases without a soak follow at once.
// A halted rollout is the caller's to keep from advancing.
func (p Plan) Advance(pr Progress, now time.Time, healthy func(phase int) bool) Progress {
	for !pr.Complete && now.Sub(pr.Since) >= p.Phases[pr.Phase].Soak {
		if healthy != nil && !healthy(pr.Phase) {
			break
		}
		pr = Progress{Phase: pr.Phase + 1, Since: now, Complete: pr.Phase+1 == len(p.Phases)-1}
	}
	return pr
}

// Offered reports whether a device assigned to phase k is offered the release at progress pr.
func (pr Progress) Offered(k int) bool { return k >= 0 && k <= pr.Phase }
