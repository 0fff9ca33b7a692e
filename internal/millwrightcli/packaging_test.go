package millwrightcli

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// unitDirective returns the value of the first line "key=value" of a systemd unit file.
func unitDirective(t *testing.T, path, key string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	require.NoError(t, sc.Err())
	t.Fatalf("%s: no %s=", path, key)
	return ""
}

// TestServerUnit: the server's systemd unit runs `millwright server` with flags it takes and
// the example configuration it ships, which load, and systemd-analyze finds nothing wrong in
// it (where systemd is installed).
func TestServerUnit(t *testing.T) {
	const unit = "../../packaging/millwright.service"
	cmdline := strings.Fields(unitDirective(t, unit, "ExecStart"))
	require.Equal(t, "/usr/bin/millwright", cmdline[0])
	require.Equal(t, "server", cmdline[1])
	args := cmdline[2:]
	for i, a := range args {
		if a == "--config" {
			args[i+1] = "../../packaging/server.example.yml" // installed as /etc/millwright/server.yml
		}
	}
	c := newServerCommand()
	require.NoError(t, c.cmd.ParseFlags(args))
	cfg, err := c.resolve()
	require.NoError(t, err)
	require.Equal(t, "/var/lib/millwright", cfg.DataDir)
	require.Equal(t, "/var/lib/millwright", unitDirective(t, unit, "WorkingDirectory"))
	require.Equal(t, "millwright", unitDirective(t, unit, "StateDirectory"))

	analyzeUnit(t, unit)
}

// analyzeUnit runs systemd-analyze verify on a copy of unit whose binary is this test's, when
// systemd-analyze is installed.
func analyzeUnit(t *testing.T, unit string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: unit not verified")
		return
	}
	b, err := os.ReadFile(unit)
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	dir := t.TempDir()
	copyPath := filepath.Join(dir, filepath.Base(unit))
	require.NoError(t, os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(b), "/usr/bin/millwright", self)), 0o644))
	out, err := exec.Command(sa, "verify", "--man=no", copyPath).CombinedOutput()
	require.NoError(t, err, "systemd-analyze verify %s:\n%s", unit, out)
	require.Empty(t, strings.TrimSpace(string(out)), "systemd-analyze verify %s", unit)
}
