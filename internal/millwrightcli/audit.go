package millwrightcli

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

func newAuditCmd() *cobra.Command {
	var (
		cf clientFlags
		pg *pager
	)
	cmd := &cobra.Command{
		Use:   "audit [--limit N] [--before ID]",
		Short: "List the audit log, newest first: who did what to which device, token, operator, rollout (admin only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := pg.query()
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out []apitypes.AuditEntry
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if n := len(out); n > 0 {
				defer pg.more(cmd, c.json, n, out[n-1].ID)
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
	pg = addPager(cmd, 100, 10000, "entries")
	return cmd
}
