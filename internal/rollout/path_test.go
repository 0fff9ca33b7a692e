package rollout

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestUpgradePath: a device four versions behind reaches the target through the hops the
// archive's min_from values require, the fewest of them and the newest ones.
func TestUpgradePath(t *testing.T) {
	archive := []Release{
		{Version: "1.0.0"},
		{Version: "1.1.0"},
		{Version: "1.2.0", MinFrom: "1.1.0"},
		{Version: "2.0.0", MinFrom: "1.2.0"}, // migrates the data format: everyone passes through 1.2.x
		{Version: "2.0.1", MinFrom: "1.2.0"},
		{Version: "2.1.0", MinFrom: "2.0.0"},
		{Version: "3.0.0", MinFrom: "2.1.0"},
	}
	for _, c := range []struct {
		running, target string
		want            []string
	}{
		{"1.0.0", "3.0.0", []string{"1.1.0", "1.2.0", "2.0.1", "2.1.0", "3.0.0"}}, // four versions behind and more
		{"1.1.0", "3.0.0", []string{"1.2.0", "2.0.1", "2.1.0", "3.0.0"}},
		{"2.0.0", "3.0.0", []string{"2.1.0", "3.0.0"}},
		{"2.1.0", "3.0.0", []string{"3.0.0"}},
		{"1.2.0", "2.0.1", []string{"2.0.1"}},
		{"3.0.0", "3.0.0", nil},
	} {
		got, err := UpgradePath(archive, c.running, c.target)
		require.NoError(t, err, "%s → %s", c.running, c.target)
		require.Equal(t, c.want, got, "%s → %s", c.running, c.target)
	}

	// A version the archive lacks, a downgrade, a gap no release bridges, a malformed version.
	_, err := UpgradePath(archive, "1.0.0", "4.0.0")
	require.ErrorIs(t, err, ErrNoPath)
	_, err = UpgradePath(archive, "3.0.0", "2.1.0")
	require.ErrorIs(t, err, ErrNoPath)
	_, err = UpgradePath([]Release{{Version: "2.0.0", MinFrom: "1.5.0"}}, "1.0.0", "2.0.0")
	require.ErrorIs(t, err, ErrNoPath)
	_, err = UpgradePath(archive, "one", "3.0.0")
	require.Error(t, err)
}
