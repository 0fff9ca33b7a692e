package registry

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Role is what an operator may do. The API maps roles to permissions.
type Role string

// Operator roles, from most to least powerful.
const (
	RoleAdmin    Role = "admin"    // everything, including managing operators
	RoleOperator Role = "operator" // manage devices, tokens and rollouts
	RoleViewer   Role = "viewer"   // read only
)

// Operator is a person or program holding an API token.
type Operator struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      Role      `json:"role"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at"` // zero while the token is valid
}

// CreateOperator creates an operator with a new API token and returns the token in plaintext;
// this is the only time it exists in plaintext. Names are unique among operators not revoked
// (ErrExists).
func (r *Registry) CreateOperator(ctx context.Context, name string, role Role, actor, remote string) (Operator, string, error) {
	if name == "" {
		return Operator{}, "", fmt.Errorf("create operator: %w: empty name", ErrInvalid)
	}
	if err := validateText("operator name", name, MaxNameLen); err != nil {
		return Operator{}, "", fmt.Errorf("create operator: %w", err)
	}
	if err := validateRole(role); err != nil {
		return Operator{}, "", fmt.Errorf("create operator: %w", err)
	}
	token := newToken(OperatorTokenPrefix)
	op := Operator{ID: "o-" + randomHex(12), Name: name, Role: role}
	err := r.write(ctx, func(tx *sql.Tx) error {
		op.CreatedAt = r.now()
		_, err := tx.ExecContext(ctx, `INSERT INTO operators (id, name, role, token_hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6)`,
			op.ID, op.Name, op.Role, hashToken(token), actor, toMS(op.CreatedAt))
		if isUniqueViolation(err) {
			return fmt.Errorf("operator %q: %w", name, ErrExists)
		}
		if err != nil {
			return err
		}
		return r.audit(ctx, tx, op.CreatedAt, actor, ActionOperatorCreate, op.ID, fmt.Sprintf("name %q role %s", name, role), remote)
	})
	if err != nil {
		return Operator{}, "", fmt.Errorf("create operator: %w", err)
	}
	return op, token, nil
}

// AuthenticateOperator returns the operator holding token. A malformed, unknown or revoked
// token gives ErrTokenInvalid. The look-up is by the token's SHA-256, so the database never
// compares the secret itself; the stored hash is then compared in constant time.
func (r *Registry) AuthenticateOperator(ctx context.Context, token string) (Operator, error) {
	if !wellFormed(token, OperatorTokenPrefix) {
		return Operator{}, fmt.Errorf("authenticate operator: %w", ErrTokenInvalid)
	}
	hash := hashToken(token)
	var (
		op               Operator
		stored           string
		created, revoked int64
	)
	err := r.db.QueryRowContext(ctx, `SELECT id, name, role, token_hash, created_at, revoked_at FROM operators WHERE token_hash = $1`, hash).
		Scan(&op.ID, &op.Name, &op.Role, &stored, &created, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return Operator{}, fmt.Errorf("authenticate operator: %w", ErrTokenInvalid)
	}
	if err != nil {
		return Operator{}, fmt.Errorf("authenticate operator: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(stored), []byte(hash)) != 1 || revoked != 0 {
		return Operator{}, fmt.Errorf("authenticate operator: %w", ErrTokenInvalid)
	}
	op.CreatedAt = fromMS(created)
	return op, nil
}

// ListOperators returns all operators, revoked ones included, oldest first.
func (r *Registry) ListOperators(ctx context.Context) ([]Operator, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT id, name, role, created_at, revoked_at FROM operators ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list operators: %w", err)
	}
	defer rows.Close()
	out := []Operator{}
	for rows.Next() {
		var (
			op               Operator
			created, revoked int64
		)
		if err := rows.Scan(&op.ID, &op.Name, &op.Role, &created, &revoked); err != nil {
			return nil, fmt.Errorf("list operators: %w", err)
		}
		op.CreatedAt, op.RevokedAt = fromMS(created), fromMS(revoked)
		out = append(out, op)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list operators: %w", err)
	}
	return out, nil
}

// RevokeOperator revokes an operator's token for good. Revoking a revoked operator changes
// nothing; an unknown ID gives ErrNotFound.
func (r *Registry) RevokeOperator(ctx context.Context, id string, actor, remote string) error {
	err := r.write(ctx, func(tx *sql.Tx) error {
		var (
			name    string
			revoked int64
		)
		err := tx.QueryRowContext(ctx, `SELECT name, revoked_at FROM operators WHERE id = $1`+r.d.forUpdate, id).Scan(&name, &revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("operator %s: %w", id, ErrNotFound)
		}
		if err != nil || revoked != 0 {
			return err
		}
		now := r.now()
		if _, err := tx.ExecContext(ctx, `UPDATE operators SET revoked_at = $1 WHERE id = $2`, toMS(now), id); err != nil {
			return err
		}
		return r.audit(ctx, tx, now, actor, ActionOperatorRevoke, id, fmt.Sprintf("name %q", name), remote)
	})
	if err != nil {
		return fmt.Errorf("revoke operator: %w", err)
	}
	return nil
}
