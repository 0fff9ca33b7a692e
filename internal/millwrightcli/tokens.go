package millwrightcli

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/registry"
)

func newTokensCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "tokens", Short: "One-time enrollment tokens"}
	var (
		cf       clientFlags
		count    int
		expires  time.Duration
		model    string
		tags     []string
		deviceID string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create one-time enrollment tokens; prints one token per line",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 1 || count > apitypes.MaxTokensPerRequest {
				return usageError{fmt.Errorf("invalid --count %d: want 1 to %d", count, apitypes.MaxTokensPerRequest)}
			}
			if expires <= 0 {
				return usageError{fmt.Errorf("invalid --expires %s: must be positive", expires)}
			}
			tagMap, err := parseTags(tags)
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out apitypes.TokensCreated
			body := apitypes.TokensRequest{Count: count, Expires: expires.String(), Model: model, Tags: tagMap, DeviceID: deviceID}
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/enrollment-tokens", body, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			for _, t := range out.Tokens {
				fmt.Fprintln(cmd.OutOrStdout(), t)
			}
			return nil
		},
	}
	cf.add(create)
	f := create.Flags()
	f.IntVar(&count, "count", 1, "how many tokens")
	expires = 24 * time.Hour // before f.Var, which takes the default shown in --help
	f.Var(durationFlag{&expires}, "expires", "how long the tokens stay usable")
	f.StringVar(&model, "model", "", "hardware model the enrolling device must state")
	f.StringSliceVar(&tags, "tag", nil, "key=value tag given to the enrolled device (repeatable)")
	f.StringVar(&deviceID, "device", "", "device ID bound to the token (with --count 1)")

	var (
		lf  clientFlags
		all bool
	)
	list := &cobra.Command{
		Use:   "list [--all]",
		Short: "List the enrollment tokens still usable (with --all, used and expired ones too); never their secrets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			var out apitypes.TokenList
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/enrollment-tokens?"+url.Values{"all": {strconv.FormatBool(all)}}.Encode(), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out.Tokens)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID	STATE	MODEL	DEVICE	TAGS	CREATED BY	EXPIRES	USED BY")
			for _, t := range out.Tokens {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.State, dash(t.Model), dash(t.DeviceID), tagString(t.Tags),
					t.CreatedBy, when(t.ExpiresAt), dash(t.UsedBy))
			}
			return w.Flush()
		},
	}
	lf.add(list)
	list.Flags().BoolVar(&all, "all", false, "also the used and expired tokens")

	var rf clientFlags
	revoke := &cobra.Command{
		Use:   "revoke ID|TOKEN...",
		Short: "Revoke unused enrollment tokens, by ID (tokens list) or by the token itself, so they enroll no device",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client()
			if err != nil {
				return err
			}
			for _, a := range args {
				id := a
				if strings.HasPrefix(a, registry.EnrollmentTokenPrefix) {
					id = registry.EnrollmentTokenID(a)
				}
				var out apitypes.TokenRevoked
				if err := c.call(cmd.Context(), http.MethodDelete, "/api/v1/enrollment-tokens/"+url.PathEscape(id), nil, &out); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "revoked", out.Revoked)
			}
			return nil
		},
	}
	rf.add(revoke)
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func parseTags(tags []string) (map[string]string, error) {
	out := map[string]string{}
	for _, t := range tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return nil, usageError{fmt.Errorf("invalid --tag %q: want key=value", t)}
		}
		out[k] = v
	}
	return out, nil
}
