package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestOperators(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		admin, adminTok, err := r.CreateOperator(ctx, "Alice Admin", RoleAdmin, "bootstrap", "")
		require.NoError(t, err)
		require.Regexp(t, `^o-[0-9a-f]{12}$`, admin.ID)
		require.True(t, strings.HasPrefix(adminTok, OperatorTokenPrefix))
		require.Len(t, adminTok, len(OperatorTokenPrefix)+43)
		require.Equal(t, testStart, admin.CreatedAt)

		fakeClock(r).Advance(time.Second)
		viewer, viewerTok, err := r.CreateOperator(ctx, "grafana", RoleViewer, admin.ID, "10.0.0.5")
		require.NoError(t, err)
		_, _, err = r.CreateOperator(ctx, "grafana", RoleOperator, admin.ID, "")
		require.ErrorIs(t, err, ErrExists)
		_, _, err = r.CreateOperator(ctx, "x", "root", admin.ID, "")
		require.ErrorIs(t, err, ErrInvalid)
		_, _, err = r.CreateOperator(ctx, "", RoleViewer, admin.ID, "")
		require.ErrorIs(t, err, ErrInvalid)

		got, err := r.AuthenticateOperator(ctx, adminTok)
		require.NoError(t, err)
		require.Equal(t, admin, got)
		got, err = r.AuthenticateOperator(ctx, viewerTok)
		require.NoError(t, err)
		require.Equal(t, RoleViewer, got.Role)
		for _, bad := range []string{"", adminTok[:len(adminTok)-1], adminTok + "A", "mwe_" + adminTok[4:], newToken(OperatorTokenPrefix)} {
			_, err := r.AuthenticateOperator(ctx, bad)
			require.ErrorIs(t, err, ErrTokenInvalid, "token %q", bad)
		}

		// Only hashes at rest.
		var n int
		require.NoError(t, r.db.QueryRowContext(ctx, `SELECT count(*) FROM operators WHERE token_hash = $1`, adminTok).Scan(&n))
		require.Zero(t, n)

		fakeClock(r).Advance(time.Second)
		require.NoError(t, r.RevokeOperator(ctx, viewer.ID, admin.ID, "10.0.0.1"))
		require.NoError(t, r.RevokeOperator(ctx, viewer.ID, admin.ID, "10.0.0.1"))
		require.ErrorIs(t, r.RevokeOperator(ctx, "o-000000000000", admin.ID, ""), ErrNotFound)
		_, err = r.AuthenticateOperator(ctx, viewerTok)
		require.ErrorIs(t, err, ErrTokenInvalid)

		ops, err := r.ListOperators(ctx)
		require.NoError(t, err)
		require.Len(t, ops, 2)
		require.Equal(t, admin, ops[0])
		require.Equal(t, viewer.ID, ops[1].ID)
		require.Equal(t, testStart.Add(2*time.Second), ops[1].RevokedAt)

		// A revoked operator's name is free again.
		_, _, err = r.CreateOperator(ctx, "grafana", RoleViewer, admin.ID, "")
		require.NoError(t, err)
	})
}
