package millwrightcli

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSimFirmwareKeyFlag: --firmware-key names the simulated devices' trusted firmware keys;
// a missing file is a usage error naming the flag.
func TestSimFirmwareKeyFlag(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "firmware.pub")
	for _, flag := range []string{"--firmware-key"} {
		code, _, stderr := run("sim", flag, missing, "--devices", "1", "--register=false", "--data", t.TempDir(), "--duration", "1s")
		require.Equal(t, 2, code, stderr)
		require.Contains(t, stderr, "--firmware-key", flag)
		require.Contains(t, stderr, "no such file", flag)
	}
}
