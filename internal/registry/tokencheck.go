package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// CheckEnrollmentToken tells whether Enroll would accept token for a device reporting model,
// without using the token: it returns the error Enroll would return for the token itself
// (ErrTokenInvalid, ErrTokenUsed, ErrTokenExpired, ErrModelMismatch), or nil. The enrollment
// endpoint calls it before it reads a certificate request, so that a client without a usable
// token is answered before it can send a body. Enroll checks again in its transaction: two
// clients with one token may both pass this check, and only one enrolls.
func (r *Registry) CheckEnrollmentToken(ctx context.Context, token, model string) error {
	if !wellFormed(token, EnrollmentTokenPrefix) {
		return fmt.Errorf("check enrollment token: %w: malformed enrollment token", ErrTokenInvalid)
	}
	hash := hashToken(token)
	tokenID := hash[:tokenIDLen]
	var (
		tokModel      string
		expires, used int64
	)
	err := r.db.QueryRowContext(ctx, `SELECT model, expires_at, used_at FROM enrollment_tokens WHERE hash = $1`, hash).
		Scan(&tokModel, &expires, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("check enrollment token %s: %w", tokenID, ErrTokenInvalid)
	}
	if err != nil {
		return fmt.Errorf("check enrollment token %s: %w", tokenID, err)
	}
	switch {
	case used != 0:
		return fmt.Errorf("token %s used at %s: %w", tokenID, fromMS(used).Format(time.RFC3339), ErrTokenUsed)
	case toMS(r.now()) >= expires:
		return fmt.Errorf("token %s expired at %s: %w", tokenID, fromMS(expires).Format(time.RFC3339), ErrTokenExpired)
	case tokModel != "" && tokModel != model:
		return fmt.Errorf("token %s is for model %q, device reported %q: %w", tokenID, tokModel, model, ErrModelMismatch)
	}
	return nil
}
