package millwrightcli

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
)

func newFeedbackCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "feedback", Short: "Record feedback and incidents against devices, counted per firmware version (docs/rollouts.md)"}

	var (
		af  clientFlags
		req api.FeedbackRequest
		at  string
	)
	add := &cobra.Command{
		Use:   "add DEVICE --kind feedback|incident|crash [--severity info|warning|critical] [--message TEXT] [--source NAME] [--at TIME]",
		Short: "Record a feedback event against a device, with the firmware version it runs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			body := req
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--at %q: want a time such as 2026-12-05T08:00:00Z", at)
				}
				body.At = t
			}
			var f registry.Feedback
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/devices/"+url.PathEscape(args[0])+"/feedback", body, &f); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), f)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "feedback %d: %s %s on %s (firmware %s)\n", f.ID, f.Severity, f.Kind, f.Device, dash(f.Firmware))
			return err
		},
	}
	af.add(add)
	f := add.Flags()
	f.StringVar(&req.Kind, "kind", "", "feedback, incident or crash (required)")
	f.StringVar(&req.Severity, "severity", "warning", "info, warning or critical")
	f.StringVar(&req.Message, "message", "", "what happened (at most 2000 bytes)")
	f.StringVar(&req.Source, "source", "", "the integration recording it, such as a ticketing system (at most 100 bytes)")
	f.StringVar(&at, "at", "", "when it happened, RFC 3339 (default now)")
	_ = add.MarkFlagRequired("kind")

	var (
		lf     clientFlags
		filter registry.FeedbackFilter
		pg     *pager
	)
	list := &cobra.Command{
		Use:   "list [--device ID] [--firmware V] [--kind K]",
		Short: "List feedback events, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			q, err := pg.query()
			if err != nil {
				return err
			}
			for k, v := range map[string]string{"device": filter.Device, "firmware": filter.Firmware, "kind": filter.Kind} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var out api.FeedbackList
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/feedback?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if n := len(out.Events); n > 0 {
				defer pg.more(cmd, c.json, n, out.Events[n-1].ID)
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tAT\tDEVICE\tFIRMWARE\tKIND\tSEVERITY\tSOURCE\tMESSAGE")
			for _, e := range out.Events {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, when(e.At), e.Device, dash(e.Firmware), e.Kind, e.Severity, e.Source, dash(e.Message))
			}
			return w.Flush()
		},
	}
	lf.add(list)
	f = list.Flags()
	f.StringVar(&filter.Device, "device", "", "only this device's")
	f.StringVar(&filter.Firmware, "firmware", "", "only events recorded while the device ran this version")
	f.StringVar(&filter.Kind, "kind", "", "only this kind (feedback, incident, crash)")
	pg = addPager(list, 100, 1000, "events")

	var (
		sf    clientFlags
		since string
	)
	summary := &cobra.Command{
		Use:   "summary [--since 7d]",
		Short: "Count feedback events per firmware version and kind",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var out api.FeedbackSummary
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/feedback/summary?"+url.Values{"since": {since}}.Encode(), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "since %s\n", when(out.Since))
			fmt.Fprintln(w, "FIRMWARE\tKIND\tEVENTS\tDEVICES\tON VERSION")
			for _, c := range out.Counts {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", dash(c.Firmware), c.Kind, c.Events, c.Devices, c.Fleet)
			}
			return w.Flush()
		},
	}
	sf.add(summary)
	summary.Flags().StringVar(&since, "since", "7d", "count the events of this long back from now (24h, 7d)")
	cmd.AddCommand(add, list, summary)
	return cmd
}
