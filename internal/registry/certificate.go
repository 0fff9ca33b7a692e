package registry

import (
	"context"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// Certificate is a device certificate the registry knows of.
type Certificate struct {
	Serial    string    `json:"serial"` // lowercase hex without leading zeros, as SerialHex gives it
	DeviceID  string    `json:"device_id"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	CreatedAt time.Time `json:"created_at"` // when the registry recorded it
	RevokedAt time.Time `json:"revoked_at"` // zero when not revoked
}

// SerialHex formats a certificate's serial number the way the registry stores it: lowercase
// hex, no leading zeros, no separators.
func SerialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// normalSerial accepts a serial in hex, upper or lower case, optionally with colons or a 0x
// prefix, and returns it in SerialHex form.
func normalSerial(s string) (string, error) {
	t := strings.TrimPrefix(strings.ToLower(strings.ReplaceAll(s, ":", "")), "0x")
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || t == "" || n.Sign() < 0 {
		return "", fmt.Errorf("%w: serial %q is not hexadecimal", ErrInvalid, s)
	}
	return n.Text(16), nil
}

const certificateCols = `serial, device_id, not_before, not_after, created_at, revoked_at`

func scanCertificate(s scanner) (Certificate, error) {
	var (
		c                                 Certificate
		notBefore, notAfter, created, rev int64
	)
	if err := s.Scan(&c.Serial, &c.DeviceID, &notBefore, &notAfter, &created, &rev); err != nil {
		return Certificate{}, err
	}
	c.NotBefore, c.NotAfter, c.CreatedAt, c.RevokedAt = fromMS(notBefore), fromMS(notAfter), fromMS(created), fromMS(rev)
	return c, nil
}

// Certificate returns the certificate with the given serial (hex, any case, colons allowed).
func (r *Registry) Certificate(ctx context.Context, serial string) (*Certificate, error) {
	s, err := normalSerial(serial)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	c, err := scanCertificate(r.db.QueryRowContext(ctx, `SELECT `+certificateCols+` FROM certificates WHERE serial = $1`, s))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("certificate %s: %w", s, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate %s: %w", s, err)
	}
	return &c, nil
}

// DeviceCertificates returns the certificates of a device, oldest first; an empty list for a
// device without any (or an unknown device).
func (r *Registry) DeviceCertificates(ctx context.Context, deviceID string) ([]Certificate, error) {
	return r.certificates(ctx, `WHERE device_id = $1 ORDER BY created_at, serial`, deviceID)
}

// RevokedCertificates returns every revoked certificate, in order of revocation, for the CRL.
// Expired ones are included; the caller may leave out those past NotAfter.
func (r *Registry) RevokedCertificates(ctx context.Context) ([]Certificate, error) {
	return r.certificates(ctx, `WHERE revoked_at <> 0 ORDER BY revoked_at, serial`)
}

func (r *Registry) certificates(ctx context.Context, where string, args ...any) ([]Certificate, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT `+certificateCols+` FROM certificates `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	defer rows.Close()
	out := []Certificate{}
	for rows.Next() {
		c, err := scanCertificate(rows)
		if err != nil {
			return nil, fmt.Errorf("list certificates: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list certificates: %w", err)
	}
	return out, nil
}
