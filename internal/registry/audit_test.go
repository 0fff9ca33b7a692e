package registry

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAuditEveryMutation performs every kind of change and checks each wrote its entry.
func TestAuditEveryMutation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		step := func() { fakeClock(r).Advance(time.Millisecond) }

		toks, err := r.CreateEnrollmentTokens(ctx, TokenSpec{Count: 2}, "o-admin")
		require.NoError(t, err)
		step()
		_, err = r.CreateDevice(ctx, "dev-1", map[string]string{"k": "v"}, []string{"g"}, "o-admin", "10.0.0.1")
		require.NoError(t, err)
		step()
		dev, _, err := r.Enroll(ctx, toks[0], "mx", "192.0.2.1", ca.issuer(t))
		require.NoError(t, err)
		step()
		c, err := ca.issuer(t)("dev-1")
		require.NoError(t, err)
		require.NoError(t, r.AddCertificate(ctx, "dev-1", c, false))
		step()
		require.NoError(t, r.SetStatus(ctx, dev.ID, StatusSuspended, "o-admin", "10.0.0.1"))
		step()
		require.NoError(t, r.SetTags(ctx, dev.ID, map[string]string{"b": "2", "a": "1"}, []string{"c"}, "o-admin", "10.0.0.1"))
		step()
		require.NoError(t, r.SetGroups(ctx, dev.ID, []string{"x", "y"}, []string{"z"}, "o-admin", "10.0.0.1"))
		step()
		require.NoError(t, r.ReportFacts(ctx, dev.ID, "", "", "2.0", time.Time{}, 0))
		step()
		op, _, err := r.CreateOperator(ctx, "bob", RoleOperator, "o-admin", "10.0.0.1")
		require.NoError(t, err)
		step()
		require.NoError(t, r.RevokeOperator(ctx, op.ID, "o-admin", "10.0.0.1"))
		step()
		require.NoError(t, r.DeleteEnrollmentToken(ctx, EnrollmentTokenID(toks[1]), "o-admin", "10.0.0.1"))
		step()
		require.NoError(t, r.Audit(ctx, "o-admin", "login", "", "via API", "10.0.0.1"))
		require.ErrorIs(t, r.Audit(ctx, "", "login", "", "", ""), ErrInvalid)

		entries, err := r.ListAudit(ctx, 0, 0)
		require.NoError(t, err)
		type row struct{ actor, action, target, detail, remote string }
		var got []row
		for i := len(entries) - 1; i >= 0; i-- {
			e := entries[i]
			got = append(got, row{e.Actor, e.Action, e.Target, e.Detail, e.Remote})
		}
		id0, id1 := EnrollmentTokenID(toks[0]), EnrollmentTokenID(toks[1])
		expires := "expires " + testStart.Add(DefaultTokenTTL).Format(time.RFC3339)
		require.Equal(t, []row{
			{"o-admin", ActionTokenCreate, id0, expires, ""},
			{"o-admin", ActionTokenCreate, id1, expires, ""},
			{"o-admin", ActionDeviceCreate, "dev-1", "tags k=v groups g", "10.0.0.1"},
			{"enroll:" + id0, ActionDeviceEnroll, dev.ID, "certificate " + mustCert(t, r, dev.ID).Serial + ` model "mx"`, "192.0.2.1"},
			{"system", ActionCertificateAdd, "dev-1", "certificate " + SerialHex(c), ""},
			{"o-admin", ActionDeviceStatus, dev.ID, "active -> suspended", "10.0.0.1"},
			{"o-admin", ActionDeviceTags, dev.ID, "set a=1,b=2 removed c", "10.0.0.1"},
			{"o-admin", ActionDeviceGroups, dev.ID, "added x,y removed z", "10.0.0.1"},
			{"device:" + dev.ID, ActionDeviceFacts, dev.ID, `firmware "" -> "2.0"`, ""},
			{"o-admin", ActionOperatorCreate, op.ID, `name "bob" role operator`, "10.0.0.1"},
			{"o-admin", ActionOperatorRevoke, op.ID, `name "bob"`, "10.0.0.1"},
			{"o-admin", ActionTokenDelete, id1, "", "10.0.0.1"},
			{"o-admin", "login", "", "via API", "10.0.0.1"},
		}, got)

		// Newest first, increasing IDs, times from the clock; paging with beforeID.
		for i, e := range entries {
			if i > 0 {
				require.Less(t, e.ID, entries[i-1].ID)
			}
		}
		require.Equal(t, fakeClock(r).Now(), entries[0].At)
		var paged []AuditEntry
		for before := int64(0); ; {
			page, err := r.ListAudit(ctx, 5, before)
			require.NoError(t, err)
			if len(page) == 0 {
				break
			}
			paged = append(paged, page...)
			before = page[len(page)-1].ID
		}
		require.Equal(t, entries, paged)
	})
}

func mustCert(t *testing.T, r *Registry, deviceID string) *Certificate {
	t.Helper()
	certs, err := r.DeviceCertificates(context.Background(), deviceID)
	require.NoError(t, err)
	require.Len(t, certs, 1)
	return &certs[0]
}

// TestPruneAudit deletes the entries older than the cutoff in batches and keeps the rest.
func TestPruneAudit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		for i := range 7 {
			require.NoError(t, r.Audit(ctx, "o-admin", "test.step", "", "", ""))
			if i < 6 {
				fakeClock(r).Advance(time.Hour)
			}
		}
		cutoff := fakeClock(r).Now().Add(-150 * time.Minute) // the last three are newer
		n, err := r.PruneAudit(ctx, cutoff, 2)
		require.NoError(t, err)
		require.Equal(t, int64(4), n)
		left, err := r.ListAudit(ctx, 100, 0)
		require.NoError(t, err)
		var steps int
		for _, e := range left {
			if e.Action == "test.step" {
				steps++
				require.False(t, e.At.Before(cutoff))
			}
		}
		require.Equal(t, 3, steps)
		n, err = r.PruneAudit(ctx, cutoff, 0)
		require.NoError(t, err)
		require.Zero(t, n)
	})
}
