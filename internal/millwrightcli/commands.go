package millwrightcli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

// Exit statuses of commands send and commands show --wait beyond 0 (succeeded, or queued
// without --wait), 1 (any other error) and 2 (bad flags).
const exitStillOpen = 3

const commandsExitStatus = `Exit status: 0 when the command succeeded, or was queued (without --wait); 1 when it
failed or expired, or the server refused the request; 2 for bad flags or arguments; 3 when
--wait ended before the device answered (the command stays in the mailbox until it expires:
follow it with millwright commands show ID --wait).`

func newCommandsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "commands",
		Short: "Send commands to devices and follow their outcome",
		Long: `A command waits in its device's mailbox until the device answers it or it expires: it is
sent at once while the device is connected and again at every connection until answered. Its
state is queued, delivered, acknowledged (the device has it), then succeeded, failed or
expired.`,
	}

	var (
		sf            clientFlags
		args          []string
		expires, wait time.Duration
	)
	send := &cobra.Command{
		Use:   "send ID NAME",
		Short: "Send a command to a device; with --wait, print its outcome",
		Long: `Send command NAME to device ID, with arguments --arg key=value. The command waits for the
device for --expires (default 24h, at most 1y); a device may have at most 100 commands open.
With --wait the answer waits up to that long (at most 5m) for the device's outcome and prints
it; without, the command is printed queued.

` + commandsExitStatus,
		Example: `  millwright commands send pump-1 diag.connectivity --arg probe=dns --wait 30s
  millwright commands send pump-1 diag.spool --expires 7d -o json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, a []string) error {
			body := apitypes.CommandRequest{Name: a[1]}
			var err error
			if body.Args, err = parseArgs(args); err != nil {
				return err
			}
			if expires <= 0 || expires > apitypes.MaxCommandExpiry {
				return usageError{fmt.Errorf("invalid --expires %s: want more than 0 and at most %s", formatDuration(expires), formatDuration(apitypes.MaxCommandExpiry))}
			}
			body.Expires = formatDuration(expires)
			if err := checkWait(wait); err != nil {
				return err
			}
			if wait > 0 {
				body.Wait = formatDuration(wait)
			}
			c, err := sf.client()
			if err != nil {
				return err
			}
			c.waitUpTo(wait)
			var out apitypes.Command
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/devices/"+url.PathEscape(a[0])+"/commands", body, &out); err != nil {
				return err
			}
			if err := printCommand(cmd.OutOrStdout(), c, out); err != nil {
				return err
			}
			return commandOutcome(out, wait)
		},
	}
	sf.add(send)
	f := send.Flags()
	f.StringArrayVar(&args, "arg", nil, fmt.Sprintf("key=value argument of the command (repeatable, at most %d)", apitypes.MaxCommandArgs))
	expires = apitypes.DefaultCommandExpiry // before f.Var, which takes the default shown in --help
	f.Var(durationFlag{&expires}, "expires", "how long the command waits for the device (at most 1y)")
	f.Var(durationFlag{&wait}, "wait", "wait up to this long for the outcome (at most 5m; 0: return at once)")

	var (
		lf    clientFlags
		limit int
		all   bool
	)
	list := &cobra.Command{
		Use:   "list ID",
		Short: "List a device's commands, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if limit < 1 || limit > 10000 {
				return usageError{fmt.Errorf("invalid --limit %d: want 1 to 10000", limit)}
			}
			c, err := lf.client()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			cmds := []apitypes.Command{}
			for {
				var page apitypes.CommandList
				if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/devices/"+url.PathEscape(a[0])+"/commands?"+q.Encode(), nil, &page); err != nil {
					return err
				}
				cmds = append(cmds, page.Commands...)
				if !all || page.Next == "" {
					break
				}
				q.Set("before", page.Next)
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), cmds)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tSTATE\tCREATED\tUPDATED\tOUTCOME")
			for _, m := range cmds {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Name, m.State, when(m.CreatedAt), when(m.UpdatedAt), shorten(outcome(m), 60))
			}
			return w.Flush()
		},
	}
	lf.add(list)
	list.Flags().IntVar(&limit, "limit", 100, "commands per page (1 to 10000)")
	list.Flags().BoolVar(&all, "all", false, "follow pagination to the end")

	var (
		hf       clientFlags
		showWait time.Duration
	)
	show := &cobra.Command{
		Use:   "show CMD-ID",
		Short: "Show a command and its outcome; --wait waits for the outcome",
		Long: `Show a command: its state and the device's answer. With --wait, wait up to that long (at
most 5m) for the command to end, and exit as commands send does.

` + commandsExitStatus,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkWait(showWait); err != nil {
				return err
			}
			c, err := hf.client()
			if err != nil {
				return err
			}
			c.waitUpTo(showWait)
			path := "/api/v1/commands/" + url.PathEscape(a[0])
			if showWait > 0 {
				path += "?" + url.Values{"wait": {formatDuration(showWait)}}.Encode()
			}
			var out apitypes.Command
			if err := c.call(cmd.Context(), http.MethodGet, path, nil, &out); err != nil {
				return err
			}
			if err := printCommand(cmd.OutOrStdout(), c, out); err != nil {
				return err
			}
			if showWait == 0 {
				return nil
			}
			return commandOutcome(out, showWait)
		},
	}
	hf.add(show)
	show.Flags().Var(durationFlag{&showWait}, "wait", "wait up to this long for the outcome (at most 5m; 0: answer at once)")

	cmd.AddCommand(send, list, show)
	return cmd
}

// parseArgs reads --arg key=value flags.
func parseArgs(args []string) (map[string]string, error) {
	if len(args) > apitypes.MaxCommandArgs {
		return nil, usageError{fmt.Errorf("%d --arg flags: a command takes at most %d", len(args), apitypes.MaxCommandArgs)}
	}
	if len(args) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("invalid --arg %q: want key=value", a)}
		}
		if _, dup := out[k]; dup {
			return nil, usageError{fmt.Errorf("invalid --arg %q: %s given twice", a, k)}
		}
		out[k] = v
	}
	return out, nil
}

func checkWait(d time.Duration) error {
	if d < 0 || d > apitypes.MaxCommandWait {
		return usageError{fmt.Errorf("invalid --wait %s: want 0 to %s", formatDuration(d), formatDuration(apitypes.MaxCommandWait))}
	}
	return nil
}

// waitUpTo lets a request that waits up to d for a command's outcome take that long more
// than the client's usual timeout.
func (c *apiClient) waitUpTo(d time.Duration) {
	if d > 0 {
		c.http.Timeout += d
	}
}

// commandOutcome turns a command that failed or expired, or is still open after a wait, into
// the error that sets the exit status.
func commandOutcome(m apitypes.Command, waited time.Duration) error {
	switch m.State {
	case "succeeded":
		return nil
	case "failed":
		return fmt.Errorf("command %s failed on %s: %s", m.ID, m.Device, outcome(m))
	case "expired":
		return fmt.Errorf("command %s expired before %s answered it", m.ID, m.Device)
	}
	if waited > 0 {
		return exitError{fmt.Errorf("command %s is still %s after --wait %s; follow it with: millwright commands show %s --wait 5m",
			m.ID, m.State, formatDuration(waited), m.ID), exitStillOpen}
	}
	return nil
}

// outcome is the device's answer in one line: its reason and detail, else its result.
func outcome(m apitypes.Command) string {
	var parts []string
	for _, s := range []string{m.Reason, m.Detail} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	if len(m.Result) > 0 && string(m.Result) != "null" {
		parts = append(parts, compactJSON(m.Result))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ": ")
}

func printCommand(out io.Writer, c *apiClient, m apitypes.Command) error {
	if c.json {
		return printJSON(out, m)
	}
	result := "-"
	if len(m.Result) > 0 && string(m.Result) != "null" {
		result = compactJSON(m.Result)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"ID", m.ID}, {"Device", m.Device}, {"Name", m.Name}, {"Args", tagString(m.Args)}, {"State", m.State},
		{"Reason", dash(m.Reason)}, {"Detail", dash(m.Detail)}, {"Result", result},
		{"Created", when(m.CreatedAt) + " by " + dash(m.CreatedBy)}, {"Expires", when(m.ExpiresAt)},
		{"Updated", when(m.UpdatedAt)}, {"Attempts", strconv.Itoa(m.Attempts)},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1])
	}
	return w.Flush()
}
