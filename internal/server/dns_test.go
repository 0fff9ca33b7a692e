package server_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

// TestDNSMove: the server answers the zone over DNS; a route set through the API changes the
// answer at once, and the moved device, connected over MQTT 5, gets DISCONNECT 0x9C with its
// own name as the Server Reference. The move is in its history.
func TestDNSMove(t *testing.T) {
	s := startServer(t, func(o *server.Options) {
		o.DNSListen = "127.0.0.1:0"
		o.Zone = "gw.example.org"
	})
	require.Eventually(t, func() bool { return s.DNS().Addr() != nil }, 10*time.Second, 10*time.Millisecond)
	dnsAddr := s.DNS().Addr()
	dig := func(name string) string {
		out, err := exec.Command("dig", "@"+dnsAddr.IP.String(), "-p", strconv.Itoa(dnsAddr.Port), "+short", "+tries=1", "+time=3", name, "A").Output()
		require.NoError(t, err)
		return strings.TrimSpace(string(out))
	}
	tok := s.AdminToken()
	code, pr := s.apiCall(t, tok, http.MethodPost, "/api/v1/clusters", api.ClusterRequest{Name: "eu-1", Addresses: []string{"192.0.2.1"}, Default: true}, nil)
	require.Equal(t, http.StatusOK, code, pr.Error)
	code, pr = s.apiCall(t, tok, http.MethodPost, "/api/v1/clusters", api.ClusterRequest{Name: "us-1", Addresses: []string{"198.51.100.1"}}, nil)
	require.Equal(t, http.StatusOK, code, pr.Error)
	require.Equal(t, "192.0.2.1", dig("dev-1.gw.example.org"))

	cert := s.device(t, "dev-1")
	disconnected := make(chan *paho.Disconnect, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: clientTLS(s.CA().Pool(), cert)}).DialContext(ctx, "tcp", s.MQTTAddr().String())
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "dev-1",
		OnServerDisconnect: func(d *paho.Disconnect) { disconnected <- d }})
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "dev-1", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)

	start := time.Now()
	var change api.RouteChange
	code, pr = s.apiCall(t, tok, http.MethodPut, "/api/v1/routes", api.RouteRequest{Scope: "device", Selector: "dev-1", Cluster: "us-1"}, &change)
	require.Equal(t, http.StatusOK, code, pr.Error)
	require.Equal(t, []string{"dev-1"}, change.Devices)
	require.Equal(t, "198.51.100.1", dig("dev-1.gw.example.org"), "the answer changed at once")
	select {
	case d := <-disconnected:
		require.Equal(t, protocol.MQTTUseAnotherServer, d.ReasonCode)
		require.Equal(t, "dev-1.gw.example.org", d.Properties.ServerReference)
		t.Logf("told to reconnect %v after the move", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT 0x9C within 10s of the move")
	}
	hist, err := s.Registry().UpdateHistory(context.Background(), "dev-1", 10, 0)
	require.NoError(t, err)
	require.NotEmpty(t, hist)
	require.Equal(t, "route", hist[0].Event)
	require.Equal(t, 1.0, s.metric(t, "millwright_dns_moves_total", "result", "moved"))
}
