package millwrightcli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

func newAuditCmd() *cobra.Command {
	var (
		cf     clientFlags
		limit  int
		before int64
	)
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [--before ID]",
		Short: "List the audit log, newest first: who did what to which device, token, operator, rollout (admin only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > 10000 {
				return usageError{fmt.Errorf("invalid --limit %d: want 1 to 10000", limit)}
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if before > 0 {
				q.Set("before", strconv.FormatInt(before, 10))
			}
			var out []apitypes.AuditEntry
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if n := len(out); n == limit {
				defer printMore(cmd, c.json, fmt.Sprintf("--before %d", out[n-1].ID))
			}
			if c.json {
				if out == nil {
					out = []apitypes.AuditEntry{}
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tAT\tACTOR\tACTION\tTARGET\tDETAIL\tREMOTE")
			for _, e := range out {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, when(e.At), e.Actor, e.Action, dash(e.Target), dash(e.Detail), dash(e.Remote))
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many entries (1 to 10000)")
	cmd.Flags().Int64Var(&before, "before", 0, "only entries older than this entry ID (the next page)")
	return cmd
}
