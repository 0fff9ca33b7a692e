package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/protocol"
)

// BenchmarkGroupMove times the move of a group of 1,000 connected MQTT 5 devices from a
// server on 127.0.0.2 to one on 127.0.0.3 (one PostgreSQL registry): from the API call that
// routes the group to the second cluster until every device holds a session there. Each device
// resolves <device>.<zone> through the first server's DNS on every connection, and reconnects
// when told DISCONNECT 0x9C, as the agent does.
//
//	go test -run '^$' -bench GroupMove -benchtime 1x ./internal/server/
func BenchmarkGroupMove(b *testing.B) {
	for _, rate := range []float64{100, 1000} {
		b.Run(fmt.Sprintf("devices=1000/move_rate=%v", rate), func(b *testing.B) {
			for range b.N {
				groupMove(b, 1000, rate)
			}
		})
	}
}

func groupMove(b *testing.B, n int, rate float64) {
	b.StopTimer()
	const zone = "gw.example.org"
	pg := testPostgresSchema(b)
	port := freePortOn(b, "127.0.0.2", "127.0.0.3")
	a := servertest.Start(b, func(o *server.Options) {
		o.Database, o.Zone, o.DNS.MoveRate = pg, zone, rate
		o.MQTT.Listen, o.HTTPListen, o.DNSListen = fmt.Sprintf("127.0.0.2:%d", port), "127.0.0.2:0", "127.0.0.2:0"
		o.DNS.RateLimit, o.DNS.RateBurst = 1e6, 1e6 // every device resolves from 127.0.0.1
		o.MQTT.MaxHandshakesPerSource = 1000
	})
	bs := servertest.Start(b, func(o *server.Options) {
		o.Database, o.Zone, o.DNS.MoveRate = pg, zone, rate
		o.MQTT.Listen, o.HTTPListen = fmt.Sprintf("127.0.0.3:%d", port), "127.0.0.3:0"
		o.CACert, o.CAKey = a.DataDir()+"/"+pki.CAFile, a.DataDir()+"/"+pki.CAKeyFile
		o.MQTT.MaxHandshakesPerSource = 1000
	})
	as := &testServer{Server: a, dir: a.DataDir()}
	ctx := context.Background()
	tok := a.AdminToken()
	for _, c := range []api.ClusterRequest{{Name: "site-a", Addresses: []string{"127.0.0.2"}, Default: true}, {Name: "site-b", Addresses: []string{"127.0.0.3"}}} {
		code, pr := as.apiCall(b, tok, http.MethodPost, "/api/v1/clusters", c, nil)
		require.Equal(b, http.StatusOK, code, pr.Error)
	}
	devs := make([]registry.DeviceImport, n)
	certs := make([]registry.DeviceCertificate, n)
	pairs := make([]tls.Certificate, n)
	for i := range devs {
		id := fmt.Sprintf("dev-%04d", i)
		devs[i] = registry.DeviceImport{ID: id, Groups: []string{"line-a"}}
		pairs[i] = deviceCert(b, a.CA(), id)
		certs[i] = registry.DeviceCertificate{DeviceID: id, Cert: pairs[i].Leaf}
	}
	_, err := a.Registry().ImportDevices(ctx, devs, "bench", "")
	require.NoError(b, err)
	_, err = a.Registry().AddCertificates(ctx, certs, "bench", "")
	require.NoError(b, err)

	dnsAddr := a.DNS().Addr().String()
	dialer := &net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, dnsAddr)
	}}}
	var (
		onB, moved atomic.Int64
		wg         sync.WaitGroup
	)
	stop := make(chan struct{})
	connectedA := make(chan struct{}, n)
	for i, pair := range pairs {
		id := devs[i].ID
		wg.Go(func() {
			first := true
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				conn, err := (&tls.Dialer{NetDialer: dialer, Config: clientTLS(a.CA().Pool(), pair)}).DialContext(cctx, "tcp", fmt.Sprintf("%s.%s:%d", id, zone, port))
				if err != nil {
					cancel()
					time.Sleep(50 * time.Millisecond) // a failed dial's retry pace
					continue
				}
				down := make(chan *paho.Disconnect, 1)
				c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id,
					OnServerDisconnect: func(d *paho.Disconnect) { down <- d },
					OnClientError:      func(error) { down <- nil }})
				_, err = c.Connect(cctx, &paho.Connect{ClientID: id, KeepAlive: 60, CleanStart: true})
				cancel()
				if err != nil {
					_ = conn.Close()
					continue
				}
				remote := conn.RemoteAddr().String()
				if strings.HasPrefix(remote, "127.0.0.3:") {
					onB.Add(1)
					<-stop
					_ = c.Disconnect(&paho.Disconnect{})
					return
				}
				if first {
					connectedA <- struct{}{}
					first = false
				}
				select {
				case d := <-down:
					if d != nil && d.ReasonCode == protocol.MQTTUseAnotherServer {
						moved.Add(1)
					}
				case <-stop:
					_ = c.Disconnect(&paho.Disconnect{})
					return
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for range n {
		select {
		case <-connectedA:
		case <-time.After(120 * time.Second):
			b.Fatalf("only some devices connected to server a")
		}
	}
	b.StartTimer()
	start := time.Now()
	code, pr := as.apiCall(b, tok, http.MethodPut, "/api/v1/routes", api.RouteRequest{Scope: "group", Selector: "line-a", Cluster: "site-b"}, nil)
	require.Equal(b, http.StatusOK, code, pr.Error)
	require.Eventually(b, func() bool { return onB.Load() == int64(n) }, 10*time.Minute, 10*time.Millisecond)
	took := time.Since(start)
	b.StopTimer()
	require.Equal(b, int64(n), moved.Load(), "every device was told 0x9C")
	require.Len(b, bs.MQTT().Devices(), n)
	b.ReportMetric(took.Seconds(), "s/move")
	b.ReportMetric(float64(n)/took.Seconds(), "devices/s")
	b.Logf("%d devices moved in %v at move_rate %v", n, took, rate)
}
