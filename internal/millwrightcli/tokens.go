package millwrightcli

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
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
	cmd.AddCommand(create)
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
