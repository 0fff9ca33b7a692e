package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/millwright/millwright/protocol"
)

// RolloutState is where a rollout is.
type RolloutState string

// The states of a rollout. Running, paused and halted are active: the engine follows their
// devices' updates; only a running rollout offers the release to more devices.
const (
	RolloutRunning    RolloutState = "running"
	RolloutPaused     RolloutState = "paused"
	RolloutHalted     RolloutState = "halted"
	RolloutAborted    RolloutState = "aborted"
	RolloutCompleted  RolloutState = "completed"
	RolloutRolledBack RolloutState = "rolled_back"
)

// Active reports whether the engine still steps a rollout in state s.
func (s RolloutState) Active() bool {
	return s == RolloutRunning || s == RolloutPaused || s == RolloutHalted
}

// Audit actions of rollouts.
const (
	ActionRolloutCreate   = "rollout.create"
	ActionRolloutPause    = "rollout.pause"
	ActionRolloutResume   = "rollout.resume"
	ActionRolloutAbort    = "rollout.abort"
	ActionRolloutRollback = "rollout.rollback"
	ActionRolloutHalt     = "rollout.halt"
	ActionRolloutComplete = "rollout.complete"
)

// Rollout is one rollout's durable state. Selector, Plan and Gates are JSON the rollout
// engine writes and reads (internal/rollout); the registry keeps them as they are.
type Rollout struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	// Selector, Plan: JSON documents of the rollout package.
	Selector string       `json:"-"`
	Plan     string       `json:"-"`
	PlanName string       `json:"plan_name"`
	State    RolloutState `json:"state"`
	// Phase is the index of the phase being offered now; PhaseSince is when it began (its
	// soak counts from then).
	Phase      int       `json:"phase"`
	PhaseSince time.Time `json:"phase_since"`
	// HaltReason says, for a person, why the rollout halted; HaltEvidence is the gate's
	// numbers as JSON.
	HaltReason   string    `json:"halt_reason,omitempty"`
	HaltEvidence string    `json:"-"`
	CreatedBy    string    `json:"created_by"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// The states of a device in a rollout.
const (
	// UpdateWaiting: placed in a phase, not offered yet (absent for long; offered when it is
	// seen again).
	UpdateWaiting = "waiting"
	// UpdateOffered: the offer (a firmware.update command for Target) is in its mailbox.
	UpdateOffered = "offered"
	// UpdateInstalled: the device reports running Target; its confirmation window runs.
	UpdateInstalled = "installed"
	// UpdateSucceeded: it ran Target, reconnected and stayed well through the window.
	UpdateSucceeded = "succeeded"
	// UpdateFailed: the device refused or failed the update, or rolled it back.
	UpdateFailed = "failed"
	// UpdateUnreachable: the device did not report back before the deadline.
	UpdateUnreachable = "unreachable"
	// UpdateCurrent: the device ran the release already when it was placed.
	UpdateCurrent = "current"
	// UpdateNoPath: no chain of releases in the archive leads from its version to the target.
	UpdateNoPath = "no_path"
	// UpdateReverting and UpdateReverted: the rollout was rolled back; the device is offered
	// its previous version, and runs it again.
	UpdateReverting = "reverting"
	UpdateReverted  = "reverted"
)

// RolloutDevice is one device's place and progress in a rollout.
type RolloutDevice struct {
	Rollout string `json:"-"`
	Device  string `json:"device"`
	Phase   int    `json:"phase"`
	// From is the version it ran when it was placed; Target the version offered now (a hop
	// of its upgrade path, or the release).
	From   string `json:"from"`
	Target string `json:"target"`
	State  string `json:"state"`
	// Command is the mailbox ID of the offer for Target.
	Command     string    `json:"command,omitempty"`
	OfferedAt   time.Time `json:"offered_at,omitzero"`
	InstalledAt time.Time `json:"installed_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
	// Reported is the last update phase the device reported for the offer
	// (protocol.UpdateReport.Phase); Detail its, or the engine's, explanation.
	Reported string `json:"reported,omitempty"`
	Detail   string `json:"detail,omitempty"`
	// Attempts counts the offers made for Target (a download the device could not finish
	// is offered again, a few times).
	Attempts int `json:"attempts"`
	// CommandState, CommandReason: the offer's mailbox state and, for a failed one, reason
	// (read, never written, with the record).
	CommandState  MessageState `json:"command_state,omitempty"`
	CommandReason string       `json:"command_reason,omitempty"`
}

// UpdateEvent is one entry of a device's update history.
type UpdateEvent struct {
	ID      int64     `json:"id"`
	Device  string    `json:"device"`
	Rollout string    `json:"rollout,omitempty"`
	At      time.Time `json:"at"`
	// Event is a device state (offered, installed, …), a reported phase (downloading, …) or
	// hop (the next release of an upgrade path is offered).
	Event  string `json:"event"`
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// RolloutStep is what one step of the engine writes, in one transaction: device records,
// offers queued in the mailboxes, history, and the rollout's own state.
type RolloutStep struct {
	Rollout *Rollout // nil: unchanged
	Devices []RolloutDevice
	// Offers are firmware.update commands; the device record whose Command is "offer:N" gets
	// the ID of Offers[N].
	Offers  []CommandSpec
	History []UpdateEvent
	// Cancel are mailbox IDs of offers to withdraw: those still open become superseded.
	Cancel []string
	// Audit, when set, audits the rollout's change as this action, by Actor.
	Audit, Actor, AuditDetail string
}

// OfferRef is how a RolloutDevice refers to Offers[n] of its step before the offer has an ID.
func OfferRef(n int) string { return fmt.Sprintf("offer:%d", n) }

const rolloutColumns = `id, version, selector, plan, plan_name, state, phase, phase_since, halt_reason, halt_evidence, created_by, created_at, updated_at`

func scanRollout(s scanner) (Rollout, error) {
	var (
		ro                  Rollout
		since, created, upd int64
	)
	err := s.Scan(&ro.ID, &ro.Version, &ro.Selector, &ro.Plan, &ro.PlanName, &ro.State, &ro.Phase, &since, &ro.HaltReason,
		&ro.HaltEvidence, &ro.CreatedBy, &created, &upd)
	ro.PhaseSince, ro.CreatedAt, ro.UpdatedAt = fromMS(since), fromMS(created), fromMS(upd)
	return ro, err
}

// CreateRollout records a new rollout, running, audited as rollout.create. ro.ID must be
// new; ro.CreatedAt and PhaseSince are set to now when zero.
func (r *Registry) CreateRollout(ctx context.Context, ro Rollout, remote string) (Rollout, error) {
	if err := validateName("rollout ID", ro.ID); err != nil {
		return Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM rollouts WHERE id = $1`, ro.ID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("rollout %s: %w", ro.ID, ErrExists)
		}
		now := r.now()
		ro.CreatedAt, ro.UpdatedAt = now, now
		if ro.PhaseSince.IsZero() {
			ro.PhaseSince = now
		}
		if ro.State == "" {
			ro.State = RolloutRunning
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO rollouts (`+rolloutColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
			ro.ID, ro.Version, ro.Selector, ro.Plan, ro.PlanName, ro.State, ro.Phase, toMS(ro.PhaseSince), ro.HaltReason,
			ro.HaltEvidence, ro.CreatedBy, toMS(ro.CreatedAt), toMS(ro.UpdatedAt)); err != nil {
			return err
		}
		return r.audit(ctx, tx, now, ro.CreatedBy, ActionRolloutCreate, ro.ID, fmt.Sprintf("release %s, plan %s", ro.Version, ro.PlanName), remote)
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	return ro, nil
}

// Rollout returns one rollout.
func (r *Registry) Rollout(ctx context.Context, id string) (*Rollout, error) {
	ro, err := scanRollout(r.db.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("rollout %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("rollout %s: %w", id, err)
	}
	return &ro, nil
}

// Rollouts lists rollouts, newest first; only the active ones when active is set.
func (r *Registry) Rollouts(ctx context.Context, active bool) ([]Rollout, error) {
	q := `SELECT ` + rolloutColumns + ` FROM rollouts`
	if active {
		q += ` WHERE state IN ('running', 'paused', 'halted')`
	}
	rows, err := r.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	out := []Rollout{}
	err = eachRow(rows, func() error {
		ro, err := scanRollout(rows)
		out = append(out, ro)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}

// ChangeRollout changes a rollout in a transaction: change gets the current state and may
// modify it or refuse (its error is returned); the change is audited as action by actor.
func (r *Registry) ChangeRollout(ctx context.Context, id, actor, action, remote string, change func(ro *Rollout) (detail string, err error)) (Rollout, error) {
	var ro Rollout
	err := r.write(ctx, func(tx *sql.Tx) error {
		var err error
		ro, err = scanRollout(tx.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("rollout %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		detail, err := change(&ro)
		if err != nil {
			return err
		}
		now := r.now()
		ro.UpdatedAt = now
		if err := updateRollout(ctx, tx, ro); err != nil {
			return err
		}
		return r.audit(ctx, tx, now, actor, action, id, detail, remote)
	})
	if err != nil {
		return Rollout{}, err
	}
	return ro, nil
}

func updateRollout(ctx context.Context, q querier, ro Rollout) error {
	_, err := q.ExecContext(ctx, `UPDATE rollouts SET state = $2, phase = $3, phase_since = $4, halt_reason = $5, halt_evidence = $6,
		updated_at = $7 WHERE id = $1`, ro.ID, ro.State, ro.Phase, toMS(ro.PhaseSince), ro.HaltReason, ro.HaltEvidence, toMS(ro.UpdatedAt))
	return err
}

const rolloutDeviceColumns = `rollout_id, device_id, phase, from_version, target, state, command_id, offered_at,
	installed_at, updated_at, reported, detail, attempts`

func scanRolloutDevice(s scanner) (RolloutDevice, error) {
	var (
		d                       RolloutDevice
		offered, installed, upd int64
	)
	err := s.Scan(&d.Rollout, &d.Device, &d.Phase, &d.From, &d.Target, &d.State, &d.Command, &offered, &installed, &upd,
		&d.Reported, &d.Detail, &d.Attempts)
	d.OfferedAt, d.InstalledAt, d.UpdatedAt = fromMS(offered), fromMS(installed), fromMS(upd)
	return d, err
}

// RolloutDevices returns the device records of a rollout, by device ID, with the mailbox
// state of the offers still in flight (offered, reverting).
func (r *Registry) RolloutDevices(ctx context.Context, rollout string) ([]RolloutDevice, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+rolloutDeviceColumns+` FROM rollout_devices WHERE rollout_id = $1 ORDER BY device_id`, rollout)
	if err != nil {
		return nil, fmt.Errorf("rollout %s devices: %w", rollout, err)
	}
	out := []RolloutDevice{}
	index := map[string]int{}
	err = eachRow(rows, func() error {
		d, err := scanRolloutDevice(rows)
		if d.State == UpdateOffered || d.State == UpdateReverting {
			index[d.Command] = len(out)
		}
		out = append(out, d)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rollout %s devices: %w", rollout, err)
	}
	if len(index) == 0 {
		return out, nil
	}
	// The offers in flight: their mailbox state says whether the device answered.
	rows, err = r.db.QueryContext(ctx, `SELECT m.id, m.state, m.reason FROM rollout_devices rd JOIN mailbox m ON m.id = rd.command_id
		WHERE rd.rollout_id = $1 AND rd.state IN ('offered', 'reverting')`, rollout)
	if err != nil {
		return nil, fmt.Errorf("rollout %s offers: %w", rollout, err)
	}
	err = eachRow(rows, func() error {
		var (
			id, reason string
			st         MessageState
		)
		if err := rows.Scan(&id, &st, &reason); err != nil {
			return err
		}
		if i, ok := index[id]; ok {
			out[i].CommandState, out[i].CommandReason = st, reason
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rollout %s offers: %w", rollout, err)
	}
	return out, nil
}

// ApplyRolloutStep writes one engine step in one transaction and returns the offers it
// queued (for the device channel to deliver now to connected devices).
func (r *Registry) ApplyRolloutStep(ctx context.Context, step RolloutStep, remote string) ([]Message, error) {
	var queued []Message
	err := r.write(ctx, func(tx *sql.Tx) error {
		queued = queued[:0]
		now := r.now()
		for _, spec := range step.Offers {
			if spec.TTL == 0 {
				spec.TTL = 24 * time.Hour
			}
			if err := spec.validate(); err != nil {
				return err
			}
			msg, err := queueCommand(ctx, tx, spec, step.Actor, now)
			if err != nil {
				return fmt.Errorf("offer to %s: %w", spec.Device, err)
			}
			queued = append(queued, msg)
		}
		for _, d := range step.Devices {
			if n, ok := strings.CutPrefix(d.Command, "offer:"); ok {
				var i int
				if _, err := fmt.Sscan(n, &i); err != nil || i < 0 || i >= len(queued) {
					return fmt.Errorf("device %s refers to offer %s of %d", d.Device, n, len(queued))
				}
				d.Command = queued[i].ID
			}
			if d.UpdatedAt.IsZero() {
				d.UpdatedAt = now
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO rollout_devices (rollout_id, device_id, phase, from_version, target, state,
				command_id, offered_at, installed_at, updated_at, reported, detail, attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
				ON CONFLICT (rollout_id, device_id) DO UPDATE SET phase = excluded.phase, from_version = excluded.from_version,
				target = excluded.target, state = excluded.state, command_id = excluded.command_id, offered_at = excluded.offered_at,
				installed_at = excluded.installed_at, updated_at = excluded.updated_at, reported = excluded.reported, detail = excluded.detail,
				attempts = excluded.attempts`,
				d.Rollout, d.Device, d.Phase, d.From, d.Target, d.State, d.Command, toMS(d.OfferedAt), toMS(d.InstalledAt),
				toMS(d.UpdatedAt), d.Reported, clipText(d.Detail, 4096), d.Attempts); err != nil {
				return fmt.Errorf("device %s: %w", d.Device, err)
			}
		}
		for _, id := range step.Cancel {
			if _, err := tx.ExecContext(ctx, `UPDATE mailbox SET state = 'superseded', reason = 'superseded', updated_at = $2
				WHERE id = $1 AND state IN `+openStates, id, toMS(now)); err != nil {
				return fmt.Errorf("withdraw offer %s: %w", id, err)
			}
		}
		for _, e := range step.History {
			if e.At.IsZero() {
				e.At = now
			}
			if err := insertUpdateEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		if step.Rollout != nil {
			ro := *step.Rollout
			ro.UpdatedAt = now
			if err := updateRollout(ctx, tx, ro); err != nil {
				return err
			}
		}
		if step.Audit != "" && step.Rollout != nil {
			return r.audit(ctx, tx, now, step.Actor, step.Audit, step.Rollout.ID, step.AuditDetail, remote)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rollout step: %w", err)
	}
	return queued, nil
}

func insertUpdateEvent(ctx context.Context, q querier, e UpdateEvent) error {
	_, err := q.ExecContext(ctx, `INSERT INTO update_history (device_id, rollout_id, at, event, from_version, to_version, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.Device, e.Rollout, toMS(e.At), e.Event, e.From, e.To, clipText(e.Detail, 4096))
	if err != nil {
		return fmt.Errorf("update history of %s: %w", e.Device, err)
	}
	return nil
}

// clipText cuts s to at most n bytes, on a rune boundary.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// RecordUpdateReport keeps what a device reports of a firmware update: the phase on the
// device's record in the rollout whose offer it answers (matched by the command ID), and an
// entry in its update history (a failure's detail led by its reason, "precheck: …"). A
// report for no known offer is kept in the history alone.
func (r *Registry) RecordUpdateReport(ctx context.Context, device string, rep protocol.UpdateReport) error {
	err := r.write(ctx, func(tx *sql.Tx) error {
		now := r.now()
		var rollout, from string
		err := tx.QueryRowContext(ctx, `SELECT rollout_id, from_version FROM rollout_devices WHERE device_id = $1 AND command_id = $2`,
			device, rep.Command).Scan(&rollout, &from)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			if _, err := tx.ExecContext(ctx, `UPDATE rollout_devices SET reported = $3, detail = $4, updated_at = $5
				WHERE rollout_id = $1 AND device_id = $2`, rollout, device, rep.Phase, clipText(rep.Detail, 4096), toMS(now)); err != nil {
				return err
			}
		}
		detail := rep.Detail
		if rep.Reason != "" {
			detail = rep.Reason + ": " + detail
		}
		return insertUpdateEvent(ctx, tx, UpdateEvent{Device: device, Rollout: rollout, At: now, Event: rep.Phase, From: from,
			To: rep.Version, Detail: detail})
	})
	if err != nil {
		return fmt.Errorf("record update report of %s: %w", device, err)
	}
	return nil
}

// UpdateHistory returns a device's update history, newest first: at most limit events
// (1 to 1000; 0 means 100) with IDs below before (0: from the newest).
func (r *Registry) UpdateHistory(ctx context.Context, device string, limit int, before int64) ([]UpdateEvent, error) {
	limit, before = pageBounds(limit, before, 100, 1000)
	rows, err := r.db.QueryContext(ctx, `SELECT id, device_id, rollout_id, at, event, from_version, to_version, detail FROM update_history
		WHERE device_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, device, before, limit)
	if err != nil {
		return nil, fmt.Errorf("update history of %s: %w", device, err)
	}
	out := []UpdateEvent{}
	err = eachRow(rows, func() error {
		var (
			e  UpdateEvent
			at int64
		)
		err := rows.Scan(&e.ID, &e.Device, &e.Rollout, &at, &e.Event, &e.From, &e.To, &e.Detail)
		e.At = fromMS(at)
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("update history of %s: %w", device, err)
	}
	return out, nil
}
