package registry

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DeviceCertificate is a certificate issued to a device, for [Registry.AddCertificates].
type DeviceCertificate struct {
	DeviceID string
	Cert     *x509.Certificate
}

// bulkChunk is how many certificates one AddCertificates transaction records: large enough
// that a thousand devices cost a few commits (one fsync each on SQLite), small enough that the
// SQLite write lock is never held long while a server shares the database.
const bulkChunk = 500

// AddCertificates records many certificates issued outside enrollment (development
// certificates, simulated fleets) in a few transactions, as AddCertificate would one by one
// with create set: a missing device is created active, and each new certificate gets its
// audit entry, written by actor from remote (as the other mutations made on an operator's
// behalf). A certificate the registry already holds for the same device is skipped, so
// calling it again with the same certificates is harmless. It returns how many certificates
// were newly recorded.
//
// Errors: ErrInvalid (a bad device ID, no certificate, or a revoked device), ErrExists (the
// serial belongs to another device). Transactions are committed chunk by chunk: on an error,
// the chunks before the failing one stay recorded.
func (r *Registry) AddCertificates(ctx context.Context, certs []DeviceCertificate, actor, remote string) (int, error) {
	if actor == "" {
		return 0, fmt.Errorf("add certificates: %w: an actor is required", ErrInvalid)
	}
	for _, dc := range certs {
		if err := validateDeviceID(dc.DeviceID); err != nil {
			return 0, fmt.Errorf("add certificates: %w", err)
		}
		if dc.Cert == nil || dc.Cert.SerialNumber == nil {
			return 0, fmt.Errorf("add certificates for %s: %w: no certificate", dc.DeviceID, ErrInvalid)
		}
	}
	added := 0
	for start := 0; start < len(certs); start += bulkChunk {
		chunk := certs[start:min(start+bulkChunk, len(certs))]
		n := 0
		err := r.write(ctx, func(tx *sql.Tx) error {
			n = 0
			now := r.now()
			for _, dc := range chunk {
				serial := SerialHex(dc.Cert)
				var owner string
				err := tx.QueryRowContext(ctx, `SELECT device_id FROM certificates WHERE serial = $1`, serial).Scan(&owner)
				switch {
				case err == nil && owner == dc.DeviceID:
					continue
				case err == nil:
					return fmt.Errorf("certificate %s of %s: %w: recorded for device %s", serial, dc.DeviceID, ErrExists, owner)
				case !errors.Is(err, sql.ErrNoRows):
					return fmt.Errorf("read certificate %s: %w", serial, err)
				}
				if err := r.addCertificateTx(ctx, tx, now, dc.DeviceID, dc.Cert, true, actor, remote); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return added, fmt.Errorf("add certificates: %w", err)
		}
		added += n
	}
	return added, nil
}

// DeviceImport is one device to import: an active device with its facts, tags and groups.
type DeviceImport struct {
	ID                        string
	Tags                      map[string]string
	Groups                    []string
	Model, Operator, Firmware string
	// LastSeen is when it was last seen; zero for never.
	LastSeen time.Time
}

// ImportDevices creates many active devices in a few transactions (bulkChunk each), as a
// migration from another platform or a simulated fleet needs; a device that exists already
// is skipped. Each chunk is audited once as device.import by actor. It returns how many
// devices were created.
func (r *Registry) ImportDevices(ctx context.Context, devs []DeviceImport, actor, remote string) (int, error) {
	if actor == "" {
		return 0, fmt.Errorf("import devices: %w: an actor is required", ErrInvalid)
	}
	for _, d := range devs {
		if err := validateDeviceID(d.ID); err != nil {
			return 0, fmt.Errorf("import devices: %w", err)
		}
		for _, f := range []struct{ what, v string }{{"hardware model", d.Model}, {"network operator", d.Operator}, {"firmware version", d.Firmware}} {
			if err := validateText(f.what, f.v, MaxValueLen); err != nil {
				return 0, fmt.Errorf("import device %s: %w", d.ID, err)
			}
		}
	}
	created := 0
	for start := 0; start < len(devs); start += bulkChunk {
		chunk := devs[start:min(start+bulkChunk, len(devs))]
		n := 0
		err := r.write(ctx, func(tx *sql.Tx) error {
			n = 0
			now := r.now()
			for _, d := range chunk {
				res, err := tx.ExecContext(ctx, `INSERT INTO devices (id, status, hardware_model, network_operator, firmware_version, created_at,
					enrolled_at, last_seen_at) VALUES ($1, 'active', $2, $3, $4, $5, $5, $6) ON CONFLICT (id) DO NOTHING`,
					d.ID, d.Model, d.Operator, d.Firmware, toMS(now), toMS(d.LastSeen))
				if err != nil {
					return fmt.Errorf("device %s: %w", d.ID, err)
				}
				if k, _ := res.RowsAffected(); k == 0 {
					continue
				}
				n++
				if err := putTags(ctx, tx, d.ID, d.Tags); err != nil {
					return err
				}
				for _, g := range d.Groups {
					if _, err := tx.ExecContext(ctx, `INSERT INTO device_groups (device_id, name) VALUES ($1, $2)`, d.ID, g); err != nil {
						return fmt.Errorf("device %s group %s: %w", d.ID, g, err)
					}
				}
			}
			return r.audit(ctx, tx, now, actor, ActionDeviceImport, chunk[0].ID, fmt.Sprintf("%d devices created, %s … %s", n, chunk[0].ID, chunk[len(chunk)-1].ID), remote)
		})
		if err != nil {
			return created, fmt.Errorf("import devices: %w", err)
		}
		created += n
	}
	return created, nil
}
