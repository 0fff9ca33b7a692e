package millwrightcli

import (
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

func newOperatorsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "operators", Short: "API tokens for people and tools (admin only)"}

	var cf clientFlags
	var role string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an operator; prints its API token once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out apitypes.OperatorCreated
			body := apitypes.OperatorRequest{Name: args[0], Role: apitypes.Role(role)}
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/operators", body, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	cf.add(create)
	create.Flags().StringVar(&role, "role", "viewer", "admin, operator or viewer")

	var lf clientFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List operators",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			var ops []apitypes.Operator
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/operators", nil, &ops); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), ops)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tROLE\tCREATED\tREVOKED")
			for _, o := range ops {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", o.ID, o.Name, o.Role, when(o.CreatedAt), when(o.RevokedAt))
			}
			return w.Flush()
		},
	}
	lf.add(list)

	var (
		rf  clientFlags
		yes bool
	)
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an operator's token",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, yes, "revoke operator "+args[0]+"'s token"); err != nil {
				return err
			}
			c, err := rf.client()
			if err != nil {
				return err
			}
			var out apitypes.OperatorRevoked
			if err := c.call(cmd.Context(), http.MethodDelete, "/api/v1/operators/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "revoked", out.Revoked)
			return nil
		},
	}
	rf.add(revoke)
	revoke.Flags().BoolVarP(&yes, "yes", "y", false, "revoke without asking")
	cmd.AddCommand(create, list, revoke)
	return cmd
}
