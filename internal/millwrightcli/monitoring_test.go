package millwrightcli

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/api/apitypes"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
)

// TestDevicesLivenessAndSessions drives millwright devices list --silent, devices liveness
// and devices sessions against a real server: one device stays connected, one connects once
// and goes quiet, and turns silent after 3 × its (here 1 s) interval.
func TestDevicesLivenessAndSessions(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, func(o *server.Options) {
		o.Monitor.Interval = time.Second
		o.Monitor.DefaultInterval = time.Second
	})
	cli := newCLI(t, srv)
	connectDevice(t, srv, "busy-1", cli.device("busy-1"), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := &tls.Config{RootCAs: srv.CA().Pool(), Certificates: []tls.Certificate{cli.device("quiet-1")}, ServerName: "localhost"}
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", srv.MQTTAddr().String())
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: "quiet-1"})
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "quiet-1", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	require.NoError(t, c.Disconnect(&paho.Disconnect{}))

	var silent []apitypes.DeviceLiveness
	require.Eventually(t, func() bool {
		silent = nil
		decodeStrict(t, cli.ok("devices", "list", "--silent", "-o", "json"), &silent)
		return len(silent) == 1
	}, 30*time.Second, 200*time.Millisecond)
	require.Equal(t, "quiet-1", silent[0].Device)
	require.Equal(t, "default", silent[0].IntervalSource)
	table := cli.ok("devices", "list", "--silent")
	require.Contains(t, table, "quiet-1")
	require.NotContains(t, table, "busy-1")

	counts := cli.ok("devices", "liveness")
	require.Regexp(t, `-\s+1\s+1\s+0`, counts, "one online, one silent: %s", counts)
	var byModel apitypes.LivenessCounts
	decodeStrict(t, cli.ok("devices", "liveness", "--by", "model", "-o", "json"), &byModel)
	require.Equal(t, "model", byModel.By)

	var sessions apitypes.SessionList
	require.Eventually(t, func() bool {
		sessions = apitypes.SessionList{}
		decodeStrict(t, cli.ok("devices", "sessions", "quiet-1", "-o", "json"), &sessions)
		return len(sessions.Sessions) == 1
	}, 30*time.Second, 200*time.Millisecond)
	require.Equal(t, "clean", sessions.Sessions[0].Cause)
	require.True(t, strings.Contains(cli.ok("devices", "sessions", "quiet-1"), "clean"))

	code, _, stderr := cli.run("", "devices", "list", "--state", "asleep")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(bad_data)")
	code, _, stderr = cli.run("", "devices", "list", "--silent", "--status", "active")
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "do not take --status")
	code, _, stderr = cli.run("", "devices", "sessions", "nobody")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "(not_found)")
}
