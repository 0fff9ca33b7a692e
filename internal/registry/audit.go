package registry

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Audit actions written by the registry itself.
const (
	ActionTokenCreate    = "token.create"
	ActionTokenDelete    = "token.delete"
	ActionDeviceCreate   = "device.create"
	ActionDeviceEnroll   = "device.enroll"
	ActionDeviceStatus   = "device.status"
	ActionDeviceTags     = "device.tags"
	ActionDeviceGroups   = "device.groups"
	ActionDeviceFacts    = "device.facts"
	ActionDeviceImport   = "device.import"
	ActionDeviceDelete   = "device.delete"
	ActionCertificateAdd = "certificate.add"
	ActionOperatorCreate = "operator.create"
	ActionOperatorRevoke = "operator.revoke"
)

const (
	defaultListLimit = 100
	maxListLimit     = 10000
	// Actors of entries not written on an operator's behalf.
	systemActor           = "system"
	deviceActorPrefix     = "device:"
	enrollmentActorPrefix = "enroll:"
)

// AuditEntry is one line of the audit log: who did what to which object, when and from where.
type AuditEntry struct {
	ID     int64     `json:"id"`     // increasing; newer entries have larger IDs
	At     time.Time `json:"at"`     // UTC, millisecond precision
	Actor  string    `json:"actor"`  // operator ID, "enroll:<token ID>", "device:<device ID>" or "system"
	Action string    `json:"action"` // e.g. "device.status"; see the Action constants
	Target string    `json:"target"` // the object acted on: a device, operator or token ID
	Detail string    `json:"detail"` // human-readable specifics, e.g. "active -> suspended"
	Remote string    `json:"remote"` // the client's address, "" when not known
}

// Audit records an entry for something that happened outside the registry's own mutations
// (the registry's mutations write their entries themselves).
func (r *Registry) Audit(ctx context.Context, actor, action, target, detail, remote string) error {
	if actor == "" || action == "" {
		return fmt.Errorf("write audit entry: %w: actor and action are required", ErrInvalid)
	}
	return r.write(ctx, func(tx *sql.Tx) error {
		return r.audit(ctx, tx, r.now(), actor, action, target, detail, remote)
	})
}

// audit writes an entry through q, which is the transaction of the change it records.
func (r *Registry) audit(ctx context.Context, q querier, at time.Time, actor, action, target, detail, remote string) error {
	_, err := q.ExecContext(ctx,
		`INSERT INTO audit_log (at, actor, action, target, detail, remote) VALUES ($1, $2, $3, $4, $5, $6)`,
		toMS(at), actor, action, target, detail, remote)
	if err != nil {
		return fmt.Errorf("write audit entry %s: %w", action, err)
	}
	return nil
}

// ListAudit returns up to limit entries (default 100, at most 10000), newest first. beforeID > 0
// continues a listing: only entries with smaller IDs are returned.
func (r *Registry) ListAudit(ctx context.Context, limit int, beforeID int64) ([]AuditEntry, error) {
	limit = clampLimit(limit)
	q := `SELECT id, at, actor, action, target, detail, remote FROM audit_log`
	args := []any{}
	if beforeID > 0 {
		q += ` WHERE id < $1`
		args = append(args, beforeID)
	}
	q += fmt.Sprintf(` ORDER BY id DESC LIMIT %d`, limit)
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var (
			e  AuditEntry
			at int64
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.Remote); err != nil {
			return nil, fmt.Errorf("list audit log: %w", err)
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit log: %w", err)
	}
	return out, nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return defaultListLimit
	case n > maxListLimit:
		return maxListLimit
	}
	return n
}

// ActionServerBackup is audited when an admin fetches a backup of the server's data
// (POST /api/v1/backup); the detail counts its files and bytes.
const ActionServerBackup = "server.backup"

// PruneAudit deletes the audit entries recorded before t, at most batch (default 1000) per
// transaction so that a large backlog never holds the database long, and says how many it
// deleted.
func (r *Registry) PruneAudit(ctx context.Context, t time.Time, batch int) (int64, error) {
	if batch <= 0 {
		batch = 1000
	}
	var total int64
	for {
		var n int64
		err := r.write(ctx, func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx,
				`DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)`,
				toMS(t), batch)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			return err
		})
		if err != nil {
			return total, fmt.Errorf("prune audit log: %w", err)
		}
		total += n
		if n < int64(batch) {
			return total, nil
		}
	}
}
