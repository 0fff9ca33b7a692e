package registry

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// DefaultTokenTTL is the lifetime of an enrollment token created with a zero TTL.
const DefaultTokenTTL = 24 * time.Hour

// MaxTokensPerCall is the most enrollment tokens one CreateEnrollmentTokens call makes.
const MaxTokensPerCall = 10000

// TokenSpec describes the enrollment tokens to create.
type TokenSpec struct {
	// Count is how many tokens to create: 0 means 1, at most 10000. Must be 1 when DeviceID is set.
	Count int
	// TTL is how long the tokens stay valid: 0 means DefaultTokenTTL (24 h).
	TTL time.Duration
	// Model restricts the tokens to devices reporting this hardware model; "" admits any.
	Model string
	// Tags are given to the device that enrolls with a token.
	Tags map[string]string
	// DeviceID is the ID the enrolling device gets; "" lets the server assign "d-" + 12 hex
	// digits. It may name a pending device ([Registry.CreateDevice]), which enrolling activates.
	DeviceID string
}

// EnrollmentToken describes a stored enrollment token (never the token itself).
type EnrollmentToken struct {
	ID        string // EnrollmentTokenID of the token
	Model     string // "" = any
	DeviceID  string // "" = server assigns
	Tags      map[string]string
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    time.Time // zero while unused
	UsedBy    string    // the device that enrolled with it; "" while unused
}

// CreateEnrollmentTokens creates spec.Count single-use enrollment tokens and returns them in
// plaintext; this is the only time they exist in plaintext. Each token gets an audit entry
// (action token.create, target its ID).
func (r *Registry) CreateEnrollmentTokens(ctx context.Context, spec TokenSpec, actor string) ([]string, error) {
	n := spec.Count
	if n == 0 {
		n = 1
	}
	if n < 0 || n > MaxTokensPerCall {
		return nil, fmt.Errorf("create enrollment tokens: %w: count %d: want 1 to %d", ErrInvalid, spec.Count, MaxTokensPerCall)
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("create enrollment tokens: %w: negative TTL %s", ErrInvalid, spec.TTL)
	}
	if err := validateText("hardware model", spec.Model, MaxValueLen); err != nil {
		return nil, fmt.Errorf("create enrollment tokens: %w", err)
	}
	if err := validateTags(spec.Tags); err != nil {
		return nil, fmt.Errorf("create enrollment tokens: %w", err)
	}
	if spec.DeviceID != "" {
		if err := validateDeviceID(spec.DeviceID); err != nil {
			return nil, fmt.Errorf("create enrollment tokens: %w", err)
		}
		if n != 1 {
			return nil, fmt.Errorf("create enrollment tokens: %w: a token naming device %s must be the only one (count %d)", ErrInvalid, spec.DeviceID, n)
		}
	}
	tags := spec.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	tagsJSON, err := json.Marshal(tags)
	if err != nil {
		return nil, fmt.Errorf("create enrollment tokens: %w", err)
	}
	tokens := make([]string, n)
	err = r.write(ctx, func(tx *sql.Tx) error {
		if spec.DeviceID != "" {
			s, err := r.lockDevice(ctx, tx, spec.DeviceID)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case s != StatusPending:
				return fmt.Errorf("device %s (%s): %w", spec.DeviceID, s, ErrExists)
			}
		}
		now := r.now()
		expires := now.Add(ttl)
		detail := fmt.Sprintf("expires %s", expires.Format(time.RFC3339))
		if spec.Model != "" {
			detail += " model " + spec.Model
		}
		if spec.DeviceID != "" {
			detail += " device " + spec.DeviceID
		}
		if t := describeTags("tags", spec.Tags); t != "" {
			detail += " " + t
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO enrollment_tokens
			(hash, id, model, device_id, tags, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i := range tokens {
			tokens[i] = newToken(EnrollmentTokenPrefix)
			h := hashToken(tokens[i])
			id := h[:tokenIDLen]
			if _, err := stmt.ExecContext(ctx, h, id, spec.Model, spec.DeviceID, string(tagsJSON), actor, toMS(now), toMS(expires)); err != nil {
				return fmt.Errorf("store token %s: %w", id, err)
			}
			if err := r.audit(ctx, tx, now, actor, ActionTokenCreate, id, detail, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create enrollment tokens: %w", err)
	}
	return tokens, nil
}

// ListEnrollmentTokens returns the stored enrollment tokens, oldest first; used and expired
// ones only when all is true.
func (r *Registry) ListEnrollmentTokens(ctx context.Context, all bool) ([]EnrollmentToken, error) {
	q := `SELECT id, model, device_id, tags, created_by, created_at, expires_at, used_at, used_by FROM enrollment_tokens`
	var args []any
	if !all {
		q += ` WHERE used_at = 0 AND expires_at > $1`
		args = append(args, toMS(r.now()))
	}
	q += ` ORDER BY created_at, id`
	rows, err := r.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list enrollment tokens: %w", err)
	}
	defer rows.Close()
	out := []EnrollmentToken{}
	for rows.Next() {
		var (
			t                      EnrollmentToken
			tags                   string
			created, expires, used int64
		)
		if err := rows.Scan(&t.ID, &t.Model, &t.DeviceID, &tags, &t.CreatedBy, &created, &expires, &used, &t.UsedBy); err != nil {
			return nil, fmt.Errorf("list enrollment tokens: %w", err)
		}
		if err := json.Unmarshal([]byte(tags), &t.Tags); err != nil {
			return nil, fmt.Errorf("list enrollment tokens: tags of %s: %w", t.ID, err)
		}
		t.CreatedAt, t.ExpiresAt, t.UsedAt = fromMS(created), fromMS(expires), fromMS(used)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list enrollment tokens: %w", err)
	}
	return out, nil
}

// DeleteEnrollmentToken deletes an unused enrollment token by its ID, so it can no longer
// enroll a device. Used tokens stay as the record of their enrollment (ErrTokenUsed).
func (r *Registry) DeleteEnrollmentToken(ctx context.Context, id, actor, remote string) error {
	err := r.write(ctx, func(tx *sql.Tx) error {
		var used int64
		err := tx.QueryRowContext(ctx, `SELECT used_at FROM enrollment_tokens WHERE id = $1`+r.d.forUpdate, id).Scan(&used)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if used != 0 {
			return fmt.Errorf("token %s: %w", id, ErrTokenUsed)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM enrollment_tokens WHERE id = $1`, id); err != nil {
			return err
		}
		return r.audit(ctx, tx, r.now(), actor, ActionTokenDelete, id, "", remote)
	})
	if err != nil {
		return fmt.Errorf("delete enrollment token: %w", err)
	}
	return nil
}

// Enroll admits a device with an enrollment token. In one transaction it consumes the token,
// creates the device (or activates the pending device the token names) with status active,
// the reported hardware model and the token's tags, calls issue with the device ID to get its
// certificate, stores the certificate and writes the audit entry (actor "enroll:<token ID>",
// remote the client's address).
//
// Errors: ErrTokenInvalid (malformed or unknown), ErrTokenUsed (exactly one of any number of
// concurrent callers with the same token succeeds), ErrTokenExpired, ErrModelMismatch, ErrExists
// (the token names a device that is already enrolled), ErrInvalid, or issue's error. On any
// error nothing changes and the token stays usable unless it was already used.
//
// issue runs inside the transaction, which on SQLite holds the database's write lock: it
// should only sign, and must not call the registry's mutating methods.
func (r *Registry) Enroll(ctx context.Context, token, model, remote string, issue func(deviceID string) (*x509.Certificate, error)) (*Device, *x509.Certificate, error) {
	if !wellFormed(token, EnrollmentTokenPrefix) {
		return nil, nil, fmt.Errorf("enroll: %w: malformed enrollment token", ErrTokenInvalid)
	}
	if err := validateText("hardware model", model, MaxValueLen); err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	hash := hashToken(token)
	tokenID := hash[:tokenIDLen]
	var (
		dev  *Device
		cert *x509.Certificate
	)
	err := r.write(ctx, func(tx *sql.Tx) error {
		var (
			tokModel, tokDevice, tokTags string
			expires, used                int64
		)
		err := tx.QueryRowContext(ctx, `SELECT model, device_id, tags, expires_at, used_at FROM enrollment_tokens
			WHERE hash = $1`+r.d.forUpdate, hash).Scan(&tokModel, &tokDevice, &tokTags, &expires, &used)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("token %s: %w", tokenID, ErrTokenInvalid)
		}
		if err != nil {
			return fmt.Errorf("read token %s: %w", tokenID, err)
		}
		now := r.now()
		switch {
		case used != 0:
			return fmt.Errorf("token %s used at %s: %w", tokenID, fromMS(used).Format(time.RFC3339), ErrTokenUsed)
		case toMS(now) >= expires:
			return fmt.Errorf("token %s expired at %s: %w", tokenID, fromMS(expires).Format(time.RFC3339), ErrTokenExpired)
		case tokModel != "" && tokModel != model:
			return fmt.Errorf("token %s is for model %q, device reported %q: %w", tokenID, tokModel, model, ErrModelMismatch)
		}
		var tags map[string]string
		if err := json.Unmarshal([]byte(tokTags), &tags); err != nil {
			return fmt.Errorf("token %s: decode tags: %w", tokenID, err)
		}

		id, pending := tokDevice, false
		if id != "" {
			s, err := r.lockDevice(ctx, tx, id)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case s == StatusPending:
				pending = true
			default:
				return fmt.Errorf("token %s names device %s, which is %s: %w", tokenID, id, s, ErrExists)
			}
		} else if id, err = r.newDeviceID(ctx, tx); err != nil {
			return err
		}

		c, err := issue(id)
		if err != nil {
			return fmt.Errorf("issue certificate for %s: %w", id, err)
		}
		if c == nil || c.SerialNumber == nil {
			return fmt.Errorf("issue certificate for %s: no certificate", id)
		}

		if pending {
			_, err = tx.ExecContext(ctx, `UPDATE devices SET status = $1, hardware_model = $2, enrolled_at = $3 WHERE id = $4`,
				StatusActive, model, toMS(now), id)
		} else {
			_, err = tx.ExecContext(ctx, `INSERT INTO devices (id, status, hardware_model, created_at, enrolled_at) VALUES ($1, $2, $3, $4, $4)`,
				id, StatusActive, model, toMS(now))
			if isUniqueViolation(err) {
				return fmt.Errorf("device %s: %w", id, ErrExists)
			}
		}
		if err != nil {
			return fmt.Errorf("store device %s: %w", id, err)
		}
		if err := putTags(ctx, tx, id, tags); err != nil {
			return err
		}
		if err := insertCertificate(ctx, tx, id, c, now); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE enrollment_tokens SET used_at = $1, used_by = $2 WHERE hash = $3 AND used_at = 0`, toMS(now), id, hash)
		if err != nil {
			return fmt.Errorf("consume token %s: %w", tokenID, err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("consume token %s: %w", tokenID, errors.Join(ErrTokenUsed, err))
		}
		detail := fmt.Sprintf("certificate %s model %q", SerialHex(c), model)
		if t := describeTags("tags", tags); t != "" {
			detail += " " + t
		}
		if err := r.audit(ctx, tx, now, enrollmentActorPrefix+tokenID, ActionDeviceEnroll, id, detail, remote); err != nil {
			return err
		}
		if dev, err = r.device(ctx, tx, id); err != nil {
			return err
		}
		cert = c
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %w", err)
	}
	return dev, cert, nil
}

// newDeviceID returns an unused server-assigned device ID, "d-" and 12 hex digits.
func (r *Registry) newDeviceID(ctx context.Context, tx *sql.Tx) (string, error) {
	for range 8 {
		id := "d-" + randomHex(12)
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE id = $1`, id).Scan(&n); err != nil {
			return "", fmt.Errorf("assign device ID: %w", err)
		}
		if n == 0 {
			return id, nil
		}
	}
	return "", errors.New("assign device ID: no free ID after 8 attempts")
}

// AddCertificate records a certificate issued to a device outside enrollment (re-enrollment,
// rotation, development certificates). When the device does not exist it is created, active,
// if create is true, and ErrNotFound is returned otherwise. A revoked device gets no new
// certificates (ErrInvalid): set it active first. The audit entry's actor is "system".
func (r *Registry) AddCertificate(ctx context.Context, deviceID string, cert *x509.Certificate, create bool) error {
	if err := validateDeviceID(deviceID); err != nil {
		return fmt.Errorf("add certificate: %w", err)
	}
	if cert == nil || cert.SerialNumber == nil {
		return fmt.Errorf("add certificate for %s: %w: no certificate", deviceID, ErrInvalid)
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		return r.addCertificateTx(ctx, tx, r.now(), deviceID, cert, create, systemActor, "")
	})
	if err != nil {
		return fmt.Errorf("add certificate for %s: %w", deviceID, err)
	}
	return nil
}

// addCertificateTx is AddCertificate (and one certificate of AddCertificates) inside tx; its
// audit entry names actor and remote.
func (r *Registry) addCertificateTx(ctx context.Context, tx *sql.Tx, now time.Time, deviceID string, cert *x509.Certificate, create bool, actor, remote string) error {
	detail := "certificate " + SerialHex(cert)
	s, err := r.lockDevice(ctx, tx, deviceID)
	switch {
	case errors.Is(err, ErrNotFound) && create:
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (id, status, created_at, enrolled_at) VALUES ($1, $2, $3, $3)`,
			deviceID, StatusActive, toMS(now))
		if err != nil {
			return fmt.Errorf("create device %s: %w", deviceID, err)
		}
		detail += "; created the device"
	case err != nil:
		return err
	case s == StatusRevoked:
		return fmt.Errorf("%w: device %s is revoked", ErrInvalid, deviceID)
	}
	if err := insertCertificate(ctx, tx, deviceID, cert, now); err != nil {
		return err
	}
	return r.audit(ctx, tx, now, actor, ActionCertificateAdd, deviceID, detail, remote)
}

func insertCertificate(ctx context.Context, tx *sql.Tx, deviceID string, c *x509.Certificate, now time.Time) error {
	serial := SerialHex(c)
	_, err := tx.ExecContext(ctx, `INSERT INTO certificates (serial, device_id, not_before, not_after, created_at) VALUES ($1, $2, $3, $4, $5)`,
		serial, deviceID, toMS(c.NotBefore), toMS(c.NotAfter), toMS(now))
	if isUniqueViolation(err) {
		return fmt.Errorf("certificate %s: %w", serial, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("store certificate %s: %w", serial, err)
	}
	return nil
}
