package monitor

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/millwright/millwright/internal/registry"
)

// State is a device's liveness.
type State string

// The states: online (connected, or heard from within SilentFactor × its interval), silent
// (not heard from for longer than that, but within OfflineAfter) and offline (not heard from
// for longer than OfflineAfter, or never).
const (
	Online  State = "online"
	Silent  State = "silent"
	Offline State = "offline"
)

// Where a device's expected interval came from.
const (
	IntervalReported   = "reported"   // the device said so at connect (protocol.PropSendInterval)
	IntervalConfigured = "configured" // schedule.interval + jitter of its configuration
	IntervalDefault    = "default"    // Options.DefaultInterval
)

// DeviceLiveness is one device's liveness at a flush.
type DeviceLiveness struct {
	Device    string    `json:"device"`
	State     State     `json:"state"`
	Connected bool      `json:"connected"`
	LastHeard time.Time `json:"last_heard"`
	// Interval is the device's expected reporting interval, and IntervalSource where it came
	// from (reported, configured, default); SilentAfter is when it turns silent unheard.
	Interval       time.Duration `json:"interval"`
	IntervalSource string        `json:"interval_source"`
	SilentAfter    time.Time     `json:"silent_after"`
	Firmware       string        `json:"firmware"`
	Model          string        `json:"model"`
	Operator       string        `json:"operator"`
	Groups         []string      `json:"groups"`
}

// Liveness is the judgement of one flush: every active device's state, sorted by device.
type Liveness struct {
	At      time.Time        `json:"at"`
	Devices []DeviceLiveness `json:"devices"`
}

// Liveness returns the last flush's judgement; before the first, one with no devices.
func (m *Monitor) Liveness() *Liveness {
	m.liveMu.RLock()
	defer m.liveMu.RUnlock()
	return m.live
}

// judge decides every active device's liveness at now. Devices not active (pending,
// suspended, revoked) are not part of the fleet being watched.
func (m *Monitor) judge(devs []registry.FleetDevice, now time.Time) *Liveness {
	l := &Liveness{At: now, Devices: make([]DeviceLiveness, 0, len(devs))}
	for i := range devs {
		d := &devs[i]
		if d.Status != registry.StatusActive {
			continue
		}
		dl := DeviceLiveness{Device: d.ID, LastHeard: d.LastSeen, Firmware: d.Firmware, Model: d.Model, Operator: d.Operator, Groups: d.Groups}
		if s, ok := m.snapshot(d.ID, now); ok {
			dl.Connected = s.connected
			dl.LastHeard = later(dl.LastHeard, s.heard)
		}
		dl.Interval, dl.IntervalSource = m.expected(d)
		dl.SilentAfter = dl.LastHeard.Add(time.Duration(float64(dl.Interval) * m.opts.SilentFactor))
		age := now.Sub(dl.LastHeard)
		switch {
		case dl.Connected || !dl.LastHeard.IsZero() && !now.After(dl.SilentAfter):
			dl.State = Online
		case !dl.LastHeard.IsZero() && age <= m.opts.OfflineAfter:
			dl.State = Silent
		default:
			dl.State = Offline
		}
		if dl.LastHeard.IsZero() {
			dl.SilentAfter = time.Time{}
		}
		l.Devices = append(l.Devices, dl)
	}
	return l
}

// expected is a device's expected reporting interval and where it came from.
func (m *Monitor) expected(d *registry.FleetDevice) (time.Duration, string) {
	switch {
	case d.ReportedInterval > 0:
		return d.ReportedInterval, IntervalReported
	case d.ConfiguredInterval > 0:
		return d.ConfiguredInterval, IntervalConfigured
	}
	return m.opts.DefaultInterval, IntervalDefault
}

// Dimensions are what liveness counts may be grouped by.
var Dimensions = []string{"firmware", "model", "operator", "group"}

// Count is the number of devices in each state for one value of a dimension.
type Count struct {
	Value   string `json:"value"`
	Online  int    `json:"online"`
	Silent  int    `json:"silent"`
	Offline int    `json:"offline"`
}

// Count counts devices by state for each value of dimension by (firmware, model, operator,
// group; "" counts the whole fleet as one value ""), sorted by value. A device in several
// groups counts in each; one in none under "".
func (l *Liveness) Count(by string) ([]Count, error) {
	if by != "" && !slices.Contains(Dimensions, by) {
		return nil, fmt.Errorf("cannot count by %q: use firmware, model, operator or group", by)
	}
	counts := map[string]*Count{}
	add := func(v string, s State) {
		c := counts[v]
		if c == nil {
			c = &Count{Value: v}
			counts[v] = c
		}
		switch s {
		case Online:
			c.Online++
		case Silent:
			c.Silent++
		default:
			c.Offline++
		}
	}
	for _, d := range l.Devices {
		switch by {
		case "":
			add("", d.State)
		case "firmware":
			add(d.Firmware, d.State)
		case "model":
			add(d.Model, d.State)
		case "operator":
			add(d.Operator, d.State)
		case "group":
			if len(d.Groups) == 0 {
				add("", d.State)
			}
			for _, g := range d.Groups {
				add(g, d.State)
			}
		}
	}
	out := make([]Count, 0, len(counts))
	for _, v := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, *counts[v])
	}
	return out, nil
}

// InState lists the devices in state s.
func (l *Liveness) InState(s State) []DeviceLiveness {
	var out []DeviceLiveness
	for _, d := range l.Devices {
		if d.State == s {
			out = append(out, d)
		}
	}
	return out
}
