package server_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent"
	"github.com/millwright/millwright/agent/source"
	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/protocol"
)

// testPostgresSchema makes a schema of its own on the test PostgreSQL server and returns a
// URL whose search_path is it; the schema is dropped when the test ends.
func testPostgresSchema(t testing.TB) string {
	t.Helper()
	base := os.Getenv("MILLWRIGHT_TEST_POSTGRES")
	if base == "" {
		base = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	db, err := sql.Open("pgx", base)
	require.NoError(t, err)
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "mwtest_" + hex.EncodeToString(b)
	_, err = db.Exec("CREATE SCHEMA " + schema)
	require.NoError(t, err, "the test needs PostgreSQL at %s", base)
	t.Cleanup(func() {
		_, err := db.Exec("DROP SCHEMA " + schema + " CASCADE")
		require.NoError(t, err)
		require.NoError(t, db.Close())
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// freePortOn finds a TCP port free on every one of hosts.
func freePortOn(t testing.TB, hosts ...string) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", hosts[0]+":0")
		require.NoError(t, err)
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		for _, h := range hosts[1:] {
			l2, err := net.Listen("tcp", fmt.Sprintf("%s:%d", h, port))
			if err != nil {
				ok = false
				break
			}
			_ = l2.Close()
		}
		_ = ln.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no port free on every host")
	return 0
}

// TestTwoServerMove: two server processes' worth of server (on 127.0.0.2 and 127.0.0.3, one
// PostgreSQL registry), a real agent that resolves <device>.<zone> through the first one's DNS.
// Moving the device to the second one's cluster through the API disconnects it with 0x9C; it
// reconnects to the second server within the stated time, and every measurement it took is
// stored once, counted with PromQL on the two servers.
func TestTwoServerMove(t *testing.T) {
	const zone = "gw.example.org"
	pg := testPostgresSchema(t)
	port := freePortOn(t, "127.0.0.2", "127.0.0.3")
	a := startServer(t, func(o *server.Options) {
		o.Database, o.Zone = pg, zone
		o.MQTT.Listen, o.HTTPListen, o.DNSListen = fmt.Sprintf("127.0.0.2:%d", port), "127.0.0.2:0", "127.0.0.2:0"
	})
	b := startServer(t, func(o *server.Options) {
		o.Database, o.Zone = pg, zone
		o.MQTT.Listen, o.HTTPListen = fmt.Sprintf("127.0.0.3:%d", port), "127.0.0.3:0"
		o.CACert, o.CAKey = filepath.Join(a.DataDir(), pki.CAFile), filepath.Join(a.DataDir(), pki.CAKeyFile)
	})
	ctx := context.Background()
	tok := a.AdminToken()
	for _, c := range []api.ClusterRequest{{Name: "site-a", Addresses: []string{"127.0.0.2"}, Default: true}, {Name: "site-b", Addresses: []string{"127.0.0.3"}}} {
		code, pr := a.apiCall(t, tok, http.MethodPost, "/api/v1/clusters", c, nil)
		require.Equal(t, http.StatusOK, code, pr.Error)
	}
	cert := a.device(t, "dev-1")

	// The agent resolves through server a's DNS.
	dnsAddr := a.DNS().Addr().String()
	dialer := &net.Dialer{Resolver: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, dnsAddr)
	}}}
	ac := agent.DefaultConfig()
	ac.Uplink.Zone, ac.Uplink.MQTTPort = zone, port
	ac.Uplink.Backoff.Base = 200 * time.Millisecond
	ac.Spool.Dir = t.TempDir()
	ac.Schedule.Interval = 100 * time.Millisecond
	ac.Schedule.Jitter = 0
	ac.Schedule.FirstSend = agent.FirstSendImmediate
	ag, err := agent.New(ac, agent.Options{Certificate: &cert, RootCAs: a.CA().Pool(), Dialer: dialer})
	require.NoError(t, err)
	actx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ag.Run(actx) }()
	t.Cleanup(func() {
		stop()
		<-done
		_ = ag.Close()
	})
	connectedTo := func(s *testServer) bool {
		for _, d := range s.MQTT().Devices() {
			if d == "dev-1" {
				return true
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return connectedTo(a) }, 20*time.Second, 10*time.Millisecond, "the agent reaches server a by DNS")

	// Measurements taken all along: one every 10 ms.
	var taken atomic.Int64
	start := float64(time.Now().UnixMilli()) / 1000
	measure := func(n int) {
		for range n {
			i := taken.Add(1)
			v := float64(i)
			require.NoError(t, ag.Sink().Write(ctx, []protocol.Record{{Name: "dns_move_probe", Time: start + float64(i)*0.01, Value: &v}}, source.ClassRaw))
			time.Sleep(10 * time.Millisecond) // the measurements' pace, not a wait for a condition
		}
	}
	measure(100)
	require.Eventually(t, func() bool { return ag.Stats().RecordsSent >= 100 }, 20*time.Second, 10*time.Millisecond, "server a acknowledged the first measurements")

	moved := time.Now()
	var change api.RouteChange
	code, pr := a.apiCall(t, tok, http.MethodPut, "/api/v1/routes", api.RouteRequest{Scope: "device", Selector: "dev-1", Cluster: "site-b"}, &change)
	require.Equal(t, http.StatusOK, code, pr.Error)
	go measure(100)
	const within = 10 * time.Second
	require.Eventually(t, func() bool { return connectedTo(b) }, within, 5*time.Millisecond, "the agent reconnects to server b")
	took := time.Since(moved)
	t.Logf("moved from 127.0.0.2 to 127.0.0.3 in %v", took)
	require.False(t, connectedTo(a))
	// Server b sees the move at its next poll of the registry; the device, connected to its
	// new cluster's address, stays.
	require.Eventually(t, func() bool { return b.metric(t, "millwright_dns_moves_total", "result", "stays") == 1 }, 10*time.Second, 10*time.Millisecond)
	require.True(t, connectedTo(b))
	st := ag.Stats()
	require.Equal(t, uint64(1), st.Reconnects["server_moved"], "one DISCONNECT 0x9C, from a only: %+v", st.Reconnects)

	// Every measurement stored once, on one server or the other.
	require.Eventually(t, func() bool { return taken.Load() == 200 && ag.Stats().RecordsSent >= 200 }, 30*time.Second, 20*time.Millisecond)
	count := func(s *testServer) float64 {
		res := s.query(t, `count_over_time(dns_move_probe[1h])`, time.Now())
		if len(res.Result) == 0 {
			return 0
		}
		var v float64
		_, err := fmt.Sscan(res.Result[0].Value[1].(string), &v)
		require.NoError(t, err)
		return v
	}
	require.Eventually(t, func() bool { return count(a)+count(b) == 200 }, 20*time.Second, 50*time.Millisecond)
	ca, cb := count(a), count(b)
	t.Logf("stored: %v on a, %v on b", ca, cb)
	require.Positive(t, ca)
	require.Positive(t, cb)

	hist, err := b.Registry().UpdateHistory(ctx, "dev-1", 10, 0)
	require.NoError(t, err)
	require.True(t, strings.Contains(hist[0].Detail, "cluster site-b"), hist[0].Detail)
}
