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
)

// newSessionsCmd is `millwright devices sessions ID`: the device's connection history.
func newSessionsCmd() *cobra.Command {
	var (
		cf clientFlags
		pg *pager
	)
	cmd := &cobra.Command{
		Use:   "sessions ID",
		Short: "Show a device's connection history, newest first: when, how long, why it ended, traffic",
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
			var page apitypes.SessionList
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/devices/"+url.PathEscape(args[0])+"/sessions?"+q.Encode(), nil, &page); err != nil {
				return err
			}
			if c.json {
				if page.Next != 0 {
					defer printMore(cmd, true, fmt.Sprintf("--before %d", page.Next))
				}
				return printJSON(cmd.OutOrStdout(), page)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CONNECTED\tDURATION\tCAUSE\tRECEIVED\tSENT\tTLS\tMQTT\tREMOTE\tNODE")
			for _, s := range page.Sessions {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d B / %d\t%d B / %d\t%s\t%d\t%s\t%s\n", when(s.ConnectedAt),
					time.Duration(s.DurationSeconds*float64(time.Second)).Round(time.Second), s.Cause,
					s.ReceivedBytes, s.ReceivedMessages, s.SentBytes, s.SentMessages, dash(s.TLSVersion), s.MQTTVersion, s.Remote, dash(s.Node))
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if page.Next != 0 {
				printMore(cmd, false, fmt.Sprintf("--before %d", page.Next))
			}
			return nil
		},
	}
	cf.add(cmd)
	pg = addPager(cmd, 20, 1000, "sessions")
	return cmd
}

// listLiveness prints the active devices' liveness, filtered by q: limit of them, or with all
// every page.
func listLiveness(cmd *cobra.Command, c *apiClient, q url.Values, limit int, all bool) error {
	for k, v := range q {
		if len(v) == 0 || v[0] == "" {
			q.Del(k)
		}
	}
	q.Set("limit", strconv.Itoa(limit))
	l := apitypes.LivenessList{Devices: []apitypes.DeviceLiveness{}}
	for {
		var page apitypes.LivenessList
		if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/liveness?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		l.At, l.Devices, l.Next = page.At, append(l.Devices, page.Devices...), page.Next
		if !all || l.Next == "" {
			break
		}
		q.Set("after", l.Next)
	}
	if l.Next != "" {
		defer printMore(cmd, c.json, "more devices follow: --all lists every page")
	}
	if c.json {
		return printJSON(cmd.OutOrStdout(), l.Devices)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tLAST HEARD\tINTERVAL\tSILENT AFTER\tMODEL\tOPERATOR\tFIRMWARE")
	for _, d := range l.Devices {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s (%s)\t%s\t%s\t%s\t%s\n", d.Device, d.State, when(d.LastHeard),
			time.Duration(d.IntervalSeconds*float64(time.Second)), d.IntervalSource, when(d.SilentAfter),
			dash(d.Model), dash(d.Operator), dash(d.Firmware))
	}
	return w.Flush()
}

// newLivenessCmd is `millwright devices liveness --by firmware`: online, silent and offline
// counts.
func newLivenessCmd() *cobra.Command {
	var (
		cf clientFlags
		by string
	)
	cmd := &cobra.Command{
		Use:   "liveness",
		Short: "Count active devices online, silent and offline, for the fleet or by firmware, model, operator or group",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out apitypes.LivenessCounts
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/liveness/counts?"+url.Values{"by": {by}}.Encode(), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "%s\tONLINE\tSILENT\tOFFLINE\n", strings.ToUpper(dash(by)))
			for _, n := range out.Counts {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", dash(n.Value), n.Online, n.Silent, n.Offline)
			}
			return w.Flush()
		},
	}
	cf.add(cmd)
	cmd.Flags().StringVar(&by, "by", "", "firmware, model, operator or group (default: the whole fleet)")
	return cmd
}
