package registry

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
)

// ActionCertificateDormant is the audit action of a dormant re-enrollment: a certificate issued
// to a device that proved it holds the key of its expired certificate.
const ActionCertificateDormant = "certificate.dormant_reenroll"

// newestCertificateQuery orders a device's certificates newest first: latest NotBefore (the
// time of issue), then the one recorded last.
const newestCertificateQuery = `SELECT ` + certificateCols + ` FROM certificates WHERE device_id = $1
	ORDER BY not_before DESC, created_at DESC, serial DESC LIMIT 1`

// NewestCertificate returns the device's newest certificate, revoked or not: the one issued
// last (latest NotBefore; of equal ones, the one recorded last). ErrNotFound when the device
// has none.
func (r *Registry) NewestCertificate(ctx context.Context, deviceID string) (*Certificate, error) {
	return newestCertificate(ctx, r.db, deviceID)
}

func newestCertificate(ctx context.Context, q querier, deviceID string) (*Certificate, error) {
	c, err := scanCertificate(q.QueryRowContext(ctx, newestCertificateQuery, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("certificates of %s: %w", deviceID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read newest certificate of %s: %w", deviceID, err)
	}
	return &c, nil
}

// AddDormantCertificate records cert, issued to deviceID in place of its expired certificate
// expiredSerial, with an audit entry (actor "device:<id>", ActionCertificateDormant, detail)
// in the same transaction. Inside that transaction it checks again what the caller checked
// before issuing, so that a revocation, a suspension or a second request at the same moment
// cannot slip between check and record: the device must be active, and expiredSerial must be
// its newest certificate and unrevoked. Otherwise it returns an error wrapping ErrInvalid
// saying what changed, and records nothing.
func (r *Registry) AddDormantCertificate(ctx context.Context, deviceID, expiredSerial string, cert *x509.Certificate, detail, remote string) error {
	if err := validateDeviceID(deviceID); err != nil {
		return fmt.Errorf("add dormant re-enrollment certificate: %w", err)
	}
	old, err := normalSerial(expiredSerial)
	if err != nil {
		return fmt.Errorf("add dormant re-enrollment certificate for %s: %w", deviceID, err)
	}
	if cert == nil || cert.SerialNumber == nil {
		return fmt.Errorf("add dormant re-enrollment certificate for %s: %w: no certificate", deviceID, ErrInvalid)
	}
	err = r.write(ctx, func(tx *sql.Tx) error {
		s, err := r.lockDevice(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		if s != StatusActive {
			return fmt.Errorf("%w: device %s is %s", ErrInvalid, deviceID, s)
		}
		newest, err := newestCertificate(ctx, tx, deviceID)
		if err != nil {
			return err
		}
		switch {
		case newest.Serial != old:
			return fmt.Errorf("%w: certificate %s is no longer the newest of %s (%s is)", ErrInvalid, old, deviceID, newest.Serial)
		case !newest.RevokedAt.IsZero():
			return fmt.Errorf("%w: certificate %s was revoked", ErrInvalid, old)
		}
		now := r.now()
		if err := insertCertificate(ctx, tx, deviceID, cert, now); err != nil {
			return err
		}
		return r.audit(ctx, tx, now, deviceActorPrefix+deviceID, ActionCertificateDormant, deviceID, detail, remote)
	})
	if err != nil {
		return fmt.Errorf("add dormant re-enrollment certificate for %s: %w", deviceID, err)
	}
	return nil
}
