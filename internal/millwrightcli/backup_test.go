package millwrightcli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/backup"
	"github.com/millwright/millwright/protocol"
)

// sendBatches connects as p's device and publishes batches from..to-1 of p.per samples each
// (values n*per+k) with a string value each, QoS 1; every one must be acknowledged.
func sendBatches(t *testing.T, p *publisher, addr string, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: p.tls}).DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: p.device})
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: p.device, KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	require.Zero(t, ack.ReasonCode)
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	for n := from; n < to; n++ {
		pack := make(protocol.Pack, p.per)
		for k := range pack {
			v := float64(n*p.per + k)
			pack[k] = protocol.Record{Name: "dur", Value: &v, Time: float64(p.base+int64(v)) / 1000}
		}
		note := fmt.Sprintf("n%d", n)
		pack = append(pack, protocol.Record{Name: "dur_note", StringValue: &note, Time: float64(p.base+int64(n)) / 1000})
		payload, err := protocol.Encode(pack, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
		require.NoError(t, err)
		resp, err := c.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic(p.device), QoS: 1, Payload: payload})
		require.NoError(t, err)
		require.Less(t, resp.ReasonCode, byte(0x80), "batch %d", n)
	}
}

// answers are what the backup must keep: PromQL answers and the event list.
func (s *serverProcess) answers(device string, at time.Time) (count, sum string, events int) {
	s.t.Helper()
	scalar := func(q string) string {
		var body struct {
			Data struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		s.getAPI("/api/v1/query", url.Values{"query": {q}, "time": {strconv.FormatInt(at.Unix(), 10)}}, &body)
		require.Len(s.t, body.Data.Result, 1, q)
		return body.Data.Result[0].Value[1].(string)
	}
	var ev struct {
		Data []map[string]any `json:"data"`
	}
	s.getAPI("/api/v1/events", url.Values{"device": {device}}, &ev)
	return scalar(fmt.Sprintf(`count_over_time(dur{device=%q}[3h])`, device)), scalar(fmt.Sprintf(`sum_over_time(dur{device=%q}[3h])`, device)), len(ev.Data)
}

// TestBackupRestore backs up a running server process holding telemetry, events and a
// device, restores the archive into a new directory and starts a server there: it gives the
// same PromQL answers and events, and the device connects with its old certificate.
func TestBackupRestore(t *testing.T) {
	dir := t.TempDir()
	srv := startServerProcess(t, dir)
	p := srv.publishers("bk", 1, 50, true)[0]
	sendBatches(t, p, srv.mqttAddr, 0, 20)
	at := time.Now()
	count, sum, events := srv.answers(p.device, at)
	require.Equal(t, "1000", count)
	require.Equal(t, 20, events)

	out := filepath.Join(t.TempDir(), "millwright.tar.gz")
	code, stdout, stderr := run("backup", "--server", "https://"+srv.httpAddr, "--data", dir, "--out", out)
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "backup written to "+out)
	code, _, stderr = run("backup", "--server", "https://"+srv.httpAddr, "--data", dir, "--out", out)
	require.Equal(t, 2, code)
	require.Contains(t, stderr, "exists: give a new file")

	var audit struct {
		Data []struct {
			Actor, Action, Target string
		} `json:"data"`
	}
	srv.getAPI("/api/v1/audit", nil, &audit)
	require.NotEmpty(t, audit.Data)
	require.Equal(t, "server.backup", audit.Data[0].Action, "the newest audit entry")
	require.Equal(t, "admin", audit.Data[0].Actor)

	// The server goes on after the backup; what it takes later is not in the archive.
	sendBatches(t, p, srv.mqttAddr, 20, 21)
	srv.kill()

	restored := filepath.Join(t.TempDir(), "restored")
	code, stdout, stderr = run("restore", out, "--data", restored)
	require.Zero(t, code, stderr)
	require.Contains(t, stdout, "start it with: millwright server --data "+restored)
	code, _, stderr = run("restore", out, "--data", restored)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "restore directory not empty")

	again := startServerProcess(t, restored)
	gotCount, gotSum, gotEvents := again.answers(p.device, at)
	require.Equal(t, []any{count, sum, events}, []any{gotCount, gotSum, gotEvents})
	// The device, its certificate from before the backup, connects to the restored server.
	sendBatches(t, p, again.mqttAddr, 21, 22)
}

// TestBackupCutShort: an archive cut anywhere lacks its manifest and is refused by restore,
// which leaves no directory behind.
func TestBackupCutShort(t *testing.T) {
	srv := startServerProcess(t, t.TempDir())
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	code, _, stderr := run("backup", "--server", "https://"+srv.httpAddr, "--data", srv.dir, "--out", out)
	require.Zero(t, code, stderr)
	whole, err := os.ReadFile(out)
	require.NoError(t, err)
	f, err := os.Open(out)
	require.NoError(t, err)
	m, err := backup.Read(f)
	require.NoError(t, f.Close())
	require.NoError(t, err)
	require.Positive(t, m.Files)
	require.Equal(t, "sqlite", m.Registry)

	cut := filepath.Join(t.TempDir(), "cut.tar.gz")
	require.NoError(t, os.WriteFile(cut, whole[:len(whole)*2/3], 0o600))
	restored := filepath.Join(t.TempDir(), "r")
	code, _, stderr = run("restore", cut, "--data", restored)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "backup archive incomplete")
	_, err = os.Stat(restored)
	require.ErrorIs(t, err, os.ErrNotExist)
}
