package registry

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewestCertificate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		clk := fakeClock(r)
		ca := newTestCA(t, clk.Now)
		_, err := r.NewestCertificate(ctx, "dev-1")
		require.ErrorIs(t, err, ErrNotFound)

		c1, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c1, true))
		clk.Advance(time.Hour)
		c2, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c2, false))
		// A certificate issued before c2 but recorded after it is not the newest.
		clk.Advance(time.Hour)
		ca.now = func() time.Time { return clk.Now().Add(-90 * time.Minute) }
		c0, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c0, false))

		newest, err := r.NewestCertificate(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, SerialHex(c2), newest.Serial)
		require.Equal(t, "dev-1", newest.DeviceID)
	})
}

func TestAddDormantCertificate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		clk := fakeClock(r)
		ca := newTestCA(t, clk.Now)
		old, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", old, true))
		clk.Advance(time.Hour)

		fresh, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.NoError(t, r.AddDormantCertificate(ctx, "dev-1", SerialHex(old), fresh, "new serial x", "192.0.2.1:4000"))
		newest, err := r.NewestCertificate(ctx, "dev-1")
		require.NoError(t, err)
		require.Equal(t, SerialHex(fresh), newest.Serial)
		entries, err := r.ListAudit(ctx, 1, 0)
		require.NoError(t, err)
		require.Equal(t, AuditEntry{ID: entries[0].ID, At: clk.Now().UTC().Truncate(time.Millisecond), Actor: "device:dev-1",
			Action: ActionCertificateDormant, Target: "dev-1", Detail: "new serial x", Remote: "192.0.2.1:4000"}, entries[0])

		// The expired certificate is no longer the newest: a second request (a replay, or a
		// stolen old key) records nothing.
		clk.Advance(time.Hour)
		again, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		err = r.AddDormantCertificate(ctx, "dev-1", SerialHex(old), again, "", "")
		require.ErrorIs(t, err, ErrInvalid)
		require.ErrorContains(t, err, "no longer the newest")

		// The newest certificate revoked, or the device not active: refused.
		require.NoError(t, r.SetStatus(ctx, "dev-1", StatusSuspended, "o-test", ""))
		err = r.AddDormantCertificate(ctx, "dev-1", SerialHex(fresh), again, "", "")
		require.ErrorIs(t, err, ErrInvalid)
		require.ErrorContains(t, err, "device dev-1 is suspended")
		require.NoError(t, r.SetStatus(ctx, "dev-1", StatusRevoked, "o-test", ""))
		err = r.AddDormantCertificate(ctx, "dev-1", SerialHex(fresh), again, "", "")
		require.ErrorContains(t, err, "device dev-1 is revoked")

		// A device revoked and then set active again keeps its certificates revoked: nothing
		// is recorded for them either.
		c2, err := ca.issuer(t)("dev-2")
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, "dev-2", c2, true))
		require.NoError(t, r.SetStatus(ctx, "dev-2", StatusRevoked, "o-test", ""))
		require.NoError(t, r.SetStatus(ctx, "dev-2", StatusActive, "o-test", ""))
		err = r.AddDormantCertificate(ctx, "dev-2", SerialHex(c2), again, "", "")
		require.ErrorContains(t, err, "was revoked")

		certs, err := r.DeviceCertificates(ctx, "dev-1")
		require.NoError(t, err)
		require.Len(t, certs, 2, "refused requests recorded nothing")
		require.ErrorIs(t, r.AddDormantCertificate(ctx, "nope", SerialHex(old), again, "", ""), ErrNotFound)
		require.ErrorIs(t, r.AddDormantCertificate(ctx, "dev-1", "zz", again, "", ""), ErrInvalid)
	})
}
