package millwrightcli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal and returns its two ends: what the test types goes into
// master, and the command reads it from slave, a real terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	require.NoError(t, unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	require.NoError(t, err)
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestConfirmAsksOnATerminal: a destructive command asks on a terminal and goes on only on
// yes; without a terminal it refuses unless given --yes; /dev/null is not a terminal.
func TestConfirmAsksOnATerminal(t *testing.T) {
	for _, c := range []struct {
		answer string
		ok     bool
	}{{"y\n", true}, {"YES\n", true}, {"n\n", false}, {"\n", false}, {"sure\n", false}} {
		master, slave := openPTY(t)
		cmd := &cobra.Command{}
		var prompt bytes.Buffer
		cmd.SetIn(slave)
		cmd.SetErr(&prompt)
		_, err := master.WriteString(c.answer)
		require.NoError(t, err)
		err = confirm(cmd, false, "revoke device d-1")
		require.Equal(t, "revoke device d-1 [y/N] ", prompt.String())
		if c.ok {
			require.NoError(t, err, "%q", c.answer)
		} else {
			require.ErrorContains(t, err, "not confirmed: nothing done", "%q", c.answer)
		}
	}

	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	cmd := &cobra.Command{}
	cmd.SetIn(devNull)
	err = confirm(cmd, false, "delete device d-1")
	require.ErrorContains(t, err, "delete device d-1: give --yes to confirm")
	cmd.SetIn(strings.NewReader("y\n"))
	require.Error(t, confirm(cmd, false, "delete device d-1"), "a pipe is not a terminal either")
	require.NoError(t, confirm(cmd, true, "delete device d-1"))
}
