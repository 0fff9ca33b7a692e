package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestEnrollTokenSingleUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		tok := oneToken(t, r, TokenSpec{TTL: time.Hour, Tags: map[string]string{"site": "berlin"}})
		require.True(t, strings.HasPrefix(tok, EnrollmentTokenPrefix))
		require.Len(t, tok, len(EnrollmentTokenPrefix)+43)

		fakeClock(r).Advance(time.Minute)
		dev, cert, err := r.Enroll(ctx, tok, "mx-100", "192.0.2.7:4711", ca.issuer(t))
		require.NoError(t, err)
		require.Regexp(t, `^d-[0-9a-f]{12}$`, dev.ID)
		require.Equal(t, dev.ID, cert.Subject.CommonName)
		require.Equal(t, StatusActive, dev.Status)
		require.Equal(t, "mx-100", dev.HardwareModel)
		require.Equal(t, map[string]string{"site": "berlin"}, dev.Tags)
		require.Equal(t, []string{}, dev.Groups)
		enrolledAt := testStart.Add(time.Minute)
		require.Equal(t, enrolledAt, dev.CreatedAt)
		require.Equal(t, enrolledAt, dev.EnrolledAt)
		require.Equal(t, time.UTC, dev.EnrolledAt.Location())
		require.True(t, dev.LastSeenAt.IsZero())

		got, err := r.Device(ctx, dev.ID)
		require.NoError(t, err)
		require.Equal(t, dev, got)

		c, err := r.Certificate(ctx, strings.ToUpper(SerialHex(cert)))
		require.NoError(t, err)
		require.Equal(t, Certificate{
			Serial: SerialHex(cert), DeviceID: dev.ID,
			NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(), CreatedAt: enrolledAt,
		}, *c)

		_, _, err = r.Enroll(ctx, tok, "mx-100", "192.0.2.7:4711", ca.issuer(t))
		require.ErrorIs(t, err, ErrTokenUsed)
		n, err := r.CountDevices(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)

		entries, err := r.ListAudit(ctx, 1, 0)
		require.NoError(t, err)
		require.Equal(t, ActionDeviceEnroll, entries[0].Action)
		require.Equal(t, "enroll:"+EnrollmentTokenID(tok), entries[0].Actor)
		require.Equal(t, dev.ID, entries[0].Target)
		require.Equal(t, "192.0.2.7:4711", entries[0].Remote)
		require.Equal(t, enrolledAt, entries[0].At)
		require.Contains(t, entries[0].Detail, SerialHex(cert))

		toks, err := r.ListEnrollmentTokens(ctx, true)
		require.NoError(t, err)
		require.Len(t, toks, 1)
		require.Equal(t, EnrollmentTokenID(tok), toks[0].ID)
		require.Equal(t, dev.ID, toks[0].UsedBy)
		require.Equal(t, enrolledAt, toks[0].UsedAt)
		require.Equal(t, "o-test", toks[0].CreatedBy)
		toks, err = r.ListEnrollmentTokens(ctx, false)
		require.NoError(t, err)
		require.Empty(t, toks)
	})
}

func TestEnrollConcurrentTokenUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		tok := oneToken(t, r, TokenSpec{})
		const racers = 20
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			errs    = make([]error, racers)
			devices = make([]*Device, racers)
		)
		for i := range racers {
			issue := ca.issuer(t)
			wg.Go(func() {
				<-start
				devices[i], _, errs[i] = r.Enroll(ctx, tok, "m", "", issue)
			})
		}
		close(start)
		wg.Wait()
		var won int
		for i, err := range errs {
			if err == nil {
				won++
				require.NotNil(t, devices[i])
				continue
			}
			require.ErrorIs(t, err, ErrTokenUsed)
		}
		require.Equal(t, 1, won)
		n, err := r.CountDevices(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
	})
}

func TestEnrollTokenErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)

		// Malformed and unknown tokens.
		for _, tok := range []string{"", "mwe_", "mwo_" + strings.Repeat("A", 43), "mwe_" + strings.Repeat("*", 43), newToken(EnrollmentTokenPrefix)} {
			_, _, err := r.Enroll(ctx, tok, "m", "", ca.issuer(t))
			require.ErrorIs(t, err, ErrTokenInvalid, "token %q", tok)
		}

		// Expiry: valid until the last millisecond of its TTL.
		tok := oneToken(t, r, TokenSpec{TTL: time.Hour})
		fakeClock(r).Advance(time.Hour)
		_, _, err := r.Enroll(ctx, tok, "m", "", ca.issuer(t))
		require.ErrorIs(t, err, ErrTokenExpired)
		tok = oneToken(t, r, TokenSpec{TTL: time.Hour})
		fakeClock(r).Advance(time.Hour - time.Millisecond)
		_, _, err = r.Enroll(ctx, tok, "m", "", ca.issuer(t))
		require.NoError(t, err)

		// Model restriction: a mismatch leaves the token usable.
		tok = oneToken(t, r, TokenSpec{Model: "mx-100"})
		_, _, err = r.Enroll(ctx, tok, "mx-200", "", ca.issuer(t))
		require.ErrorIs(t, err, ErrModelMismatch)
		dev, _, err := r.Enroll(ctx, tok, "mx-100", "", ca.issuer(t))
		require.NoError(t, err)
		require.Equal(t, "mx-100", dev.HardwareModel)

		// The issuer failing changes nothing and leaves the token usable.
		tok = oneToken(t, r, TokenSpec{DeviceID: "pump-17"})
		before := auditActions(t, r)
		boom := errors.New("HSM unavailable")
		_, _, err = r.Enroll(ctx, tok, "m", "", func(string) (*x509.Certificate, error) { return nil, boom })
		require.ErrorIs(t, err, boom)
		_, _, err = r.Enroll(ctx, tok, "m", "", func(string) (*x509.Certificate, error) { return nil, nil })
		require.Error(t, err)
		_, err = r.Device(ctx, "pump-17")
		require.ErrorIs(t, err, ErrNotFound)
		require.Equal(t, before, auditActions(t, r))
		dev, _, err = r.Enroll(ctx, tok, "m", "", ca.issuer(t))
		require.NoError(t, err)
		require.Equal(t, "pump-17", dev.ID)

		// A token naming an enrolled device can neither be created nor used.
		_, err = r.CreateEnrollmentTokens(ctx, TokenSpec{DeviceID: "pump-17"}, "o-test")
		require.ErrorIs(t, err, ErrExists)
		tok = oneToken(t, r, TokenSpec{DeviceID: "pump-18"})
		_, err = r.CreateDevice(ctx, "pump-18", nil, nil, "o-test", "")
		require.NoError(t, err)
		require.NoError(t, r.SetStatus(ctx, "pump-18", StatusSuspended, "o-test", ""))
		_, _, err = r.Enroll(ctx, tok, "m", "", ca.issuer(t))
		require.ErrorIs(t, err, ErrExists)

		// Bad specs.
		for _, spec := range []TokenSpec{
			{Count: -1}, {Count: MaxTokensPerCall + 1}, {TTL: -time.Second}, {DeviceID: "Pump_1"},
			{DeviceID: "pump-19", Count: 2}, {Tags: map[string]string{"a=b": "c"}}, {Model: "bad\nmodel"},
		} {
			_, err := r.CreateEnrollmentTokens(ctx, spec, "o-test")
			require.ErrorIs(t, err, ErrInvalid, "%+v", spec)
		}
	})
}

func TestEnrollPendingDevice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		pre, err := r.CreateDevice(ctx, "press-4", map[string]string{"site": "lyon", "line": "2"}, []string{"presses"}, "o-admin", "10.0.0.1")
		require.NoError(t, err)
		require.Equal(t, StatusPending, pre.Status)
		require.True(t, pre.EnrolledAt.IsZero())
		_, err = r.CreateDevice(ctx, "press-4", nil, nil, "o-admin", "")
		require.ErrorIs(t, err, ErrExists)

		toks, err := r.CreateEnrollmentTokens(ctx, TokenSpec{DeviceID: "press-4", Tags: map[string]string{"line": "3"}}, "o-admin")
		require.NoError(t, err)
		fakeClock(r).Advance(time.Second)
		dev, _, err := r.Enroll(ctx, toks[0], "hx", "", ca.issuer(t))
		require.NoError(t, err)
		require.Equal(t, StatusActive, dev.Status)
		require.Equal(t, map[string]string{"site": "lyon", "line": "3"}, dev.Tags)
		require.Equal(t, []string{"presses"}, dev.Groups)
		require.Equal(t, testStart, dev.CreatedAt)
		require.Equal(t, testStart.Add(time.Second), dev.EnrolledAt)
	})
}

func TestEnrollmentTokenBatchAndDelete(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		toks, err := r.CreateEnrollmentTokens(ctx, TokenSpec{Count: 50, Model: "mx"}, "o-admin")
		require.NoError(t, err)
		require.Len(t, toks, 50)
		seen := map[string]bool{}
		for _, tok := range toks {
			require.False(t, seen[tok])
			seen[tok] = true
		}
		listed, err := r.ListEnrollmentTokens(ctx, false)
		require.NoError(t, err)
		require.Len(t, listed, 50)
		require.Equal(t, testStart.Add(DefaultTokenTTL), listed[0].ExpiresAt)
		require.Equal(t, "mx", listed[0].Model)

		// Stored hashes only: no plaintext token in the table.
		var n int
		require.NoError(t, r.db.QueryRowContext(ctx, `SELECT count(*) FROM enrollment_tokens WHERE hash = $1 OR id = $1`, toks[0]).Scan(&n))
		require.Zero(t, n)

		id := EnrollmentTokenID(toks[0])
		require.NoError(t, r.DeleteEnrollmentToken(ctx, id, "o-admin", "10.0.0.9"))
		require.ErrorIs(t, r.DeleteEnrollmentToken(ctx, id, "o-admin", ""), ErrNotFound)
		_, _, err = r.Enroll(ctx, toks[0], "mx", "", newTestCA(t, fakeClock(r).Now).issuer(t))
		require.ErrorIs(t, err, ErrTokenInvalid)
		listed, err = r.ListEnrollmentTokens(ctx, true)
		require.NoError(t, err)
		require.Len(t, listed, 49)
	})
}

func TestAddCertificate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		c1, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.ErrorIs(t, r.AddCertificate(ctx, "dev-1", c1, false), ErrNotFound)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c1, true))
		require.ErrorIs(t, r.AddCertificate(ctx, "dev-1", c1, true), ErrExists)
		dev, err := r.Device(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, StatusActive, dev.Status)
		c2, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		fakeClock(r).Advance(time.Second)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c2, false))
		certs, err := r.DeviceCertificates(ctx, "dev-1")
		require.NoError(t, err)
		require.Len(t, certs, 2)
		require.Equal(t, SerialHex(c1), certs[0].Serial)
		require.Equal(t, SerialHex(c2), certs[1].Serial)
		require.ErrorIs(t, r.AddCertificate(ctx, "Dev 1", c2, true), ErrInvalid)
		require.ErrorIs(t, r.AddCertificate(ctx, "dev-1", nil, true), ErrInvalid)
		_, err = r.Certificate(ctx, "not-hex")
		require.ErrorIs(t, err, ErrInvalid)
		_, err = r.Certificate(ctx, "abcdef")
		require.ErrorIs(t, err, ErrNotFound)
	})
}
