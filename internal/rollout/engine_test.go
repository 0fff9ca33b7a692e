package rollout_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/registry/registrytest"
	"github.com/millwright/millwright/internal/rollout"
	"github.com/millwright/millwright/internal/tsdb"
	"github.com/millwright/millwright/protocol"
	fw "github.com/millwright/millwright/protocol/firmware"
)

var t0 = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)

// rig is a registry, a telemetry store and an engine on a fake clock, and a fleet of
// simulated devices that act on the offers the engine queues.
type rig struct {
	t     testing.TB
	ctx   context.Context
	clk   *clock.Fake
	reg   *registry.Registry
	store *tsdb.Store
	eng   *rollout.Engine
	key   ed25519.PrivateKey
	inbox []registry.Message
	// act decides what a device does with an offer: "install" (default), "fail", "ignore".
	act func(dev, version string) string
	// running is the firmware each device runs, as the simulated devices know it.
	running map[string]string
	seen    map[string]bool // devices that keep connecting
}

func newRig(t testing.TB) *rig {
	return newRigOn(t, "sqlite://"+filepath.Join(t.TempDir(), "registry.db"), clock.NewFake(t0))
}

// newRigOn is a rig on the registry at url: a second rig on the same url is a second server.
func newRigOn(t testing.TB, url string, clk *clock.Fake) *rig {
	t.Helper()
	ctx := context.Background()
	reg, err := registry.Open(ctx, url, "", clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Close()) })
	store, err := tsdb.Open(t.TempDir(), tsdb.DefaultOptions(), nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, store.Close()) })
	_, key, err := fw.GenerateKey()
	require.NoError(t, err)
	r := &rig{t: t, ctx: ctx, clk: clk, reg: reg, store: store, key: key, running: map[string]string{}, seen: map[string]bool{}}
	r.eng = rollout.NewEngine(reg, store, clk, nil, nil)
	r.eng.SetDeliver(func(msgs []registry.Message) { r.inbox = append(r.inbox, msgs...) })
	return r
}

// release uploads a signed release of version for model.
func (r *rig) release(version, model, minFrom string, rollback bool) {
	r.t.Helper()
	sha := fmt.Sprintf("%064x", len(version)*7919+len(model))
	sm, err := fw.Sign(fw.Manifest{Version: version, Model: model, MinFrom: minFrom, Rollback: rollback, Created: t0, Expires: t0.Add(365 * 24 * time.Hour),
		Artifact: fw.Artifact{Name: "fw.bin", SHA256: sha, Size: 1000}}, r.key)
	require.NoError(r.t, err)
	b, err := sm.Encode()
	require.NoError(r.t, err)
	require.NoError(r.t, r.reg.AddRelease(r.ctx, registry.Release{Version: version, Model: model, SHA256: sha, Size: 1000, MinFrom: minFrom,
		Manifest: string(b), UploadedBy: "test"}, ""))
}

// fleet imports n devices named prefix-NNNNN running firmware, seen now.
func (r *rig) fleet(prefix string, n int, model, firmware string, tag func(i int) map[string]string) []string {
	r.t.Helper()
	devs := make([]registry.DeviceImport, n)
	ids := make([]string, n)
	for i := range devs {
		ids[i] = fmt.Sprintf("%s-%05d", prefix, i)
		devs[i] = registry.DeviceImport{ID: ids[i], Model: model, Firmware: firmware, LastSeen: r.clk.Now()}
		if tag != nil {
			devs[i].Tags = tag(i)
		}
		r.running[ids[i]] = firmware
		r.seen[ids[i]] = true
	}
	created, err := r.reg.ImportDevices(r.ctx, devs, "test", "")
	require.NoError(r.t, err)
	require.Equal(r.t, n, created)
	return ids
}

// devicesAct lets every device act on the offers in its inbox, then the devices that keep
// connecting are seen now.
func (r *rig) devicesAct() {
	r.t.Helper()
	now := r.clk.Now()
	for _, m := range r.inbox {
		require.Equal(r.t, protocol.CmdFirmwareUpdate, m.Name)
		sm, err := fw.DecodeSignedManifest([]byte(m.Args[protocol.ArgManifest]))
		require.NoError(r.t, err)
		man, err := fw.Verify(sm, mustTrust(r.t, r.key), man0(r.t, sm).Model, r.running[m.Device], now)
		require.NoError(r.t, err, "device %s running %s is offered %s", m.Device, r.running[m.Device], man0(r.t, sm).Version)
		require.Equal(r.t, protocol.FirmwarePathPrefix+man.Artifact.SHA256, m.Args[protocol.ArgArtifactPath])
		within, err := protocol.ParseStartWithin(m.Args[protocol.ArgStartWithin])
		require.NoError(r.t, err)
		require.Positive(r.t, within, "offers spread the downloads")
		act := "install"
		if r.act != nil {
			act = r.act(m.Device, man.Version)
		}
		switch act {
		case "install":
			_, err := r.reg.CompleteCommand(r.ctx, m.Device, m.ID, protocol.Reply{State: protocol.ReplySucceeded})
			require.NoError(r.t, err)
			require.NoError(r.t, r.reg.ReportFacts(r.ctx, m.Device, "", "", man.Version, now, 0))
			r.running[m.Device] = man.Version
		case "fail":
			_, err := r.reg.CompleteCommand(r.ctx, m.Device, m.ID, protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailInstall, Detail: "flash write error"})
			require.NoError(r.t, err)
		case "cut":
			_, err := r.reg.CompleteCommand(r.ctx, m.Device, m.ID, protocol.Reply{State: protocol.ReplyFailed, Reason: protocol.FailDownload, Detail: "connection reset"})
			require.NoError(r.t, err)
		}
	}
	r.inbox = nil
	seen := map[string]time.Time{}
	for id, ok := range r.seen {
		if ok {
			seen[id] = now
		}
	}
	require.NoError(r.t, r.reg.MarkSeen(r.ctx, seen))
}

func man0(t testing.TB, sm fw.SignedManifest) fw.Manifest {
	m, err := fw.ParseManifest(sm.Manifest)
	require.NoError(t, err)
	return m
}

func mustTrust(t testing.TB, key ed25519.PrivateKey) fw.TrustedKeys {
	tk, err := fw.NewTrustedKeys(key.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	return tk
}

// run steps the engine every step until until, the devices acting after each step.
func (r *rig) run(until time.Time, step time.Duration, each func()) {
	r.t.Helper()
	for !r.clk.Now().After(until) {
		require.NoError(r.t, r.eng.Step(r.ctx))
		r.devicesAct()
		if each != nil {
			each()
		}
		r.clk.Advance(step)
	}
}

func (r *rig) rollout(id string) registry.Rollout {
	r.t.Helper()
	ro, err := r.reg.Rollout(r.ctx, id)
	require.NoError(r.t, err)
	return *ro
}

// TestGuidePlanOver10000Devices runs the field guide's plan over 10,000 registry devices on
// the fake clock: 10 test devices (of 25 tagged ring=test) for 2 days, the canary to 5 % for a
// week, the expansion to 15 % for a week, then everyone; every device confirmed at the end.
func TestGuidePlanOver10000Devices(t *testing.T) {
	r := newRig(t)
	r.release("1.0.0", "gw-200", "", false)
	r.release("2.0.0", "gw-200", "", false)
	const n = 10000
	r.fleet("d", n, "gw-200", "1.0.0", func(i int) map[string]string {
		if i%400 == 7 {
			return map[string]string{"ring": "test"}
		}
		return nil
	})
	plan, err := rollout.Builtin(rollout.PlanGuide)
	require.NoError(t, err)
	ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "guide-2-0-0", Version: "2.0.0", PlanName: rollout.PlanGuide, Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)

	began := map[int]time.Time{0: t0}
	sizes := map[int]int{}
	r.run(t0.Add(17*24*time.Hour), 6*time.Hour, func() {
		cur := r.rollout(ro.ID)
		if _, ok := began[cur.Phase]; !ok {
			began[cur.Phase] = cur.PhaseSince
		}
		recs, err := r.reg.RolloutDevices(r.ctx, ro.ID)
		require.NoError(t, err)
		sizes[cur.Phase] = len(recs)
	})
	day := 24 * time.Hour
	// Phases begin when their soak is over at the first step after it (steps are 6 h apart).
	require.Equal(t, map[int]time.Time{0: t0, 1: t0.Add(2 * day), 2: t0.Add(9 * day), 3: t0.Add(16 * day)}, began)
	require.Equal(t, map[int]int{0: 10, 1: 500, 2: 1500, 3: n}, sizes, "cohorts: 10 test devices, then 5 %, 15 %, 100 % of 10,000")

	recs, err := r.reg.RolloutDevices(r.ctx, ro.ID)
	require.NoError(t, err)
	require.Len(t, recs, n)
	require.Equal(t, map[string]int{registry.UpdateSucceeded: n}, rollout.Counts(recs))
	for _, rec := range recs {
		if rec.Phase == 0 {
			d, err := r.reg.Device(r.ctx, rec.Device)
			require.NoError(t, err)
			require.Equal(t, "test", d.Tags["ring"], "the test phase takes test devices only")
		}
	}
	require.Equal(t, registry.RolloutCompleted, r.rollout(ro.ID).State)
	hist, err := r.reg.UpdateHistory(r.ctx, recs[0].Device, 0, 0)
	require.NoError(t, err)
	var events []string
	for _, e := range hist {
		events = append(events, e.Event)
	}
	require.Equal(t, []string{registry.UpdateSucceeded, registry.UpdateInstalled, registry.UpdateOffered}, events)
}

// drops writes each device's drop counter at ts: a device on firmware bad drops perHourBad
// times an hour, any other perHourGood.
// writeCounter adds to a counter series of every device, at perHourGood events an hour, or
// perHourBad on the firmware bad, as the fleet monitor writes it.
func (r *rig) writeCounter(name string, counts map[string]float64, bad string, perHourGood, perHourBad float64, dt time.Duration) {
	r.t.Helper()
	app, err := r.store.Appender(r.ctx)
	require.NoError(r.t, err)
	for id, fwv := range r.running {
		rate := perHourGood
		if fwv == bad {
			rate = perHourBad
		}
		counts[id] += rate * dt.Hours()
		_, err := app.Append(0, labels.FromStrings("__name__", name, "device", id, "kind", "crash"), r.clk.Now().UnixMilli(), counts[id])
		require.NoError(r.t, err)
	}
	require.NoError(r.t, app.Commit())
}

func (r *rig) writeDrops(counts map[string]float64, bad string, perHourGood, perHourBad float64, dt time.Duration) {
	r.t.Helper()
	app, err := r.store.Appender(r.ctx)
	require.NoError(r.t, err)
	ts := r.clk.Now().UnixMilli()
	for id, fwv := range r.running {
		rate := perHourGood
		if fwv == bad {
			rate = perHourBad
		}
		counts[id] += rate * dt.Hours()
		_, err := app.Append(0, labels.FromStrings("__name__", "millwright_device_disconnects_total", "device", id, "cause", "reset"), ts, counts[id])
		require.NoError(r.t, err)
		_, err = app.Append(0, labels.FromStrings("__name__", "millwright_device_online", "device", id), ts, 1)
		require.NoError(r.t, err)
		_, err = app.Append(0, labels.FromStrings("__name__", "millwright_device_connected", "device", id), ts, 1)
		require.NoError(r.t, err)
	}
	require.NoError(r.t, app.Commit())
}

// TestDropsGateHaltsResumeAndRollback: a release whose devices drop their connection ten
// times as often as the rest halts the rollout in its canary phase, with the evidence in the
// reason and in an alert series; a resume restarts the soak; a rollback offers the devices
// that took it the rollback release of their old version, and they run it again.
func TestDropsGateHaltsResumeAndRollback(t *testing.T) {
	r := newRig(t)
	r.release("1.0.0", "gw-200", "", false)
	r.release("1.1.0", "gw-200", "", false)
	r.fleet("d", 400, "gw-200", "1.0.0", nil)
	plan, err := rollout.ParsePlan([]byte(`
phases:
  - {name: canary, percent: 10, soak: 1d}
  - {name: complete, percent: 100}
confirm: 10m
gates:
  - {name: drops, query: 'increase(millwright_device_disconnects_total{cause="reset"}[$window])'}
  - {name: offline, query: '1 - millwright_device_online', exposure: devices, threshold: 2}
  - {name: update_failures, outcome: failures, max: 0.05}
`))
	require.NoError(t, err)
	ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "bad-1-1-0", Version: "1.1.0", PlanName: "custom", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)

	counts := map[string]float64{}
	step := 15 * time.Minute
	var haltedAt time.Time
	r.run(t0.Add(24*time.Hour), step, func() {
		r.writeDrops(counts, "1.1.0", 0.2, 2, step)
		if cur := r.rollout(ro.ID); cur.State == registry.RolloutHalted && haltedAt.IsZero() {
			haltedAt = r.clk.Now()
		}
	})
	cur := r.rollout(ro.ID)
	require.Equal(t, registry.RolloutHalted, cur.State, "the gate halts the rollout")
	require.Equal(t, 0, cur.Phase, "halted in the canary phase")
	require.Contains(t, cur.HaltReason, "drops:")
	require.Contains(t, cur.HaltEvidence, `"verdict":"fail"`)
	t.Logf("halted %v after the start: %s", haltedAt.Sub(t0), cur.HaltReason)
	require.Less(t, haltedAt.Sub(t0), 12*time.Hour, "the regression is caught within hours, not at the soak's end")
	recs, err := r.reg.RolloutDevices(r.ctx, ro.ID)
	require.NoError(t, err)
	require.Len(t, recs, 40, "a halted rollout offers no more devices")

	// The alert series carries the reason.
	v, err := r.store.Engine().NewInstantQuery(r.ctx, r.store.Queryable(), nil, `millwright_rollout_halted{rollout="bad-1-1-0"}`, r.clk.Now().Add(-step))
	require.NoError(t, err)
	res := v.Exec(r.ctx)
	require.NoError(t, res.Err)
	vec, err := res.Vector()
	require.NoError(t, err)
	require.Len(t, vec, 1)
	require.Contains(t, vec[0].Metric.Get("reason"), "drops:")
	v.Close()

	// Resume: the soak starts over from now, and the gate halts it again.
	resumed, err := r.eng.Resume(r.ctx, ro.ID, "alice", "")
	require.NoError(t, err)
	require.Equal(t, registry.RolloutRunning, resumed.State)
	require.Equal(t, r.clk.Now(), resumed.PhaseSince)
	require.Empty(t, resumed.HaltReason)

	// Roll back: refused without a rollback release, which it names.
	_, err = r.eng.Rollback(r.ctx, ro.ID, "alice", "")
	require.ErrorIs(t, err, registry.ErrNotFound)
	require.ErrorContains(t, err, "gw-200 1.0.0")
	r.release("1.0.0+rollback", "gw-200", "", true)
	back, err := r.eng.Rollback(r.ctx, ro.ID, "alice", "")
	require.NoError(t, err)
	require.Equal(t, registry.RolloutRolledBack, back.State)
	require.Len(t, r.inbox, 40, "each device that took 1.1.0 is offered its old version")
	r.run(r.clk.Now().Add(time.Hour), step, nil)
	recs, err = r.reg.RolloutDevices(r.ctx, ro.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]int{registry.UpdateReverted: 40}, rollout.Counts(recs))
	for _, rec := range recs {
		require.Equal(t, "1.0.0+rollback", r.running[rec.Device])
	}
}

// TestHealthyReleaseIsNotHalted: the same rollout with a release as good as the old one runs
// to completion: five canaries' noise does not halt it.
func TestHealthyReleaseIsNotHalted(t *testing.T) {
	r := newRig(t)
	r.release("1.0.0", "gw-200", "", false)
	r.release("1.1.0", "gw-200", "", false)
	r.fleet("d", 100, "gw-200", "1.0.0", nil)
	plan, err := rollout.ParsePlan([]byte(`
phases:
  - {name: canary, percent: 5, soak: 12h}
  - {name: complete, percent: 100}
gates:
  - {name: drops, query: 'increase(millwright_device_disconnects_total{cause="reset"}[$window])', min_exposure: 1}
`))
	require.NoError(t, err)
	ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "good", Version: "1.1.0", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)
	counts := map[string]float64{}
	step := 30 * time.Minute
	r.run(t0.Add(14*time.Hour), step, func() { r.writeDrops(counts, "none", 0.5, 0.5, step) })
	cur := r.rollout(ro.ID)
	require.Equal(t, registry.RolloutCompleted, cur.State, "halted: %s", cur.HaltReason)
}

// TestOneServerRunsTheEngine: of two servers sharing a PostgreSQL registry, the one holding
// the lock offers; the other's steps do nothing until the first stops, and then it follows
// the same rollout without offering anything twice.
func TestOneServerRunsTheEngine(t *testing.T) {
	url, clk := registrytest.SchemaURL(t), clock.NewFake(t0)
	a, b := newRigOn(t, url, clk), newRigOn(t, url, clk)
	la, lb := a.reg.Leadership("rollout-engine"), b.reg.Leadership("rollout-engine")
	a.eng.SetLeader(la)
	b.eng.SetLeader(lb)
	a.release("1.0.0", "gw-200", "", false)
	a.release("1.1.0", "gw-200", "", false)
	a.fleet("d", 40, "gw-200", "1.0.0", nil)
	plan, err := rollout.ParsePlan([]byte("phases:\n  - {name: canary, percent: 10, soak: 1h}\n  - {name: complete, percent: 100}\ngates: []\nconfirm: 10m\n"))
	require.NoError(t, err)
	ro, err := b.eng.Create(a.ctx, rollout.Spec{ID: "shared", Version: "1.1.0", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err, "any server creates rollouts")

	stepped, err := a.eng.Tick(a.ctx)
	require.NoError(t, err)
	require.True(t, stepped)
	stepped, err = b.eng.Tick(b.ctx)
	require.NoError(t, err)
	require.False(t, stepped, "the second server waits")
	require.Len(t, a.inbox, 4)
	require.Empty(t, b.inbox)
	a.devicesAct()

	require.NoError(t, la.Close()) // the first server stops
	clk.Advance(2 * time.Hour)
	b.running, b.seen, b.key = a.running, a.seen, a.key // the same devices and releases, now served by the second
	for range 10 {
		stepped, err = b.eng.Tick(b.ctx)
		require.NoError(t, err)
		require.True(t, stepped, "the second takes over")
		b.devicesAct()
		clk.Advance(20 * time.Minute)
	}
	recs, err := b.reg.RolloutDevices(b.ctx, ro.ID)
	require.NoError(t, err)
	require.Len(t, recs, 40)
	require.Equal(t, map[string]int{registry.UpdateSucceeded: 40}, rollout.Counts(recs), "each device offered once, by one server or the other")
	stepped, err = a.eng.Tick(a.ctx)
	require.NoError(t, err)
	require.False(t, stepped, "the first, back, waits for the second")
	require.NoError(t, lb.Close())
}

// TestFeedbackGateHalts: with the default gates, a release whose devices draw crash reports
// ten times as often as the old version's halts in its canary phase on the feedback gate,
// though it drops no more connections than the old one.
func TestFeedbackGateHalts(t *testing.T) {
	r := newRig(t)
	r.release("1.0.0", "gw-200", "", false)
	r.release("1.1.0", "gw-200", "", false)
	r.fleet("d", 400, "gw-200", "1.0.0", nil)
	plan, err := rollout.ParsePlan([]byte("phases:\n  - {name: canary, percent: 10, soak: 1d}\n  - {name: complete, percent: 100}\nconfirm: 10m\n"))
	require.NoError(t, err)
	ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "crashy", Version: "1.1.0", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)
	drops, feedback := map[string]float64{}, map[string]float64{}
	step := 15 * time.Minute
	r.run(t0.Add(24*time.Hour), step, func() {
		r.writeDrops(drops, "none", 0.2, 0.2, step)
		r.writeCounter("millwright_device_feedback_total", feedback, "1.1.0", 0.01, 0.1, step)
	})
	cur := r.rollout(ro.ID)
	require.Equal(t, registry.RolloutHalted, cur.State, "the feedback gate halts the rollout")
	require.Equal(t, 0, cur.Phase)
	require.Contains(t, cur.HaltReason, "feedback:")
	require.NotContains(t, cur.HaltReason, "drops:")
}

// TestUpgradeHopsAbsentAndFailures: a device too old for the release's min_from gets the
// intermediate release first; a device absent for 200 days waits in the canary phase until it
// is seen again; devices that fail the update halt the rollout on the failures gate.
func TestUpgradeHopsAbsentAndFailures(t *testing.T) {
	r := newRig(t)
	r.release("0.9.0", "gw-200", "", false)
	r.release("1.0.0", "gw-200", "", false)
	r.release("2.0.0", "gw-200", "1.0.0", false)
	old := r.fleet("old", 1, "gw-200", "0.9.0", nil)[0]
	sleeper := fmt.Sprintf("sleeper-%05d", 0)
	_, err := r.reg.ImportDevices(r.ctx, []registry.DeviceImport{{ID: sleeper, Model: "gw-200", Firmware: "1.0.0", LastSeen: t0.Add(-200 * 24 * time.Hour)}}, "test", "")
	require.NoError(t, err)
	r.running[sleeper] = "1.0.0"
	plan, err := rollout.ParsePlan([]byte(`
phases:
  - {name: canary, percent: 50, soak: 1h}
  - {name: complete, percent: 100}
gates: []
`))
	require.NoError(t, err)
	ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "hops", Version: "2.0.0", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)
	r.run(t0.Add(3*time.Hour), 10*time.Minute, nil)
	require.Equal(t, "2.0.0", r.running[old])
	hist, err := r.reg.UpdateHistory(r.ctx, old, 0, 0)
	require.NoError(t, err)
	var events []string
	for _, e := range hist {
		events = append(events, e.Event+" "+e.To)
	}
	require.Equal(t, []string{"succeeded 2.0.0", "installed 2.0.0", "hop 2.0.0", "installed 1.0.0", "offered 1.0.0"}, events)

	recs, err := r.reg.RolloutDevices(r.ctx, ro.ID)
	require.NoError(t, err)
	var sleep registry.RolloutDevice
	for _, rec := range recs {
		if rec.Device == sleeper {
			sleep = rec
		}
	}
	require.Equal(t, registry.UpdateWaiting, sleep.State)
	require.Equal(t, 0, sleep.Phase, "an absent device re-enters through the canary phase")
	require.Contains(t, sleep.Detail, "absent since")
	require.Equal(t, registry.RolloutCompleted, r.rollout(ro.ID).State, "a rollout does not wait for absent devices")
	r.seen[sleeper] = true
	r.run(r.clk.Now().Add(time.Hour), 10*time.Minute, nil)
	require.Equal(t, "2.0.0", r.running[sleeper], "seen again, it is offered and updated")
	require.Equal(t, registry.RolloutCompleted, r.rollout(ro.ID).State)

	// Failures: 30 of 100 canaries fail to install.
	f := newRig(t)
	f.release("1.0.0", "gw-200", "", false)
	f.release("1.1.0", "gw-200", "", false)
	f.fleet("d", 1000, "gw-200", "1.0.0", nil)
	f.act = func(dev, _ string) string {
		if strings.HasSuffix(dev, "3") || strings.HasSuffix(dev, "7") || strings.HasSuffix(dev, "9") {
			return "fail"
		}
		return "install"
	}
	plan, err = rollout.ParsePlan([]byte("phases:\n  - {name: canary, percent: 10, soak: 1d}\n  - {name: complete, percent: 100}\n"))
	require.NoError(t, err)
	ro, err = f.eng.Create(f.ctx, rollout.Spec{ID: "flaky", Version: "1.1.0", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)
	f.run(t0.Add(2*time.Hour), 30*time.Minute, nil)
	cur := f.rollout(ro.ID)
	require.Equal(t, registry.RolloutHalted, cur.State)
	require.Contains(t, cur.HaltReason, "update_failures:")
	var gates []string
	for _, res := range f.eng.Results(ro.ID) {
		gates = append(gates, res.Gate+"="+res.Verdict)
	}
	require.Contains(t, gates, "update_failures=fail")
}

// TestDownloadCutIsOfferedAgain: a device whose download was cut is offered the same version
// again, up to rollout.MaxOfferAttempts times; then it counts as failed.
func TestDownloadCutIsOfferedAgain(t *testing.T) {
	r := newRig(t)
	r.release("1.0.0", "gw-200", "", false)
	r.release("1.1.0", "gw-200", "", false)
	ids := r.fleet("d", 2, "gw-200", "1.0.0", nil)
	cuts := map[string]int{}
	r.act = func(dev, _ string) string {
		cuts[dev]++
		if dev == ids[1] || cuts[dev] < 3 {
			return "cut"
		}
		return "install"
	}
	plan, err := rollout.ParsePlan([]byte("phases:\n  - {name: all, percent: 100}\ngates: []\n"))
	require.NoError(t, err)
	ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: "cuts", Version: "1.1.0", Plan: plan, Actor: "test"}, "")
	require.NoError(t, err)
	r.run(t0.Add(time.Hour), 5*time.Minute, nil)
	require.Equal(t, "1.1.0", r.running[ids[0]], "cut twice, installed at the third offer")
	require.Equal(t, rollout.MaxOfferAttempts, cuts[ids[1]], "offered at most %d times", rollout.MaxOfferAttempts)
	recs, err := r.reg.RolloutDevices(r.ctx, ro.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]int{registry.UpdateSucceeded: 1, registry.UpdateFailed: 1}, rollout.Counts(recs))
	require.Contains(t, recs[1].Detail, "download")
	hist, err := r.reg.UpdateHistory(r.ctx, ids[0], 0, 0)
	require.NoError(t, err)
	var events []string
	for _, e := range hist {
		events = append(events, e.Event)
	}
	require.Equal(t, []string{"succeeded", "installed", "reoffered", "reoffered", "offered"}, events)
}

// TestSeededRollouts runs 20 healthy and 20 faulty rollouts through the engine, registry and
// store, each with its own seed: 300 devices dropping their connection 0.3 times an hour at
// random (Poisson), a canary of 5 % and an expansion to 20 % soaking a day each; the faulty
// release drops three times as often. It counts false halts (a healthy release halted) and
// missed halts (a faulty one that reached everyone) — the numbers in docs/rollouts.md.
func TestSeededRollouts(t *testing.T) {
	const seeds = 20
	run := func(seed uint64, badRate float64) (halted bool, phase int) {
		r := newRig(t)
		rnd := rand.New(rand.NewPCG(seed, 99))
		r.release("1.0.0", "gw-200", "", false)
		r.release("1.1.0", "gw-200", "", false)
		r.fleet("d", 300, "gw-200", "1.0.0", nil)
		plan, err := rollout.ParsePlan([]byte(`
phases:
  - {name: canary, percent: 5, soak: 1d}
  - {name: expansion, percent: 20, soak: 1d}
  - {name: complete, percent: 100}
gates:
  - {name: drops, query: 'increase(millwright_device_disconnects_total{cause="reset"}[$window])'}
`))
		require.NoError(t, err)
		ro, err := r.eng.Create(r.ctx, rollout.Spec{ID: fmt.Sprintf("seed-%d", seed), Version: "1.1.0", Plan: plan, Actor: "test"}, "")
		require.NoError(t, err)
		counts := map[string]float64{}
		step := time.Hour
		r.run(t0.Add(60*time.Hour), step, func() {
			app, err := r.store.Appender(r.ctx)
			require.NoError(t, err)
			ts := r.clk.Now().UnixMilli()
			for _, id := range slices.Sorted(maps.Keys(r.running)) {
				v := r.running[id]
				rate := 0.3
				if v == "1.1.0" {
					rate = badRate
				}
				counts[id] += poissonDraw(rnd, rate*step.Hours())
				_, _ = app.Append(0, labels.FromStrings("__name__", "millwright_device_disconnects_total", "device", id, "cause", "reset"), ts, counts[id])
				_, _ = app.Append(0, labels.FromStrings("__name__", "millwright_device_connected", "device", id), ts, 1)
			}
			require.NoError(t, app.Commit())
		})
		cur := r.rollout(ro.ID)
		if cur.State == registry.RolloutHalted && badRate == 0.3 {
			t.Logf("seed %d, a healthy release halted in phase %d: %s", seed, cur.Phase, cur.HaltReason)
		}
		return cur.State == registry.RolloutHalted, cur.Phase
	}
	falseHalts, missed := 0, 0
	var caught []int
	for s := range uint64(seeds) {
		if h, _ := run(s, 0.3); h {
			falseHalts++
		}
		h, phase := run(s+1000, 0.9)
		if !h {
			missed++
		} else {
			caught = append(caught, phase)
		}
	}
	t.Logf("%d seeds: %d false halts of healthy releases, %d missed halts of releases with 3× the drops; halted in phases %v", seeds, falseHalts, missed, caught)
	require.LessOrEqual(t, falseHalts, 1)
	require.LessOrEqual(t, missed, 1)
}

// poissonDraw draws a Poisson variate of mean m (Knuth's method; m is small here).
func poissonDraw(r *rand.Rand, m float64) float64 {
	l, k, p := math.Exp(-m), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}
