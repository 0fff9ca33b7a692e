package millwrightcli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/registry"
)

func newClustersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "clusters", Short: "Gateway clusters that DNS sends devices to (docs/dns.md)"}

	var (
		af  clientFlags
		req api.ClusterRequest
	)
	add := &cobra.Command{
		Use:   "add NAME --address IP [--address IP]... [--region R] [--default]",
		Short: "Add a cluster; --default makes it answer the zone's wildcard (every device without a route)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := req
			body.Name = args[0]
			for _, a := range body.Addresses {
				if _, err := netip.ParseAddr(a); err != nil {
					return usageError{fmt.Errorf("--address %q is not an IPv4 or IPv6 address", a)}
				}
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			var out registry.Cluster
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/clusters", body, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			return printClusters(cmd.OutOrStdout(), []registry.Cluster{out})
		},
	}
	af.add(add)
	add.Flags().StringArrayVar(&req.Addresses, "address", nil, "an IPv4 or IPv6 address of the cluster (repeatable; at least one)")
	add.Flags().StringVar(&req.Region, "region", "", "the cluster's region, for people")
	add.Flags().BoolVar(&req.Default, "default", false, "the default cluster: it answers every device without a route (the previous default stops being it)")
	_ = add.MarkFlagRequired("address")

	var lf clientFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List the clusters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := lf.client()
			if err != nil {
				return err
			}
			var out api.ClusterList
			if err := c.call(cmd.Context(), http.MethodGet, "/api/v1/clusters", nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			return printClusters(cmd.OutOrStdout(), out.Clusters)
		},
	}
	lf.add(list)

	var rf clientFlags
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a cluster that no route sends devices to",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := rf.client()
			if err != nil {
				return err
			}
			var out map[string]string
			if err := c.call(cmd.Context(), http.MethodDelete, "/api/v1/clusters/"+url.PathEscape(args[0]), nil, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "removed cluster %s\n", args[0])
			return err
		},
	}
	rf.add(remove)
	cmd.AddCommand(add, list, remove)
	return cmd
}

func printClusters(w io.Writer, cs []registry.Cluster) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESSES\tREGION\tDEFAULT\tDRAINING")
	for _, c := range cs {
		addrs := make([]string, len(c.Addresses))
		for i, a := range c.Addresses {
			addrs[i] = a.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%v\n", c.Name, strings.Join(addrs, ","), c.Region, c.Default, c.Draining)
	}
	return tw.Flush()
}

func newGatewaysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "gateways", Short: "Drain gateway clusters (docs/dns.md)"}
	var (
		cf   clientFlags
		rate string
		undo bool
	)
	drain := &cobra.Command{
		Use:   "drain NAME --rate N/s",
		Short: "Stop sending devices to cluster NAME and tell its connected devices to reconnect elsewhere, N a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := api.DrainRequest{Undo: undo}
			if !undo {
				r, err := parseRate(rate)
				if err != nil {
					return usageError{err}
				}
				body.Rate = r
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out api.RouteChange
			if err := c.call(cmd.Context(), http.MethodPost, "/api/v1/clusters/"+url.PathEscape(args[0])+"/drain", body, &out); err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			if undo {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "cluster %s answers again\n", args[0])
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "draining cluster %s at %v devices/s; %d routed devices move, and the connected ones of a draining default cluster\n",
				args[0], body.Rate, len(out.Devices))
			return err
		},
	}
	cf.add(drain)
	drain.Flags().StringVar(&rate, "rate", "", "devices a second told to reconnect elsewhere, such as 50/s (required unless --undo)")
	drain.Flags().BoolVar(&undo, "undo", false, "end the drain: the cluster answers again")
	cmd.AddCommand(drain)
	return cmd
}

// parseRate reads "N/s" or "N" (devices a second).
func parseRate(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "/s"), 64)
	if err != nil || v < 1 || v > api.MaxDrainRate {
		return 0, fmt.Errorf("--rate %q: want N/s with N from 1 to %d", s, api.MaxDrainRate)
	}
	return v, nil
}

func newRouteCmd() *cobra.Command {
	var (
		cf                           clientFlags
		cluster, address, group, tag string
		expires                      time.Duration
		clear                        bool
	)
	cmd := &cobra.Command{
		Use:   "route [ID | --group G | --tag k=v] (--cluster NAME | --address IP) [--expires 10m] | --clear",
		Short: "Send a device, a group or a tag selection to a cluster or an address by DNS; connected devices reconnect now",
		Long: `Send a device, a group or a tag selection to a cluster or to one address (a debug
gateway), by DNS: its name <device>.<zone> answers that from now on, and a connected device is
told to reconnect (MQTT 5 DISCONNECT 0x9C with a Server Reference). Precedence: a device's own
route, then its groups', then its tags', then the default cluster. --expires ends the route by
itself; --clear removes it. Every move is audited and in the devices' update history.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sel []string
			scope := registry.RouteDevice
			selector := ""
			if len(args) == 1 {
				sel, selector = append(sel, "ID"), args[0]
			}
			if group != "" {
				sel, scope, selector = append(sel, "--group"), registry.RouteGroup, group
			}
			if tag != "" {
				if !strings.Contains(tag, "=") {
					return usageError{fmt.Errorf("--tag %q: want key=value", tag)}
				}
				sel, scope, selector = append(sel, "--tag"), registry.RouteTag, tag
			}
			if len(sel) != 1 {
				return usageError{errors.New("give one of a device ID, --group or --tag")}
			}
			switch {
			case clear && (cluster != "" || address != "" || expires != 0):
				return usageError{errors.New("--clear takes no --cluster, --address or --expires")}
			case !clear && (cluster == "") == (address == ""):
				return usageError{errors.New("give --cluster NAME or --address IP (or --clear)")}
			case address != "":
				if _, err := netip.ParseAddr(address); err != nil {
					return usageError{fmt.Errorf("--address %q is not an IPv4 or IPv6 address", address)}
				}
			case expires < 0:
				return usageError{errors.New("--expires must be positive")}
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			var out api.RouteChange
			if clear {
				q := url.Values{"scope": {string(scope)}, "selector": {selector}}
				err = c.call(cmd.Context(), http.MethodDelete, "/api/v1/routes?"+q.Encode(), nil, &out)
			} else {
				body := api.RouteRequest{Scope: scope, Selector: selector, Cluster: cluster, Address: address}
				if expires > 0 {
					body.Expires = expires.String()
				}
				err = c.call(cmd.Context(), http.MethodPut, "/api/v1/routes", body, &out)
			}
			if err != nil {
				return err
			}
			if c.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			what := "route of " + string(scope) + " " + selector
			if clear {
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "cleared the %s; %d devices moved\n", what, len(out.Devices))
				return err
			}
			until := ""
			if !out.Route.ExpiresAt.IsZero() {
				until = " until " + out.Route.ExpiresAt.Format(time.RFC3339)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s%s; %d devices moved\n", what, out.Route.Target(), until, len(out.Devices))
			return err
		},
	}
	cf.add(cmd)
	f := cmd.Flags()
	f.StringVar(&cluster, "cluster", "", "the cluster to send them to")
	f.StringVar(&address, "address", "", "one IPv4 or IPv6 address to send them to (a debug gateway)")
	f.StringVar(&group, "group", "", "route a group's devices")
	f.StringVar(&tag, "tag", "", "route the devices with this tag, key=value")
	f.DurationVar(&expires, "expires", 0, "end the route by itself after this long, such as 10m")
	f.BoolVar(&clear, "clear", false, "remove the route")
	return cmd
}
