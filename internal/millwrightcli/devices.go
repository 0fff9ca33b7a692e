package millwrightcli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api/apitypes"
)

func newDevicesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "devices", Short: "List, inspect, tag, group, suspend and revoke devices"}

	var (
		lf                                     clientFlags
		status, model, operator, firmware, grp string
		tags                                   []string
		limit                                  int
		all, silent                            bool
		state                                  string
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List devices",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			if silent {
				state = "silent"
			}
			if state != "" {
				if status != "" || len(tags) > 0 {
					return usageError{errors.New("--silent and --state list active devices by liveness; they do not take --status or --tag")}
				}
				return listLiveness(cmd, c, url.Values{"state": {state}, "model": {model}, "operator": {operator}, "firmware": {firmware}, "group": {grp}}, limit, all)
			}
			q := url.Values{}
			for k, v := range map[string]string{"status": status, "model": model, "operator": operator, "firmware": firmware, "group": grp} {
				if v != "" {
					q.Set(k, v)
				}
			}
			for _, t := range tags {
				q.Add("tag", t)
			}
			q.Set("limit", strconv.Itoa(limit))
			devs := []apitypes.Device{}
			next := ""
			for {
				var page apitypes.DeviceList
				if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/devices?"+q.Encode(), nil, &page); err != nil {
					return err
				}
				devs, next = append(devs, page.Devices...), page.Next
				if !all || next == "" {
					break
				}
				q.Set("after", next)
			}
			if next != "" {
				defer printMore(cmd, c.json, "more devices follow: --all lists every page")
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), devs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tSTATUS\tMODEL\tOPERATOR\tFIRMWARE\tLAST SEEN\tTAGS")
			for _, d := range devs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Status, dash(d.HardwareModel), dash(d.NetworkOperator),
					dash(d.FirmwareVersion), when(d.LastSeenAt), tagString(d.Tags))
			}
			return w.Flush()
		},
	}
	lf.add(list)
	f := list.Flags()
	f.StringVar(&status, "status", "", "pending, active, suspended or revoked")
	f.StringVar(&model, "model", "", "hardware model")
	f.StringVar(&operator, "operator", "", "network operator")
	f.StringVar(&firmware, "firmware", "", "firmware version")
	f.StringVar(&grp, "group", "", "group")
	f.StringSliceVar(&tags, "tag", nil, "key=value (repeatable; all must match)")
	f.IntVar(&limit, "limit", 100, "devices per page")
	f.BoolVar(&all, "all", false, "follow pagination to the end")
	f.BoolVar(&silent, "silent", false, "only active devices not heard from for k × their own reporting interval (--state silent)")
	f.StringVar(&state, "state", "", "only active devices in this liveness state: online, silent or offline")

	var sf clientFlags
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one device",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := sf.client()
			if err != nil {
				return err
			}
			var d apitypes.Device
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/devices/"+url.PathEscape(args[0]), nil, &d); err != nil {
				return err
			}
			return printDevice(cmd, c, d)
		},
	}
	sf.add(show)
	cmd.AddCommand(list, show)

	for _, action := range []struct {
		name, short string
		destroys    bool // asks for confirmation
	}{
		{"suspend", "Suspend a device: refused at connect, its live session closed", false},
		{"resume", "Resume a suspended device", false},
		{"revoke", "Revoke a device and all its certificates for good; its session closed and the CRL updated", true},
	} {
		var (
			af  clientFlags
			yes bool
		)
		c := &cobra.Command{
			Use:   action.name + " ID",
			Short: action.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if action.destroys {
					if err := confirm(cmd, yes, action.name+" device "+args[0]); err != nil {
						return err
					}
				}
				c, err := af.client()
				if err != nil {
					return err
				}
				var d apitypes.Device
				if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/devices/"+url.PathEscape(args[0])+"/"+action.name, nil, &d); err != nil {
					return err
				}
				return printDevice(cmd, c, d)
			},
		}
		af.add(c)
		if action.destroys {
			c.Flags().BoolVarP(&yes, "yes", "y", false, action.name+" without asking")
		}
		cmd.AddCommand(c)
	}

	var (
		df     clientFlags
		delYes bool
	)
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Erase a device: its registry record, certificates, history, series and events (admin only; asks first)",
		Long: `Erase a device for good (data protection): its registry record, tags, groups,
certificates, sessions, mailbox, configuration, update history and feedback, every series
with its device label and its events. Its live session is closed. The audit log keeps what
was done to it, and who deleted it. Revoke a device to keep its history instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, delYes, "erase device "+args[0]+" and all its data"); err != nil {
				return err
			}
			c, err := df.client()
			if err != nil {
				return err
			}
			var out apitypes.DeviceDeleted
			if err := c.call(cmd.Context(), http.MethodDelete, "/api/v1/devices/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "deleted %s: its records, certificates, series and %d event(s)\n", out.Deleted, out.Events)
			return err
		},
	}
	df.add(del)
	del.Flags().BoolVarP(&delYes, "yes", "y", false, "erase without asking")
	cmd.AddCommand(del)

	var tf clientFlags
	tag := &cobra.Command{
		Use:   "tag ID key=value...",
		Short: "Set tags on a device",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := parseTags(args[1:])
			if err != nil {
				return err
			}
			return deviceUpdate(cmd, &tf, args[0], "tags", apitypes.TagsRequest{Set: set})
		},
	}
	tf.add(tag)
	var uf clientFlags
	untag := &cobra.Command{
		Use:   "untag ID key...",
		Short: "Remove tags from a device",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deviceUpdate(cmd, &uf, args[0], "tags", apitypes.TagsRequest{Remove: args[1:]})
		},
	}
	uf.add(untag)
	var gf clientFlags
	var remove bool
	group := &cobra.Command{
		Use:   "group ID group...",
		Short: "Add a device to groups (or remove it with --remove)",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := apitypes.GroupsRequest{Add: args[1:]}
			if remove {
				body = apitypes.GroupsRequest{Remove: args[1:]}
			}
			return deviceUpdate(cmd, &gf, args[0], "groups", body)
		},
	}
	gf.add(group)
	group.Flags().BoolVar(&remove, "remove", false, "remove from the groups instead")
	cmd.AddCommand(tag, untag, group, newSessionsCmd(), newLivenessCmd(), newUpdatesCmd(), newRouteCmd())
	return cmd
}

func deviceUpdate(cmd *cobra.Command, cf *clientFlags, id, what string, body any) error {
	c, err := cf.client()
	if err != nil {
		return err
	}
	var d apitypes.Device
	if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/devices/"+url.PathEscape(id)+"/"+what, body, &d); err != nil {
		return err
	}
	return printDevice(cmd, c, d)
}

func printDevice(cmd *cobra.Command, c *apiClient, d apitypes.Device) error {
	if c.json {
		return printJSON(cmd.OutOrStdout(), d)
	}
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"ID", d.ID}, {"Status", string(d.Status)}, {"Hardware model", dash(d.HardwareModel)},
		{"Network operator", dash(d.NetworkOperator)}, {"Firmware", dash(d.FirmwareVersion)},
		{"Tags", tagString(d.Tags)}, {"Groups", dash(strings.Join(d.Groups, ","))},
		{"Created", when(d.CreatedAt)}, {"Enrolled", when(d.EnrolledAt)}, {"Last seen", when(d.LastSeenAt)},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", row[0], row[1])
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func tagString(tags map[string]string) string {
	if len(tags) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + tags[k]
	}
	return strings.Join(parts, ",")
}
