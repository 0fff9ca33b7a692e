package millwrightcli

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestServerDataDirInUse: millwright server on the data directory of a server process that
// runs says which process has it, and starts once that process was killed with SIGKILL.
func TestServerDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	first := startServerProcess(t, dir)
	code, _, stderr := run("server", "--data", dir, "--mqtt-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, fmt.Sprintf("data directory %s in use by PID %d", dir, first.cmd.Process.Pid))

	first.kill()
	first.start()
}
