package millwrightcli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/rollout"
)

func newRolloutsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rollouts", Short: "Roll a firmware release out in phases, halted by health gates (docs/rollouts.md)"}

	var (
		cf      clientFlags
		req     api.RolloutRequest
		selects []string
	)
	create := &cobra.Command{
		Use:   "create --version VERSION [--select k=v]... [--plan guide|1-5-10-100|FILE]",
		Short: "Start a rollout of a release from the archive to the devices in scope; prints the rollout's ID",
		Long: `Start a rollout of a release from the archive to the devices in scope, and print its ID
(with -o json, its whole status).

The scope is every device, narrowed by --select: model=M, group=G and operator=O select by
hardware model, group and network operator; any other key=value selects devices carrying that
tag. Selections of one key are alternatives (model=a, model=b: either model) except tags, which
must all match. --model, --group, --operator and --tag say the same.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			body := req
			for _, sel := range selects {
				k, v, ok := strings.Cut(sel, "=")
				if !ok || k == "" || v == "" {
					return fmt.Errorf("--select %q: want key=value (model=M, group=G, operator=O, or a tag k=v)", sel)
				}
				switch k {
				case "model":
					body.Models = append(body.Models, v)
				case "group":
					body.Groups = append(body.Groups, v)
				case "operator":
					body.Operators = append(body.Operators, v)
				default:
					body.Tags = append(body.Tags, sel)
				}
			}
			if body.Plan != rollout.PlanGuide && body.Plan != rollout.Plan151 {
				b, err := os.ReadFile(body.Plan)
				if err != nil {
					return fmt.Errorf("--plan %q is neither a built-in plan (%s, %s) nor a readable plan file: %w", body.Plan, rollout.PlanGuide, rollout.Plan151, err)
				}
				body.Plan, body.PlanYAML = "", string(b)
			}
			var st rollout.Status
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/rollouts", body, &st); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), st.ID)
			return err
		},
	}
	cf.add(create)
	f := create.Flags()
	f.StringVar(&req.Version, "version", "", "the release's version (required; its artifacts must be in the archive)")
	f.StringArrayVar(&selects, "select", nil, "only devices that match key=value: model=M, group=G, operator=O, or a tag k=v (repeatable)")
	f.StringVar(&req.Plan, "plan", rollout.PlanGuide, "a built-in plan (guide, 1-5-10-100) or a plan file (YAML: phases, gates, confirm, deadline, absent_after)")
	f.StringVar(&req.ID, "id", "", "the rollout's ID (default: made from the time)")
	f.StringArrayVar(&req.Models, "model", nil, "only devices of this hardware model (repeatable)")
	f.StringArrayVar(&req.Tags, "tag", nil, "only devices with this tag, key=value (repeatable: every one)")
	f.StringArrayVar(&req.Groups, "group", nil, "only devices in this group (repeatable: any one)")
	f.StringArrayVar(&req.Operators, "operator", nil, "only devices on this network operator (repeatable)")
	_ = create.MarkFlagRequired("version")

	var lf clientFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List rollouts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			var out api.RolloutList
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/rollouts", nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tRELEASE\tPLAN\tSTATE\tPHASE\tDEVICES\tSUCCEEDED\tFAILED\tCREATED")
			for _, r := range out.Rollouts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", r.ID, r.Version, r.Plan, r.State, r.PhaseName, r.Devices,
					r.Counts["succeeded"], r.Counts["failed"], when(r.CreatedAt))
			}
			return w.Flush()
		},
	}
	lf.add(list)

	var sf clientFlags
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a rollout: phases and cohorts, device states, health gates, why it halted",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var st rollout.Status
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(args[0]), nil, &st); err != nil {
				return err
			}
			return printRollout(cmd.OutOrStdout(), c.json, st)
		},
	}
	sf.add(show)

	var (
		df    clientFlags
		state string
	)
	devices := &cobra.Command{
		Use:   "devices ID [--state S]",
		Short: "List a rollout's devices: phase, versions, update state",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := df.client()
			if err != nil {
				return err
			}
			var out api.RolloutDevices
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/rollouts/"+url.PathEscape(args[0])+"/devices?"+url.Values{"state": {state}}.Encode(), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DEVICE\tPHASE\tFROM\tTARGET\tSTATE\tREPORTED\tOFFERED\tINSTALLED\tDETAIL")
			for _, d := range out.Devices {
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Device, d.Phase, dash(d.From), d.Target, d.State, dash(d.Reported),
					when(d.OfferedAt), when(d.InstalledAt), dash(d.Detail))
			}
			return w.Flush()
		},
	}
	df.add(devices)
	devices.Flags().StringVar(&state, "state", "", "only devices in this state (waiting, offered, installed, succeeded, failed, unreachable, current, no_path, reverting, reverted)")

	for _, a := range []struct{ name, short string }{
		{"pause", "Pause a running rollout: no more offers; the devices offered it are followed"},
		{"resume", "Resume a paused or halted rollout; its phase's soak starts over"},
		{"abort", "Abort a rollout: offers not yet taken are withdrawn; devices keep what they run"},
		{"rollback", "Roll back: every device that took the release is offered its previous version (upload a release of it signed --rollback first)"},
	} {
		var af clientFlags
		c := &cobra.Command{
			Use:   a.name + " ID",
			Short: a.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := af.client()
				if err != nil {
					return err
				}
				var st rollout.Status
				if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/rollouts/"+url.PathEscape(args[0])+"/"+a.name, nil, &st); err != nil {
					return err
				}
				return printRollout(cmd.OutOrStdout(), c.json, st)
			},
		}
		af.add(c)
		cmd.AddCommand(c)
	}
	cmd.AddCommand(create, list, show, devices)
	return cmd
}

// printRollout prints a rollout's status as JSON or for a person.
func printRollout(out io.Writer, asJSON bool, st rollout.Status) error {
	if asJSON {
		return printJSON(out, st)
	}
	fmt.Fprintf(out, "rollout %s: release %s, plan %s, %s\n", st.ID, st.Version, st.Plan, st.State)
	fmt.Fprintf(out, "phase %s (%d) since %s; confirm %s, deadline %s\n", st.PhaseName, st.Phase, when(st.PhaseSince), st.Confirm, st.Deadline)
	if st.HaltReason != "" {
		fmt.Fprintf(out, "halted: %s\n", st.HaltReason)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PHASE\tPERCENT\tMAX\tSELECT\tSOAK\tPLACED\tCOHORT")
	for i, p := range st.Phases {
		mark := ""
		if i == st.Phase {
			mark = " <"
		}
		fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t%s\t%d\t%d\n", p.Name, mark, strconv.FormatFloat(p.Percent, 'g', -1, 64), dashInt(p.Max), dash(p.Select), p.Soak, p.Placed, p.Cohort)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	var counts []string
	for _, s := range []string{"waiting", "offered", "installed", "succeeded", "failed", "unreachable", "current", "no_path", "reverting", "reverted"} {
		if n := st.Counts[s]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", s, n))
		}
	}
	fmt.Fprintf(out, "devices %d: %s\n", st.Devices, dash(strings.Join(counts, ", ")))
	for _, g := range st.Gates {
		fmt.Fprintf(out, "gate %s: %s\n", g.Verdict, g.Detail)
	}
	return nil
}

func dashInt(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func newUpdatesCmd() *cobra.Command {
	var (
		cf clientFlags
		pg *pager
	)
	cmd := &cobra.Command{
		Use:   "updates ID",
		Short: "Show a device's firmware update history, newest first: offers, reported phases, installs, hops, confirmations, failures",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := pg.query()
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out api.UpdateHistory
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/devices/"+url.PathEscape(args[0])+"/updates?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if n := len(out.Events); n > 0 {
				defer pg.more(cmd, c.json, n, out.Events[n-1].ID)
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tAT\tROLLOUT\tEVENT\tFROM\tTO\tDETAIL")
			for _, e := range out.Events {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, when(e.At), dash(e.Rollout), e.Event, dash(e.From), dash(e.To), dash(e.Detail))
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	pg = addPager(cmd, 100, 1000, "events")
	return cmd
}
