package dnsserver_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/miekg/dns"

	"github.com/millwright/millwright/internal/dnsserver"
	"github.com/millwright/millwright/internal/registry"
)

// A registry with a default cluster and one device routed elsewhere, served on a free
// loopback port, asked for two device names.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "dnsserver-example")
	defer os.RemoveAll(dir)
	reg, err := registry.Open(ctx, "sqlite://"+filepath.Join(dir, "registry.db"), "", nil)
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	_, _ = reg.CreateDevice(ctx, "pump-7", nil, nil, "example", "")
	_, _ = reg.AddCluster(ctx, registry.Cluster{Name: "eu-1", Default: true, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}, "example", "")
	_, _ = reg.AddCluster(ctx, registry.Cluster{Name: "debug", Addresses: []netip.Addr{netip.MustParseAddr("203.0.113.7")}}, "example", "")
	_, _, _ = reg.SetRoute(ctx, registry.Route{Scope: registry.RouteDevice, Selector: "pump-7", Cluster: "debug"}, "example", "")

	opts := dnsserver.DefaultOptions()
	opts.Zone, opts.Listen = "gw.example.org", "127.0.0.1:0"
	srv, err := dnsserver.New(opts, reg, nil, nil, nil)
	if err != nil {
		panic(err)
	}
	if err := srv.Start(ctx); err != nil {
		panic(err)
	}
	defer srv.Stop()
	for _, name := range []string{"pump-7.gw.example.org.", "pump-8.gw.example.org."} {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, err := dns.Exchange(q, srv.Addr().String())
		if err != nil {
			panic(err)
		}
		fmt.Println(name, r.Answer[0].(*dns.A).A)
	}
	// Output:
	// pump-7.gw.example.org. 203.0.113.7
	// pump-8.gw.example.org. 192.0.2.1
}
