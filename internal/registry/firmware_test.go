package registry

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReleases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, r *Registry) {
		ctx := context.Background()
		sha := strings.Repeat("ab", 32)
		rel := Release{Version: "2.1.0", Model: "gw-200", SHA256: sha, Size: 1 << 20, MinFrom: "2.0.0", Notes: "fixes the modem driver",
			Manifest: `{"manifest":"…","signatures":[]}`, UploadedBy: "operator:ana"}
		require.NoError(t, r.AddRelease(ctx, rel, "10.0.0.1"))
		require.ErrorIs(t, r.AddRelease(ctx, rel, ""), ErrExists, "a release is never replaced")
		other := rel
		other.Model = "gw-300" // the same artifact for another model
		require.NoError(t, r.AddRelease(ctx, other, ""))

		got, err := r.Release(ctx, "2.1.0", "gw-200")
		require.NoError(t, err)
		require.Equal(t, rel.SHA256, got.SHA256)
		require.Equal(t, "2.0.0", got.MinFrom)
		require.Equal(t, testStart, got.UploadedAt)
		_, err = r.Release(ctx, "9.9.9", "gw-200")
		require.ErrorIs(t, err, ErrNotFound)
		all, err := r.Releases(ctx, "")
		require.NoError(t, err)
		require.Len(t, all, 2)
		mine, err := r.Releases(ctx, "gw-300")
		require.NoError(t, err)
		require.Len(t, mine, 1)

		// Not while a device runs it.
		_, err = r.CreateDevice(ctx, "dev-1", nil, nil, "test", "")
		require.NoError(t, err)
		require.NoError(t, r.ReportFacts(ctx, "dev-1", "gw-200", "", "2.1.0", testStart, 0))
		_, _, err = r.DeleteRelease(ctx, "2.1.0", "gw-200", "operator:ana", "")
		require.ErrorIs(t, err, ErrInUse)
		require.NoError(t, r.ReportFacts(ctx, "dev-1", "", "", "2.1.1", testStart, 0))
		got2, shared, err := r.DeleteRelease(ctx, "2.1.0", "gw-200", "operator:ana", "")
		require.NoError(t, err)
		require.Equal(t, sha, got2)
		require.True(t, shared, "gw-300's release still uses the artifact")
		_, shared, err = r.DeleteRelease(ctx, "2.1.0", "gw-300", "operator:ana", "")
		require.NoError(t, err)
		require.False(t, shared, "the last release of the artifact: the file may go")
		audit, err := r.ListAudit(ctx, 10, 0)
		require.NoError(t, err)
		require.Equal(t, ActionFirmwareDelete, audit[0].Action)

		for _, bad := range []Release{
			{Model: "m", SHA256: sha, Size: 1, Manifest: "x"},
			{Version: "1", SHA256: sha, Size: 1, Manifest: "x"},
			{Version: "1", Model: "m", SHA256: "ABC", Size: 1, Manifest: "x"},
			{Version: "1", Model: "m", SHA256: sha, Size: 0, Manifest: "x"},
			{Version: "1", Model: "m", SHA256: sha, Size: 1},
			{Version: strings.Repeat("1", 65), Model: "m", SHA256: sha, Size: 1, Manifest: "x"},
			{Version: "1\n", Model: "m", SHA256: sha, Size: 1, Manifest: "x"},
		} {
			require.ErrorIs(t, r.AddRelease(ctx, bad, ""), ErrInvalid, "%+v", bad)
		}
	})
}
