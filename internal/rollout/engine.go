package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/logx"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol"
	fw "github.com/millwright/millwright/protocol/firmware"
)

// Store is what the engine needs of the telemetry store (internal/tsdb.Store has it): PromQL
// for the health gates, an appender for its own series.
type Store interface {
	Engine() *promql.Engine
	Queryable() storage.Queryable
	Appender(ctx context.Context) (storage.Appender, error)
}

// Scope is the devices a rollout is for: every list given must match (a device's model is
// one of Models, its operator one of Operators, it is in one of Groups, it carries every tag
// of Tags). Devices whose model has no artifact of the release are never in scope.
type Scope struct {
	Models    []string `json:"models,omitempty"`
	Operators []string `json:"operators,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	// Tags are key=value.
	Tags []string `json:"tags,omitempty"`
}

// Matches reports whether d is in the scope.
func (s Scope) Matches(d registry.FleetDevice) bool {
	if len(s.Models) > 0 && !slices.Contains(s.Models, d.Model) ||
		len(s.Operators) > 0 && !slices.Contains(s.Operators, d.Operator) {
		return false
	}
	if len(s.Groups) > 0 && !slices.ContainsFunc(s.Groups, func(g string) bool { return slices.Contains(d.Groups, g) }) {
		return false
	}
	for _, t := range s.Tags {
		k, v, _ := strings.Cut(t, "=")
		if got, ok := d.Tags[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func (s Scope) validate() error {
	for _, t := range s.Tags {
		if k, _, ok := strings.Cut(t, "="); !ok || k == "" {
			return fmt.Errorf("tag %q is not key=value", t)
		}
	}
	return nil
}

// ErrConflict is returned for a rollout whose devices another active rollout may offer a
// release to, and for an operation the rollout's state does not allow.
var ErrConflict = errors.New("conflict")

// Engine steps rollouts: it offers releases phase by phase through the devices' mailboxes,
// follows each device's update to its confirmation, judges the health gates, halts on
// trouble, and advances phases on the injected clock. All its state is the registry's; every
// step reads it, decides and writes in one transaction, so a restarted server goes on where
// the last step left off.
type Engine struct {
	reg   *registry.Registry
	store Store
	clk   clock.Clock
	log   *slog.Logger
	// deliver hands offers just queued to the device channel (nil: they wait for the
	// device's next connect or poll).
	deliver func([]registry.Message)

	// stepMu serializes steps and operations: two at once would both offer to a device
	// neither had seen offered.
	stepMu sync.Mutex

	mu      sync.Mutex
	results map[string][]Result // rollout → its gates' last verdicts
	halted  map[string]labels.Labels

	// leader, when set, says whether this server may step: of the servers sharing a
	// registry, only the one holding the lock does.
	leader  Leader
	leading bool
	errs    *logx.Every // a failing step logs once per ErrorLogInterval

	steps, offers, halts prometheus.Counter
	stepSeconds          prometheus.Histogram
	leaderGauge          prometheus.Gauge
}

// Leader is the lock that lets one of the servers sharing a registry run the engine
// (registry.Leadership).
type Leader interface {
	Leading(ctx context.Context) (bool, error)
}

// MaxOfferAttempts bounds the offers of one version to one device whose download failed.
const MaxOfferAttempts = 3

// Actor is the audit actor of what the engine does by itself.
const Actor = "rollout-engine"

// NewEngine returns an engine over the registry and the telemetry store. logger and mreg may
// be nil.
func NewEngine(reg *registry.Registry, store Store, clk clock.Clock, logger *slog.Logger, mreg prometheus.Registerer) *Engine {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{reg: reg, store: store, clk: clk, log: logger, results: map[string][]Result{}, halted: map[string]labels.Labels{},
		steps:       prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_rollout_steps_total", Help: "Rollout engine steps."}),
		offers:      prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_rollout_offers_total", Help: "Firmware offers queued by rollouts."}),
		halts:       prometheus.NewCounter(prometheus.CounterOpts{Name: "millwright_rollout_halts_total", Help: "Rollouts halted by a failed health gate."}),
		stepSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "millwright_rollout_step_seconds", Help: "Duration of one engine step over every active rollout.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		leaderGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "millwright_rollout_leader", Help: "1 when this server runs the rollout engine for the registry, 0 while another server does."}),
	}
	if mreg != nil {
		mreg.MustRegister(e.steps, e.offers, e.halts, e.stepSeconds, e.leaderGauge)
	}
	now := time.Now
	if clk != nil {
		now = clk.Now
	}
	e.errs = logx.NewEvery(logx.ErrorInterval, now)
	return e
}

// SetLeader makes Run step only while l says this server leads. Without one, Run always
// steps: the registry has one server.
func (e *Engine) SetLeader(l Leader) { e.leader = l }

// Tick steps every rollout if this server leads (see SetLeader), and says whether it did.
func (e *Engine) Tick(ctx context.Context) (bool, error) {
	if e.leader != nil {
		ok, err := e.leader.Leading(ctx)
		if err != nil {
			return false, err
		}
		if ok != e.leading {
			e.leading = ok
			if ok {
				e.log.Info("this server runs the rollout engine")
			} else {
				e.log.Info("another server runs the rollout engine; this one waits")
			}
		}
		e.leaderGauge.Set(b2f(ok))
		if !ok {
			return false, nil
		}
	} else {
		e.leaderGauge.Set(1)
	}
	return true, e.Step(ctx)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// SetDeliver sets where offers go as soon as they are queued.
func (e *Engine) SetDeliver(fn func([]registry.Message)) { e.deliver = fn }

// Spec is a rollout to create.
type Spec struct {
	// ID names the rollout; empty: one is made.
	ID      string
	Version string
	Scope   Scope
	// PlanName is a built-in plan's name, or a label for Plan.
	PlanName string
	Plan     Plan
	Actor    string
}

// Create records a new rollout, running from now. It is refused when the archive has no
// artifact of the release for a model in scope, or when another active rollout's scope may
// hold the same devices (their model lists must be given and disjoint).
func (e *Engine) Create(ctx context.Context, s Spec, remote string) (registry.Rollout, error) {
	if err := fw.ValidVersion(s.Version); err != nil {
		return registry.Rollout{}, fmt.Errorf("%w: release %q: %v", registry.ErrInvalid, s.Version, err)
	}
	if err := s.Scope.validate(); err != nil {
		return registry.Rollout{}, fmt.Errorf("%w: scope: %v", registry.ErrInvalid, err)
	}
	if err := s.Plan.Validate(); err != nil {
		return registry.Rollout{}, fmt.Errorf("%w: %w", registry.ErrInvalid, err)
	}
	rels, err := e.reg.Releases(ctx, "")
	if err != nil {
		return registry.Rollout{}, err
	}
	var models []string
	for _, r := range rels {
		if r.Version == s.Version && (len(s.Scope.Models) == 0 || slices.Contains(s.Scope.Models, r.Model)) {
			models = append(models, r.Model)
		}
	}
	if len(models) == 0 {
		return registry.Rollout{}, fmt.Errorf("release %s: %w: the archive has no artifact of it for the models in scope (upload it with millwright firmware upload)", s.Version, registry.ErrNotFound)
	}
	active, err := e.reg.Rollouts(ctx, true)
	if err != nil {
		return registry.Rollout{}, err
	}
	for _, a := range active {
		var other Scope
		_ = json.Unmarshal([]byte(a.Selector), &other)
		if len(other.Models) == 0 || len(s.Scope.Models) == 0 || slices.ContainsFunc(other.Models, func(m string) bool { return slices.Contains(s.Scope.Models, m) }) {
			return registry.Rollout{}, fmt.Errorf("%w: rollout %s (release %s) is %s and may hold the same devices; finish, abort or roll it back first, or give both rollouts disjoint --model lists",
				ErrConflict, a.ID, a.Version, a.State)
		}
	}
	if s.ID == "" {
		s.ID = fmt.Sprintf("r-%x", e.clk.Now().UnixMilli())
	}
	sel, _ := json.Marshal(s.Scope)
	plan, _ := json.Marshal(s.Plan)
	return e.reg.CreateRollout(ctx, registry.Rollout{ID: s.ID, Version: s.Version, Selector: string(sel), Plan: string(plan),
		PlanName: s.PlanName, CreatedBy: s.Actor, PhaseSince: e.clk.Now()}, remote)
}

// decode reads a rollout's scope and plan (with defaults).
func decode(ro registry.Rollout) (Scope, Plan, error) {
	var (
		s Scope
		p Plan
	)
	if err := json.Unmarshal([]byte(ro.Selector), &s); err != nil {
		return s, p, fmt.Errorf("rollout %s: scope: %w", ro.ID, err)
	}
	if err := json.Unmarshal([]byte(ro.Plan), &p); err != nil {
		return s, p, fmt.Errorf("rollout %s: plan: %w", ro.ID, err)
	}
	return s, p.WithDefaults(), nil
}

// Run steps every active rollout every interval until ctx ends.
func (e *Engine) Run(ctx context.Context, interval time.Duration) error {
	for {
		if _, err := e.Tick(ctx); err != nil && ctx.Err() == nil {
			e.errs.Log(ctx, e.log, slog.LevelError, "step", "rollout step", "error", err)
		}
		t := e.clk.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// Step steps every rollout that has something to follow.
func (e *Engine) Step(ctx context.Context) error {
	e.stepMu.Lock()
	defer e.stepMu.Unlock()
	start := time.Now()
	defer func() { e.steps.Inc(); e.stepSeconds.Observe(time.Since(start).Seconds()) }()
	all, err := e.reg.Rollouts(ctx, false)
	if err != nil {
		return err
	}
	var todo []registry.Rollout
	for _, ro := range all {
		if ro.State.Active() || ro.State == registry.RolloutRolledBack || ro.State == registry.RolloutCompleted {
			todo = append(todo, ro)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	w, err := e.world(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, ro := range todo {
		if err := e.stepOne(ctx, w, ro); err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", ro.ID, err))
		}
	}
	return errors.Join(errs...)
}

// world is what one step reads once for every rollout: the fleet and the archive.
type world struct {
	now      time.Time
	fleet    []registry.FleetDevice
	byID     map[string]int
	releases map[string][]Release           // model → its releases
	artifact map[[2]string]registry.Release // (version, model) → release
}

func (e *Engine) world(ctx context.Context) (*world, error) {
	fleet, err := e.reg.FleetSnapshot(ctx)
	if err != nil {
		return nil, err
	}
	rels, err := e.reg.Releases(ctx, "")
	if err != nil {
		return nil, err
	}
	w := &world{now: e.clk.Now(), fleet: fleet, byID: make(map[string]int, len(fleet)), releases: map[string][]Release{}, artifact: map[[2]string]registry.Release{}}
	for i, d := range fleet {
		w.byID[d.ID] = i
	}
	for _, r := range rels {
		w.releases[r.Model] = append(w.releases[r.Model], Release{Version: r.Version, MinFrom: r.MinFrom})
		w.artifact[[2]string{r.Version, r.Model}] = r
	}
	return w, nil
}

// stepper is one rollout's step being decided.
type stepper struct {
	e     *Engine
	w     *world
	ro    registry.Rollout
	plan  Plan
	scope Scope
	recs  map[string]registry.RolloutDevice
	step  registry.RolloutStep
}

func (s *stepper) device(id string) (registry.FleetDevice, bool) {
	i, ok := s.w.byID[id]
	if !ok {
		return registry.FleetDevice{}, false
	}
	return s.w.fleet[i], true
}

// put records a device's new state, with an event in its history when the state changed.
func (s *stepper) put(rec registry.RolloutDevice, event, detail string) {
	rec.UpdatedAt = s.w.now
	if detail != "" {
		rec.Detail = detail
	}
	s.recs[rec.Device] = rec
	s.step.Devices = append(s.step.Devices, rec)
	if event != "" {
		s.step.History = append(s.step.History, registry.UpdateEvent{Device: rec.Device, Rollout: s.ro.ID, At: s.w.now, Event: event,
			From: rec.From, To: rec.Target, Detail: detail})
	}
}

// offer queues a firmware.update for target to the device and records it in state (offered,
// or reverting for a rollback).
func (s *stepper) offer(rec registry.RolloutDevice, d registry.FleetDevice, target, state, event string) {
	rel, ok := s.w.artifact[[2]string{target, d.Model}]
	if !ok {
		s.put(rec, registry.UpdateNoPath, fmt.Sprintf("the archive has no artifact of %s for %s", target, d.Model))
		return
	}
	s.step.Offers = append(s.step.Offers, registry.CommandSpec{Device: d.ID, Name: protocol.CmdFirmwareUpdate, TTL: s.plan.Deadline,
		MaxArgLen: registry.MaxManifestLen, Args: map[string]string{
			protocol.ArgManifest:     rel.Manifest,
			protocol.ArgArtifactPath: protocol.FirmwarePathPrefix + rel.SHA256,
			protocol.ArgRollout:      s.ro.ID,
			protocol.ArgStartWithin:  protocol.FormatStartWithin(s.plan.DownloadWindow),
		}})
	s.e.offers.Inc()
	if rec.Target != target || rec.State != registry.UpdateOffered {
		rec.Attempts = 0
	}
	rec.Attempts++
	rec.Target, rec.State, rec.Command, rec.OfferedAt, rec.InstalledAt, rec.Reported = target, state, registry.OfferRef(len(s.step.Offers)-1), s.w.now, time.Time{}, ""
	s.put(rec, event, "")
}

func (e *Engine) stepOne(ctx context.Context, w *world, ro registry.Rollout) error {
	scope, plan, err := decode(ro)
	if err != nil {
		return err
	}
	recs, err := e.reg.RolloutDevices(ctx, ro.ID)
	if err != nil {
		return err
	}
	s := &stepper{e: e, w: w, ro: ro, plan: plan, scope: scope, recs: make(map[string]registry.RolloutDevice, len(recs))}
	for _, r := range recs {
		s.recs[r.Device] = r
	}
	for _, r := range recs {
		s.follow(r)
	}
	if ro.State == registry.RolloutRolledBack || ro.State == registry.RolloutCompleted {
		// Nothing more to offer; the devices still on their way (and the absent ones that
		// come back) are followed.
		return e.apply(ctx, s)
	}
	// The scope: active devices that match, whose model has the release.
	var (
		devs  []Device
		inIdx []int
	)
	for i, d := range w.fleet {
		_, placed := s.recs[d.ID]
		if !placed && (d.Status != registry.StatusActive || !scope.Matches(d) || !hasArtifact(w, ro.Version, d.Model)) {
			continue
		}
		dev := Device{ID: d.ID, Model: d.Model, Operator: d.Operator, Tags: d.Tags, Groups: d.Groups}
		if r, ok := s.recs[d.ID]; ok {
			dev.Placed, dev.Phase = true, r.Phase
		}
		devs = append(devs, dev)
		inIdx = append(inIdx, i)
	}
	phases := plan.Assign(ro.ID, devs)
	pr := Progress{Phase: ro.Phase, Since: ro.PhaseSince, Complete: ro.Phase == len(plan.Phases)-1}
	if ro.State == registry.RolloutRunning {
		for j, k := range phases {
			if pr.Offered(k) {
				s.place(w.fleet[inIdx[j]], k)
			}
		}
	}
	results := e.judge(ctx, s, devs, pr)
	e.mu.Lock()
	e.results[ro.ID] = results
	e.mu.Unlock()
	if ro.State == registry.RolloutRunning {
		var failed []Result
		for _, r := range results {
			if r.Verdict == GateFail {
				failed = append(failed, r)
			}
		}
		if len(failed) > 0 {
			reasons := make([]string, len(failed))
			for i, r := range failed {
				reasons[i] = r.Detail
			}
			evidence, _ := json.Marshal(failed)
			s.ro.State, s.ro.HaltReason, s.ro.HaltEvidence = registry.RolloutHalted, strings.Join(reasons, "; "), string(evidence)
			s.step.Rollout, s.step.Audit, s.step.Actor, s.step.AuditDetail = &s.ro, registry.ActionRolloutHalt, Actor, s.ro.HaltReason
			e.halts.Inc()
			e.log.Warn("rollout halted by a health gate", "rollout", ro.ID, "release", ro.Version, "reason", s.ro.HaltReason)
		} else {
			settled := func(k int) bool {
				for j, ph := range phases {
					if ph >= 0 && ph <= k {
						if r, ok := s.recs[devs[j].ID]; ok && (r.State == registry.UpdateOffered || r.State == registry.UpdateInstalled) {
							return false
						}
					}
				}
				return true
			}
			next := plan.Advance(pr, w.now, settled)
			if next.Phase != pr.Phase {
				s.ro.Phase, s.ro.PhaseSince = next.Phase, next.Since
				s.step.Rollout = &s.ro
				e.log.Info("rollout phase", "rollout", ro.ID, "release", ro.Version, "phase", plan.Phases[next.Phase].Name)
				// The next phase's devices are offered in the next step.
			}
			if pr.Complete && settled(len(plan.Phases)-1) && s.allPlaced(devs, phases) {
				s.ro.State = registry.RolloutCompleted
				s.step.Rollout, s.step.Audit, s.step.Actor, s.step.AuditDetail = &s.ro, registry.ActionRolloutComplete, Actor, "every device in scope is settled"
			}
		}
	}
	return e.apply(ctx, s)
}

func hasArtifact(w *world, version, model string) bool {
	_, ok := w.artifact[[2]string{version, model}]
	return ok
}

// allPlaced reports whether every device of the scope has a record.
func (s *stepper) allPlaced(devs []Device, phases []int) bool {
	for j := range devs {
		if _, ok := s.recs[devs[j].ID]; !ok && phases[j] >= 0 {
			return false
		}
	}
	return true
}

// place offers the release to a device whose phase is open: it runs it already (current),
// has been absent long (waiting, in the canary phase), has no upgrade path (no_path), or is
// offered the first hop of its path.
func (s *stepper) place(d registry.FleetDevice, phase int) {
	rec, placed := s.recs[d.ID]
	switch {
	case !placed:
		rec = registry.RolloutDevice{Rollout: s.ro.ID, Device: d.ID, Phase: phase, From: d.Firmware}
	case rec.State != registry.UpdateWaiting:
		return
	}
	now := s.w.now
	if d.Firmware == s.ro.Version {
		rec.State, rec.Target = registry.UpdateCurrent, s.ro.Version
		s.put(rec, registry.UpdateCurrent, "")
		return
	}
	if d.LastSeen.IsZero() || now.Sub(d.LastSeen) > s.plan.AbsentAfter {
		if !placed {
			rec.State, rec.Target = registry.UpdateWaiting, s.ro.Version
			detail := "never seen; offered when it first connects"
			if !d.LastSeen.IsZero() {
				rec.Phase = s.plan.CanaryPhase()
				detail = fmt.Sprintf("absent since %s; re-enters through the %s phase when it is seen again", d.LastSeen.Format(time.RFC3339), s.plan.Phases[rec.Phase].Name)
			}
			s.put(rec, registry.UpdateWaiting, detail)
		}
		return
	}
	rec.From = d.Firmware
	path, err := UpgradePath(s.w.releases[d.Model], d.Firmware, s.ro.Version)
	if err != nil || len(path) == 0 {
		rec.State, rec.Target = registry.UpdateNoPath, s.ro.Version
		detail := "no upgrade path"
		if err != nil {
			detail = err.Error()
		}
		s.put(rec, registry.UpdateNoPath, detail)
		return
	}
	s.offer(rec, d, path[0], registry.UpdateOffered, registry.UpdateOffered)
}

// follow moves a device record on from what the device did since the last step.
func (s *stepper) follow(rec registry.RolloutDevice) {
	d, ok := s.device(rec.Device)
	if !ok {
		return
	}
	now := s.w.now
	switch rec.State {
	case registry.UpdateOffered, registry.UpdateUnreachable:
		switch {
		case d.Firmware == rec.Target:
			rec.State, rec.InstalledAt = registry.UpdateInstalled, now
			s.put(rec, registry.UpdateInstalled, "")
		case rec.State == registry.UpdateUnreachable:
		case rec.CommandState == registry.MessageFailed && rec.CommandReason == protocol.FailDownload && rec.Attempts < MaxOfferAttempts &&
			s.ro.State == registry.RolloutRunning && rec.Reported != protocol.UpdateRolledBack:
			// The device could not finish the download (cut off, or it restarted halfway); it
			// keeps what it has, and a new offer resumes it.
			s.offer(rec, d, rec.Target, registry.UpdateOffered, "reoffered")
		case rec.CommandState == registry.MessageFailed || rec.Reported == protocol.UpdateFailed || rec.Reported == protocol.UpdateRolledBack:
			rec.State = registry.UpdateFailed
			detail := rec.Detail
			if rec.CommandReason != "" {
				detail = rec.CommandReason + ": " + detail
			}
			s.put(rec, registry.UpdateFailed, detail)
		case rec.CommandState == registry.MessageExpired || now.Sub(rec.OfferedAt) > s.plan.Deadline:
			rec.State = registry.UpdateUnreachable
			s.put(rec, registry.UpdateUnreachable, fmt.Sprintf("did not report running %s within %v of the offer", rec.Target, s.plan.Deadline))
		}
	case registry.UpdateInstalled:
		switch {
		case d.Firmware != rec.Target || rec.Reported == protocol.UpdateRolledBack:
			rec.State = registry.UpdateFailed
			s.put(rec, registry.UpdateFailed, fmt.Sprintf("went back to %s after installing %s", d.Firmware, rec.Target))
		case now.Sub(rec.InstalledAt) >= s.plan.Confirm && d.LastSeen.After(rec.InstalledAt):
			if rec.Target == s.ro.Version || s.ro.State == registry.RolloutRolledBack {
				rec.State = registry.UpdateSucceeded
				s.put(rec, registry.UpdateSucceeded, "")
				return
			}
			if s.ro.State != registry.RolloutRunning && s.ro.State != registry.RolloutCompleted {
				return // the next hop waits for the rollout to run
			}
			path, err := UpgradePath(s.w.releases[d.Model], d.Firmware, s.ro.Version)
			if err != nil || len(path) == 0 {
				rec.State = registry.UpdateNoPath
				s.put(rec, registry.UpdateNoPath, fmt.Sprintf("no path on from %s: %v", d.Firmware, err))
				return
			}
			s.offer(rec, d, path[0], registry.UpdateOffered, "hop")
		}
	case registry.UpdateWaiting:
		if (s.ro.State == registry.RolloutRunning || s.ro.State == registry.RolloutCompleted) && !d.LastSeen.IsZero() && now.Sub(d.LastSeen) <= s.plan.AbsentAfter && d.LastSeen.After(rec.UpdatedAt) &&
			(Progress{Phase: s.ro.Phase}).Offered(rec.Phase) {
			s.place(d, rec.Phase)
		}
	case registry.UpdateReverting:
		if c, err := fw.CompareVersions(d.Firmware, rec.From); err == nil && c == 0 {
			rec.State = registry.UpdateReverted
			s.put(rec, registry.UpdateReverted, "")
		}
	}
}

func (e *Engine) apply(ctx context.Context, s *stepper) error {
	e.writeSeries(ctx, s)
	if len(s.step.Devices) == 0 && len(s.step.History) == 0 && s.step.Rollout == nil {
		return nil
	}
	if s.step.Actor == "" {
		s.step.Actor = Actor
	}
	msgs, err := e.reg.ApplyRolloutStep(ctx, s.step, "")
	if err != nil {
		return err
	}
	if len(msgs) > 0 && e.deliver != nil {
		e.deliver(msgs)
	}
	return nil
}

// Counts counts a rollout's device records by state.
func Counts(recs []registry.RolloutDevice) map[string]int {
	c := map[string]int{}
	for _, r := range recs {
		c[r.State]++
	}
	return c
}

// judge evaluates the plan's gates for the rollout's current phase: devices that run the
// release through this rollout against the scope's devices not offered it yet.
func (e *Engine) judge(ctx context.Context, s *stepper, devs []Device, pr Progress) []Result {
	newer := map[string]bool{}
	older := map[string]bool{}
	var bad, unreachable, finished int
	for _, d := range devs {
		r, placed := s.recs[d.ID]
		switch {
		case placed && (r.State == registry.UpdateInstalled || r.State == registry.UpdateSucceeded) && r.Target == s.ro.Version:
			newer[d.ID] = true
		case !placed || r.State == registry.UpdateWaiting:
			if fd, ok := s.device(d.ID); ok && fd.Firmware != s.ro.Version {
				older[d.ID] = true
			}
		}
		if placed {
			switch r.State {
			case registry.UpdateFailed:
				bad++
				finished++
			case registry.UpdateUnreachable:
				unreachable++
				finished++
			case registry.UpdateSucceeded, registry.UpdateInstalled:
				finished++
			}
		}
	}
	window := s.w.now.Sub(pr.Since)
	var (
		conn    map[string]float64
		connErr error
		read    bool
	)
	hours := func() (map[string]float64, error) {
		if !read {
			read = true
			conn, connErr = e.perDevice(ctx, strings.ReplaceAll(ConnectedQuery, "$window", fmt.Sprintf("%ds", int64(max(window, time.Second)/time.Second))), s.w.now)
			for dev, share := range conn {
				conn[dev] = share * window.Hours()
			}
		}
		return conn, connErr
	}
	var out []Result
	for _, g := range s.plan.Gates {
		switch g.Outcome {
		case OutcomeFailures:
			out = append(out, g.Bound(bad, finished))
			continue
		case OutcomeUnreachable:
			out = append(out, g.Bound(unreachable, finished))
			continue
		}
		if len(newer) == 0 {
			out = append(out, Result{Gate: g.Name, Verdict: GateInsufficient, Detail: g.Name + ": no device runs the release yet"})
			continue
		}
		ns, os, err := e.samples(ctx, g, window, s.w.now, newer, older, hours)
		if err != nil {
			out = append(out, Result{Gate: g.Name, Verdict: GateInsufficient, Detail: fmt.Sprintf("%s: %v", g.Name, err)})
			continue
		}
		out = append(out, g.Compare(ns, os))
	}
	return out
}

// ConnectedQuery gives each device's share of the window it was connected: the exposure of a
// gate counted in device-hours is that share times the window's hours (so a device that was
// offline, or talks HTTPS and holds no connection, brings no exposure and no events).
const ConnectedQuery = `avg_over_time(millwright_device_connected[$window])`

// perDevice evaluates qs at now and returns each device's value.
func (e *Engine) perDevice(ctx context.Context, qs string, now time.Time) (map[string]float64, error) {
	q, err := e.store.Engine().NewInstantQuery(ctx, e.store.Queryable(), nil, qs, now)
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, err)
	}
	defer q.Close()
	res := q.Exec(ctx)
	if res.Err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, res.Err)
	}
	vec, err := res.Vector()
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", qs, err)
	}
	out := make(map[string]float64, len(vec))
	for _, smp := range vec {
		if dev := smp.Metric.Get("device"); dev != "" {
			out[dev] += smp.F
		}
	}
	return out, nil
}

// samples evaluates a comparison gate's query and sums it over the two groups. hours gives
// each device's connected hours in the window (for device-hour exposure; read once a step).
func (e *Engine) samples(ctx context.Context, g Gate, window time.Duration, now time.Time, newer, older map[string]bool, hours func() (map[string]float64, error)) (Sample, Sample, error) {
	vals, err := e.perDevice(ctx, g.QueryFor(window), now)
	if err != nil {
		return Sample{}, Sample{}, err
	}
	var conn map[string]float64
	if g.Exposure != ExposureDevices {
		if conn, err = hours(); err != nil {
			return Sample{}, Sample{}, err
		}
	}
	sum := func(group map[string]bool) Sample {
		var s Sample
		for dev := range group {
			v, ok := vals[dev]
			exp := 0.0
			switch {
			case g.Exposure == ExposureDevices && ok:
				exp = 1
			case g.Exposure != ExposureDevices:
				exp = conn[dev]
			}
			if exp <= 0 {
				continue
			}
			s.Events += v
			s.Exposure += exp
			s.Devices++
		}
		return s
	}
	return sum(newer), sum(older), nil
}

// Results returns the last verdicts of a rollout's gates.
func (e *Engine) Results(id string) []Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.results[id])
}

// writeSeries writes the rollout's series: devices by state, its phase, and, while halted,
// millwright_rollout_halted with the reason (the default rule RolloutHalted alerts on it).
func (e *Engine) writeSeries(ctx context.Context, s *stepper) {
	if e.store == nil {
		return
	}
	app, err := e.store.Appender(ctx)
	if err != nil {
		e.log.Warn("rollout series", "error", err)
		return
	}
	ts := s.w.now.UnixMilli()
	counts := Counts(slices.Collect(func(yield func(registry.RolloutDevice) bool) {
		for _, r := range s.recs {
			if !yield(r) {
				return
			}
		}
	}))
	for _, st := range []string{registry.UpdateWaiting, registry.UpdateOffered, registry.UpdateInstalled, registry.UpdateSucceeded,
		registry.UpdateFailed, registry.UpdateUnreachable, registry.UpdateCurrent, registry.UpdateNoPath, registry.UpdateReverting, registry.UpdateReverted} {
		_, _ = app.Append(0, labels.FromStrings("__name__", "millwright_rollout_devices", "rollout", s.ro.ID, "version", s.ro.Version, "state", st), ts, float64(counts[st]))
	}
	_, _ = app.Append(0, labels.FromStrings("__name__", "millwright_rollout_phase", "rollout", s.ro.ID, "version", s.ro.Version), ts, float64(s.ro.Phase))
	e.mu.Lock()
	prev, was := e.halted[s.ro.ID]
	if s.ro.State == registry.RolloutHalted {
		reason := s.ro.HaltReason
		if len(reason) > 1024 {
			reason = reason[:1024]
		}
		ls := labels.FromStrings("__name__", "millwright_rollout_halted", "rollout", s.ro.ID, "version", s.ro.Version, "reason", reason)
		if was && !labels.Equal(prev, ls) {
			_, _ = app.Append(0, prev, ts, staleNaN())
		}
		_, _ = app.Append(0, ls, ts, 1)
		e.halted[s.ro.ID] = ls
	} else if was {
		_, _ = app.Append(0, prev, ts, staleNaN())
		delete(e.halted, s.ro.ID)
	}
	e.mu.Unlock()
	if err := app.Commit(); err != nil {
		e.log.Warn("rollout series", "error", err)
	}
}

func staleNaN() float64 { return math.Float64frombits(value.StaleNaN) }

// Pause stops a running rollout from offering the release to more devices; the devices
// offered it go on and are followed.
func (e *Engine) Pause(ctx context.Context, id, actor, remote string) (registry.Rollout, error) {
	return e.reg.ChangeRollout(ctx, id, actor, registry.ActionRolloutPause, remote, func(ro *registry.Rollout) (string, error) {
		if ro.State != registry.RolloutRunning {
			return "", fmt.Errorf("%w: rollout %s is %s, not running", ErrConflict, id, ro.State)
		}
		ro.State = registry.RolloutPaused
		return "paused in phase " + fmt.Sprint(ro.Phase), nil
	})
}

// Resume runs a paused or halted rollout again. The phase's soak starts over from now: the
// devices must prove themselves healthy for the whole soak after whatever halted it.
func (e *Engine) Resume(ctx context.Context, id, actor, remote string) (registry.Rollout, error) {
	return e.reg.ChangeRollout(ctx, id, actor, registry.ActionRolloutResume, remote, func(ro *registry.Rollout) (string, error) {
		if ro.State != registry.RolloutPaused && ro.State != registry.RolloutHalted {
			return "", fmt.Errorf("%w: rollout %s is %s, neither paused nor halted", ErrConflict, id, ro.State)
		}
		detail := "resumed from " + string(ro.State)
		if ro.HaltReason != "" {
			detail += " (" + ro.HaltReason + ")"
		}
		ro.State, ro.PhaseSince, ro.HaltReason, ro.HaltEvidence = registry.RolloutRunning, e.clk.Now(), "", ""
		return detail + "; the soak starts over", nil
	})
}

// Abort ends a rollout: offers not yet taken are withdrawn; devices that took the release
// keep it.
func (e *Engine) Abort(ctx context.Context, id, actor, remote string) (registry.Rollout, error) {
	return e.end(ctx, id, actor, remote, registry.RolloutAborted)
}

// Rollback ends a rollout and offers every device that took the release the version it ran
// before. The archive must hold, for each such (model, version), a release of that version
// signed as a rollback (millwright firmware upload --rollback, with build metadata such as
// 1.4.2+rollback so that it is a release of its own); without one the rollback is refused
// and says what to upload.
func (e *Engine) Rollback(ctx context.Context, id, actor, remote string) (registry.Rollout, error) {
	return e.end(ctx, id, actor, remote, registry.RolloutRolledBack)
}

func (e *Engine) end(ctx context.Context, id, actor, remote string, to registry.RolloutState) (registry.Rollout, error) {
	e.stepMu.Lock()
	defer e.stepMu.Unlock()
	ro, err := e.reg.Rollout(ctx, id)
	if err != nil {
		return registry.Rollout{}, err
	}
	if !ro.State.Active() && !(ro.State == registry.RolloutCompleted && to == registry.RolloutRolledBack) {
		return registry.Rollout{}, fmt.Errorf("%w: rollout %s is %s", ErrConflict, id, ro.State)
	}
	recs, err := e.reg.RolloutDevices(ctx, id)
	if err != nil {
		return registry.Rollout{}, err
	}
	w, err := e.world(ctx)
	if err != nil {
		return registry.Rollout{}, err
	}
	_, plan, err := decode(*ro)
	if err != nil {
		return registry.Rollout{}, err
	}
	s := &stepper{e: e, w: w, ro: *ro, plan: plan, recs: map[string]registry.RolloutDevice{}}
	for _, r := range recs {
		if r.State == registry.UpdateOffered && r.Command != "" {
			s.step.Cancel = append(s.step.Cancel, r.Command)
		}
	}
	action, detail := registry.ActionRolloutAbort, "aborted"
	if to == registry.RolloutRolledBack {
		action = registry.ActionRolloutRollback
		var missing []string
		for _, r := range recs {
			d, ok := s.device(r.Device)
			if !ok || d.Firmware == r.From || r.From == "" {
				continue
			}
			if c, _ := fw.CompareVersions(d.Firmware, ro.Version); d.Firmware == "" || c != 0 && r.State != registry.UpdateInstalled && r.State != registry.UpdateSucceeded {
				continue
			}
			rel, ok := rollbackRelease(w, d.Model, r.From)
			if !ok {
				if m := d.Model + " " + r.From; !slices.Contains(missing, m) {
					missing = append(missing, m)
				}
				continue
			}
			s.offer(r, d, rel, registry.UpdateReverting, registry.UpdateReverting)
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return registry.Rollout{}, fmt.Errorf("%w: no release signed as a rollback for %s; upload one (millwright firmware upload --rollback --version VERSION+rollback) and roll back again",
				registry.ErrNotFound, strings.Join(missing, ", "))
		}
		detail = fmt.Sprintf("rolled back: %d devices offered their previous version", len(s.step.Offers))
	}
	s.ro.State = to
	s.step.Rollout, s.step.Audit, s.step.Actor, s.step.AuditDetail = &s.ro, action, actor, detail
	msgs, err := e.reg.ApplyRolloutStep(ctx, s.step, remote)
	if err != nil {
		return registry.Rollout{}, err
	}
	if len(msgs) > 0 && e.deliver != nil {
		e.deliver(msgs)
	}
	out, err := e.reg.Rollout(ctx, id)
	if err != nil {
		return registry.Rollout{}, err
	}
	return *out, nil
}

// rollbackRelease finds the release of model that takes a device back to version: the same
// version up to build metadata, signed as a rollback.
func rollbackRelease(w *world, model, version string) (string, bool) {
	for _, r := range w.releases[model] {
		if c, err := fw.CompareVersions(r.Version, version); err != nil || c != 0 {
			continue
		}
		sm, err := fw.DecodeSignedManifest([]byte(w.artifact[[2]string{r.Version, model}].Manifest))
		if err != nil {
			continue
		}
		if m, err := fw.ParseManifest(sm.Manifest); err == nil && m.Rollback {
			return r.Version, true
		}
	}
	return "", false
}

// Status is a rollout as the API and the CLI show it.
type Status struct {
	ID         string        `json:"id"`
	Version    string        `json:"version"`
	Plan       string        `json:"plan"`
	State      string        `json:"state"`
	Scope      Scope         `json:"scope"`
	Phase      int           `json:"phase"`
	PhaseName  string        `json:"phase_name"`
	PhaseSince time.Time     `json:"phase_since"`
	Phases     []PhaseStatus `json:"phases"`
	HaltReason string        `json:"halt_reason,omitempty"`
	// HaltEvidence is the failed gates' results when it halted.
	HaltEvidence []Result `json:"halt_evidence,omitempty"`
	// Counts are the placed devices by state; Devices their number.
	Counts  map[string]int `json:"counts"`
	Devices int            `json:"devices"`
	// Gates are the verdicts of the engine's last step (none before one ran since the server
	// started).
	Gates     []Result  `json:"gates"`
	Confirm   string    `json:"confirm"`
	Deadline  string    `json:"deadline"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PhaseStatus is one phase of a rollout's plan and the devices placed in it.
type PhaseStatus struct {
	Name    string  `json:"name"`
	Percent float64 `json:"percent,omitempty"`
	Max     int     `json:"max,omitempty"`
	Select  string  `json:"select,omitempty"`
	Soak    string  `json:"soak"`
	// Placed counts the devices placed in this phase; Cohort those of this phase and every
	// earlier one (phases are nested).
	Placed int `json:"placed"`
	Cohort int `json:"cohort"`
}

// Status reads one rollout's status.
func (e *Engine) Status(ctx context.Context, id string) (Status, error) {
	ro, err := e.reg.Rollout(ctx, id)
	if err != nil {
		return Status{}, err
	}
	recs, err := e.reg.RolloutDevices(ctx, id)
	if err != nil {
		return Status{}, err
	}
	return e.status(*ro, recs)
}

// List reads every rollout's status (without its devices: counts only), newest first.
func (e *Engine) List(ctx context.Context) ([]Status, error) {
	ros, err := e.reg.Rollouts(ctx, false)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(ros))
	for _, ro := range ros {
		recs, err := e.reg.RolloutDevices(ctx, ro.ID)
		if err != nil {
			return nil, err
		}
		st, err := e.status(ro, recs)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func (e *Engine) status(ro registry.Rollout, recs []registry.RolloutDevice) (Status, error) {
	scope, plan, err := decode(ro)
	if err != nil {
		return Status{}, err
	}
	st := Status{ID: ro.ID, Version: ro.Version, Plan: ro.PlanName, State: string(ro.State), Scope: scope, Phase: ro.Phase,
		PhaseSince: ro.PhaseSince, HaltReason: ro.HaltReason, Counts: Counts(recs), Devices: len(recs), Gates: e.Results(ro.ID),
		Confirm: plan.Confirm.String(), Deadline: plan.Deadline.String(), CreatedBy: ro.CreatedBy, CreatedAt: ro.CreatedAt, UpdatedAt: ro.UpdatedAt}
	if st.Gates == nil {
		st.Gates = []Result{}
	}
	if ro.HaltEvidence != "" {
		_ = json.Unmarshal([]byte(ro.HaltEvidence), &st.HaltEvidence)
	}
	if ro.Phase >= 0 && ro.Phase < len(plan.Phases) {
		st.PhaseName = plan.Phases[ro.Phase].Name
	}
	cohort := 0
	for k, ph := range plan.Phases {
		ps := PhaseStatus{Name: ph.Name, Percent: ph.Percent, Max: ph.Max, Soak: ph.Soak.String()}
		for _, f := range [][2]string{{"tag", ph.Select.Tag}, {"group", ph.Select.Group}, {"model", ph.Select.Model}, {"operator", ph.Select.Operator}} {
			if f[1] != "" {
				ps.Select = strings.TrimSpace(ps.Select + " " + f[0] + "=" + f[1])
			}
		}
		for _, r := range recs {
			if r.Phase == k {
				ps.Placed++
			}
		}
		cohort += ps.Placed
		ps.Cohort = cohort
		st.Phases = append(st.Phases, ps)
	}
	return st, nil
}

// Devices returns a rollout's device records, only those in state when it is not empty.
func (e *Engine) Devices(ctx context.Context, id, state string) ([]registry.RolloutDevice, error) {
	if _, err := e.reg.Rollout(ctx, id); err != nil {
		return nil, err
	}
	recs, err := e.reg.RolloutDevices(ctx, id)
	if err != nil || state == "" {
		return recs, err
	}
	out := []registry.RolloutDevice{}
	for _, r := range recs {
		if r.State == state {
			out = append(out, r)
		}
	}
	return out, nil
}
