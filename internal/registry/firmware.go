package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/millwright/millwright/internal/firmware"
)

// ErrInUse means a firmware release cannot be deleted: devices still run it.
var ErrInUse = errors.New("in use")

// Audit actions of the firmware archive.
const (
	ActionFirmwareUpload = "firmware.upload"
	ActionFirmwareDelete = "firmware.delete"
)

// Release is one artifact of a firmware release: a version for one hardware model.
type Release struct {
	Version string `json:"version"`
	Model   string `json:"model"`
	// SHA256 (lowercase hex) and Size name the artifact in the artifact store.
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// MinFrom is the oldest version that may install this one directly; "" for any.
	MinFrom string `json:"min_from"`
	Notes   string `json:"notes"`
	// Manifest is the signed manifest, as uploaded: the server stores and serves it, never
	// signs.
	Manifest   string    `json:"manifest"`
	UploadedBy string    `json:"uploaded_by"`
	UploadedAt time.Time `json:"uploaded_at"`
}

// Bounds of a release's fields.
const (
	MaxVersionLen  = 64
	MaxNotesLen    = 16 << 10
	MaxManifestLen = 64 << 10
)

func (rel Release) validate() error {
	switch {
	case rel.Version == "":
		return fmt.Errorf("%w: a release needs a version", ErrInvalid)
	case rel.Model == "":
		return fmt.Errorf("%w: a release needs a hardware model", ErrInvalid)
	case !firmware.ValidSHA256(rel.SHA256):
		return fmt.Errorf("%w: sha256 %q is not 64 lowercase hex digits", ErrInvalid, rel.SHA256)
	case rel.Size <= 0:
		return fmt.Errorf("%w: an artifact of %d bytes", ErrInvalid, rel.Size)
	case rel.Manifest == "":
		return fmt.Errorf("%w: a release needs its signed manifest", ErrInvalid)
	}
	for _, f := range []struct {
		what, v string
		limit   int
	}{{"version", rel.Version, MaxVersionLen}, {"min_from", rel.MinFrom, MaxVersionLen}, {"hardware model", rel.Model, MaxValueLen},
		{"notes", rel.Notes, MaxNotesLen}, {"manifest", rel.Manifest, MaxManifestLen}} {
		if err := validateText(f.what, f.v, f.limit); err != nil {
			return err
		}
	}
	return nil
}

// AddRelease records a release's artifact for one model, audited as firmware.upload by
// rel.UploadedBy. A version already recorded for the model is refused (ErrExists): a release
// is never replaced, only deleted and uploaded again.
func (r *Registry) AddRelease(ctx context.Context, rel Release, remote string) error {
	if err := rel.validate(); err != nil {
		return fmt.Errorf("add release: %w", err)
	}
	err := r.write(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM firmware_releases WHERE version = $1 AND model = $2`,
			rel.Version, rel.Model).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("release %s for %s: %w", rel.Version, rel.Model, ErrExists)
		}
		now := r.now()
		if _, err := tx.ExecContext(ctx, `INSERT INTO firmware_releases (version, model, sha256, size, min_from, notes, manifest,
			uploaded_by, uploaded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			rel.Version, rel.Model, rel.SHA256, rel.Size, rel.MinFrom, rel.Notes, rel.Manifest, rel.UploadedBy, toMS(now)); err != nil {
			return err
		}
		return r.audit(ctx, tx, now, rel.UploadedBy, ActionFirmwareUpload, rel.Version+"/"+rel.Model,
			fmt.Sprintf("sha256 %s, %d bytes", rel.SHA256, rel.Size), remote)
	})
	if err != nil {
		return fmt.Errorf("add release: %w", err)
	}
	return nil
}

const releaseColumns = `SELECT version, model, sha256, size, min_from, notes, manifest, uploaded_by, uploaded_at FROM firmware_releases`

// Releases lists the releases of one hardware model, or of every model for "", by model and
// upload time.
func (r *Registry) Releases(ctx context.Context, model string) ([]Release, error) {
	rows, err := r.db.QueryContext(ctx, releaseColumns+` WHERE $1 = '' OR model = $1 ORDER BY model, uploaded_at, version`, model)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	out := []Release{}
	err = eachRow(rows, func() error {
		rel, err := scanRelease(rows)
		out = append(out, rel)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	return out, nil
}

// Release returns one release's artifact.
func (r *Registry) Release(ctx context.Context, version, model string) (*Release, error) {
	rel, err := scanRelease(r.db.QueryRowContext(ctx, releaseColumns+` WHERE version = $1 AND model = $2`, version, model))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("release %s for %s: %w", version, model, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("release %s for %s: %w", version, model, err)
	}
	return &rel, nil
}

func scanRelease(s scanner) (Release, error) {
	var (
		rel Release
		at  int64
	)
	err := s.Scan(&rel.Version, &rel.Model, &rel.SHA256, &rel.Size, &rel.MinFrom, &rel.Notes, &rel.Manifest, &rel.UploadedBy, &at)
	rel.UploadedAt = fromMS(at)
	return rel, err
}

// DeleteRelease deletes a release's artifact for one model, audited as firmware.delete,
// unless a device that is not revoked reports running that version on that model (ErrInUse).
// It returns the artifact's SHA-256 and whether another release still uses the same artifact,
// so that the caller removes the file only when none does.
func (r *Registry) DeleteRelease(ctx context.Context, version, model, actor, remote string) (sha string, shared bool, err error) {
	err = r.write(ctx, func(tx *sql.Tx) error {
		rel, err := scanRelease(tx.QueryRowContext(ctx, releaseColumns+` WHERE version = $1 AND model = $2`, version, model))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("release %s for %s: %w", version, model, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var running int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM devices WHERE firmware_version = $1 AND hardware_model = $2
			AND status <> 'revoked'`, version, model).Scan(&running); err != nil {
			return err
		}
		if running > 0 {
			return fmt.Errorf("release %s for %s: %w: %d devices run it", version, model, ErrInUse, running)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM firmware_releases WHERE version = $1 AND model = $2`, version, model); err != nil {
			return err
		}
		var others int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM firmware_releases WHERE sha256 = $1`, rel.SHA256).Scan(&others); err != nil {
			return err
		}
		sha, shared = rel.SHA256, others > 0
		return r.audit(ctx, tx, r.now(), actor, ActionFirmwareDelete, version+"/"+model, "sha256 "+rel.SHA256, remote)
	})
	if err != nil {
		return "", false, fmt.Errorf("delete release: %w", err)
	}
	return sha, shared, nil
}
