package millwrightcli

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// confirm guards a destructive command: with --yes it goes on; with standard input a terminal
// it asks question and goes on only on "y" or "yes"; otherwise it refuses and names --yes, so
// a script never destroys by accident.
func confirm(cmd *cobra.Command, yes bool, question string) error {
	if yes {
		return nil
	}
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !isTerminal(f) {
		return usageError{fmt.Errorf("%s: give --yes to confirm (standard input is not a terminal to ask on)", question)}
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("%s: no answer: %w", question, err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed: nothing done")
}

// isTerminal reports whether w is a terminal: a file with terminal attributes (/dev/null, a
// character device too, has none).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
