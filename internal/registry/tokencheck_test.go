package registry

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCheckEnrollmentToken answers as Enroll would for the token, and leaves it unused.
func TestCheckEnrollmentToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		ca := newTestCA(t, fakeClock(r).Now)
		used := oneToken(t, r, TokenSpec{})
		_, _, err := r.Enroll(ctx, used, "m", "", ca.issuer(t))
		require.NoError(t, err)
		expired := oneToken(t, r, TokenSpec{TTL: time.Hour})
		bound := oneToken(t, r, TokenSpec{Model: "mx-100", TTL: 2 * time.Hour})
		good := oneToken(t, r, TokenSpec{TTL: 2 * time.Hour})
		fakeClock(r).Advance(time.Hour)

		cases := []struct {
			name, token, model string
			want               error
		}{
			{"malformed", "mwe_" + strings.Repeat("*", 43), "m", ErrTokenInvalid},
			{"operator token", "mwo_" + strings.Repeat("A", 43), "m", ErrTokenInvalid},
			{"unknown", newToken(EnrollmentTokenPrefix), "m", ErrTokenInvalid},
			{"used", used, "m", ErrTokenUsed},
			{"expired", expired, "m", ErrTokenExpired},
			{"another model", bound, "mx-200", ErrModelMismatch},
			{"its model", bound, "mx-100", nil},
			{"usable", good, "", nil},
		}
		for _, tc := range cases {
			err := r.CheckEnrollmentToken(ctx, tc.token, tc.model)
			if tc.want == nil {
				require.NoError(t, err, tc.name)
			} else {
				require.ErrorIs(t, err, tc.want, tc.name)
			}
		}
		// The checks left the token usable.
		_, _, err = r.Enroll(ctx, good, "", "", ca.issuer(t))
		require.NoError(t, err)
	})
}
