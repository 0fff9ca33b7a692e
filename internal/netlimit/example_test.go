package netlimit_test

import (
	"fmt"
	"net"

	"github.com/millwright/millwright/internal/netlimit"
)

// A listener that keeps at most 100 connections open from one source address and 10,000 in
// total, counting what it closes at accept.
func Example() {
	refused := map[netlimit.Limit]int{}
	lim := netlimit.New(netlimit.Options{PerSource: 100, Total: 10_000, OnRefuse: func(l netlimit.Limit) {
		refused[l]++ // in a server: a Prometheus counter with a "limit" label
	}})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ln := netlimit.NewListener(raw, lim)
	defer ln.Close()
	// Serve ln as any net.Listener, for example with http.Server.Serve or tls.NewListener.
	fmt.Println(lim.InProgress(), "open")
	// Output: 0 open
}
