package sim

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/millwright/millwright/clock"
)

// Summary is what a simulation run did, from the agents' own counters (docs/sim.md lists the
// JSON fields).
type Summary struct {
	Devices       int       `json:"devices"`
	Server        string    `json:"server"`
	Seed          uint64    `json:"seed"`
	Sync          bool      `json:"sync"`
	BackoffJitter string    `json:"backoff_jitter"`
	Started       time.Time `json:"started"`
	// RunSeconds is the time from the start to the drain; DrainSeconds the drain's length.
	RunSeconds   float64      `json:"run_seconds"`
	DrainSeconds float64      `json:"drain_seconds"`
	Interrupted  bool         `json:"interrupted"`
	Provisioning Provisioning `json:"provisioning"`
	// ConnectedAtEnd counts the devices connected when the drain ended.
	ConnectedAtEnd  int               `json:"connected_at_end"`
	ConnectAttempts uint64            `json:"connect_attempts"`
	Connects        uint64            `json:"connects"`
	ConnectFailures map[string]uint64 `json:"connect_failures"`
	// Reconnects counts lost connections, by cause in ReconnectsByCause.
	Reconnects        uint64            `json:"reconnects"`
	ReconnectsByCause map[string]uint64 `json:"reconnects_by_cause"`
	Measurements      Measurements      `json:"measurements"`
	Batches           uint64            `json:"batches"`
	Bytes             uint64            `json:"bytes"`
	Injected          Injected          `json:"injected"`
	Profiles          []ProfileSummary  `json:"profiles"`
	Timeline          []Second          `json:"timeline"`
}

// Provisioning is how the devices got their credentials.
type Provisioning struct {
	Reused     int     `json:"reused"`
	Issued     int     `json:"issued"`
	Enrolled   int     `json:"enrolled"`
	Registered int     `json:"registered"`
	Seconds    float64 `json:"seconds"`
}

// Measurements counts measurements: sampled (stored in the spools, the agents' health
// measurements included), acknowledged by the server, dropped by reason, and left in the
// spools at the end.
type Measurements struct {
	Sampled      uint64            `json:"sampled"`
	Acknowledged uint64            `json:"acknowledged"`
	Dropped      uint64            `json:"dropped"`
	DroppedBy    map[string]uint64 `json:"dropped_by_reason"`
	Invalid      uint64            `json:"invalid"`
	BacklogAtEnd uint64            `json:"backlog_at_end"`
}

// Injected counts the faults the simulator injected.
type Injected struct {
	FirmwareDrops uint64 `json:"firmware_drops"`
	NetworkDrops  uint64 `json:"network_drops"`
	NATKills      uint64 `json:"nat_kills"`
	Outages       uint64 `json:"outages"`
	OutageDials   uint64 `json:"outage_dials"`
}

// ProfileSummary is one profile's share of the totals.
type ProfileSummary struct {
	Name           string `json:"name"`
	Devices        int    `json:"devices"`
	ConnectedAtEnd int    `json:"connected_at_end"`
	Sampled        uint64 `json:"sampled"`
	Acknowledged   uint64 `json:"acknowledged"`
	Reconnects     uint64 `json:"reconnects"`
}

// Second is one second of the run: the counts are what happened within it.
type Second struct {
	Second     int    `json:"second"`
	Connects   uint64 `json:"connects"`
	Connected  int    `json:"connected"`
	Reconnects uint64 `json:"reconnects"`
	Sampled    uint64 `json:"sampled"`
	Acked      uint64 `json:"acked"`
	Backlog    uint64 `json:"backlog"`
	Draining   bool   `json:"draining,omitempty"`
}

// snapshot is the fleet's counters at one moment.
type snapshot struct {
	at                                                             time.Time
	connected                                                      int
	attempts, connects, reconnects, sampled, acked, batches, bytes uint64
	dropped, invalid, backlog                                      uint64
	failuresBy, reconnectsBy, droppedBy                            map[string]uint64
	perProfile                                                     []ProfileSummary
}

// monitor samples the agents every second, keeps the timeline and writes the progress.
type monitor struct {
	cfg      *Config
	devs     []*device
	profiles []*resolved
	faults   *faults
	start    time.Time

	timeline  []Second
	prev      snapshot
	lastShown snapshot
	line      bool // a terminal status line is showing
}

func newMonitor(cfg *Config, devs []*device, profiles []*resolved, f *faults, start time.Time) *monitor {
	m := &monitor{cfg: cfg, devs: devs, profiles: profiles, faults: f, start: start}
	m.prev = snapshot{at: start}
	m.lastShown = m.prev
	return m
}

func (m *monitor) sample() snapshot {
	s := snapshot{at: m.cfg.Clock.Now(), failuresBy: map[string]uint64{}, reconnectsBy: map[string]uint64{}, droppedBy: map[string]uint64{},
		perProfile: make([]ProfileSummary, len(m.profiles))}
	for i, p := range m.profiles {
		s.perProfile[i].Name = p.Name
	}
	for _, d := range m.devs {
		st := d.stats()
		pp := &s.perProfile[d.profile]
		pp.Devices++
		if st.Connected {
			s.connected++
			pp.ConnectedAtEnd++
		}
		s.attempts += st.ConnectAttempts
		s.connects += st.Connects
		s.sampled += st.MeasurementsStored
		pp.Sampled += st.MeasurementsStored
		s.acked += st.RecordsSent
		pp.Acknowledged += st.RecordsSent
		s.batches += st.BatchesSent
		s.bytes += st.BytesSent
		s.invalid += st.MeasurementsInvalid
		s.backlog += st.Spool.Records
		for c, n := range st.ConnectFailures {
			s.failuresBy[c] += n
		}
		for c, n := range st.Reconnects {
			s.reconnectsBy[c] += n
			s.reconnects += n
			pp.Reconnects += n
		}
		for r, n := range st.Dropped {
			s.droppedBy[r] += n
			s.dropped += n
		}
	}
	return s
}

// watch records a timeline entry every second of the clock until ctx ends.
func (m *monitor) watch(ctx context.Context, draining bool) {
	clk := m.cfg.Clock
	for {
		next := m.start.Add(time.Duration(len(m.timeline)+1) * time.Second)
		if !clock.Sleep(ctx, clk, next.Sub(clk.Now())) {
			return
		}
		s := m.sample()
		m.timeline = append(m.timeline, Second{
			Second: len(m.timeline), Connects: s.connects - m.prev.connects, Connected: s.connected,
			Reconnects: s.reconnects - m.prev.reconnects, Sampled: s.sampled - m.prev.sampled,
			Acked: s.acked - m.prev.acked, Backlog: s.backlog, Draining: draining,
		})
		m.prev = s
		m.progress(s, draining)
	}
}

// progress writes the status: a refreshing line on a terminal, else a line per interval.
func (m *monitor) progress(s snapshot, draining bool) {
	w := m.cfg.Progress
	if w == nil {
		return
	}
	// Samples come about once a second; half a second of slack keeps the lines on the interval.
	if !m.cfg.Terminal && s.at.Sub(m.lastShown.at) < m.cfg.ProgressInterval-500*time.Millisecond {
		return
	}
	secs := s.at.Sub(m.lastShown.at).Seconds()
	rate := func(now, before uint64) float64 { return float64(now-before) / secs }
	sampled, acked := rate(s.sampled, m.lastShown.sampled), rate(s.acked, m.lastShown.acked)
	elapsed := s.at.Sub(m.start).Round(time.Second)
	phase := "running"
	if draining {
		phase = "draining"
	}
	if m.cfg.Terminal {
		fmt.Fprintf(w, "\r\x1b[K%s %v  devices %d  connected %d  sampled %.0f/s  acked %.0f/s  backlog %d  reconnects %d  dropped %d",
			phase, elapsed, len(m.devs), s.connected, sampled, acked, s.backlog, s.reconnects, s.dropped)
		m.line = true
	} else {
		fmt.Fprintf(w, "sim %s elapsed=%v devices=%d connected=%d sampled_per_s=%.1f acked_per_s=%.1f backlog=%d reconnects=%d dropped=%d\n",
			phase, elapsed, len(m.devs), s.connected, sampled, acked, s.backlog, s.reconnects, s.dropped)
	}
	m.lastShown = s
}

// finish ends a terminal status line.
func (m *monitor) finish() {
	if m.line {
		fmt.Fprintln(m.cfg.Progress)
		m.line = false
	}
}

func (m *monitor) summary(s snapshot, drainStart time.Time, drained time.Duration, interrupted bool, p provision) *Summary {
	f, start := m.faults, m.start
	return &Summary{
		Devices: len(m.devs), Server: m.cfg.Server, Seed: m.cfg.Seed, Sync: m.cfg.Sync,
		BackoffJitter: m.cfg.Backoff.Jitter.String(), Started: start.UTC(),
		RunSeconds: drainStart.Sub(start).Seconds(), DrainSeconds: drained.Seconds(), Interrupted: interrupted,
		Provisioning:   Provisioning{Reused: p.Reused, Issued: p.Issued, Enrolled: p.Enrolled, Registered: p.Registered, Seconds: p.Took.Seconds()},
		ConnectedAtEnd: s.connected, ConnectAttempts: s.attempts, Connects: s.connects, ConnectFailures: s.failuresBy,
		Reconnects: s.reconnects, ReconnectsByCause: s.reconnectsBy,
		Measurements: Measurements{Sampled: s.sampled, Acknowledged: s.acked, Dropped: s.dropped, DroppedBy: s.droppedBy,
			Invalid: s.invalid, BacklogAtEnd: s.backlog},
		Batches: s.batches, Bytes: s.bytes,
		Injected: Injected{FirmwareDrops: f.firmwareDrops.Load(), NetworkDrops: f.networkDrops.Load(), NATKills: f.natKills.Load(),
			Outages: f.outages.Load(), OutageDials: f.outageDials.Load()},
		Profiles: s.perProfile,
		Timeline: m.timeline,
	}
}

// WriteTable writes the summary for people.
func (s *Summary) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	run := s.RunSeconds
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	row("devices", "%d (%d connected at the end)", s.Devices, s.ConnectedAtEnd)
	row("ran", "%.1f s, then drained %.1f s%s", run, s.DrainSeconds, map[bool]string{true: " (interrupted)"}[s.Interrupted])
	row("credentials", "%d reused, %d issued, %d enrolled, %d newly registered, in %.2f s",
		s.Provisioning.Reused, s.Provisioning.Issued, s.Provisioning.Enrolled, s.Provisioning.Registered, s.Provisioning.Seconds)
	row("measurements sampled", "%d (%.1f/s)", s.Measurements.Sampled, perSecond(s.Measurements.Sampled, run))
	row("measurements acknowledged", "%d (%.1f/s over the run and drain)", s.Measurements.Acknowledged, perSecond(s.Measurements.Acknowledged, run+s.DrainSeconds))
	row("measurements dropped", "%d%s", s.Measurements.Dropped, byKey(s.Measurements.DroppedBy))
	row("left in spools", "%d", s.Measurements.BacklogAtEnd)
	row("batches", "%d (%d bytes, %.1f bytes per measurement)", s.Batches, s.Bytes, ratio(s.Bytes, s.Measurements.Acknowledged))
	row("connections", "%d attempts, %d established, %d failed%s", s.ConnectAttempts, s.Connects, sum(s.ConnectFailures), byKey(s.ConnectFailures))
	row("connections lost", "%d%s", s.Reconnects, byKey(s.ReconnectsByCause))
	in := s.Injected
	row("faults injected", "%d firmware drops, %d network drops, %d NAT timeouts, %d outages (%d dials refused)",
		in.FirmwareDrops, in.NetworkDrops, in.NATKills, in.Outages, in.OutageDials)
	peak, at := 0, 0
	for _, sec := range s.Timeline {
		if int(sec.Connects) > peak {
			peak, at = int(sec.Connects), sec.Second
		}
	}
	row("peak connects", "%d in second %d", peak, at)
	if len(s.Profiles) > 1 {
		for _, p := range s.Profiles {
			row("profile "+p.Name, "%d devices, %d connected, %d sampled, %d acknowledged, %d lost connections",
				p.Devices, p.ConnectedAtEnd, p.Sampled, p.Acknowledged, p.Reconnects)
		}
	}
	return tw.Flush()
}

func perSecond(n uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func byKey(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
