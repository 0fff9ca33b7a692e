package millwrightcli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

// TestMain lets a test start the real command line as a separate process: the child is this
// test binary with MILLWRIGHT_TEST_MAIN set, running Main with the arguments given in
// MILLWRIGHT_TEST_ARGS (a JSON array).
func TestMain(m *testing.M) {
	if os.Getenv("MILLWRIGHT_TEST_MAIN") == "1" {
		var args []string
		if err := json.Unmarshal([]byte(os.Getenv("MILLWRIGHT_TEST_ARGS")), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad MILLWRIGHT_TEST_ARGS:", err)
			os.Exit(2)
		}
		os.Exit(Main(args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func startChild(t *testing.T, logw io.Writer, args ...string) *exec.Cmd {
	t.Helper()
	a, err := json.Marshal(args)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MILLWRIGHT_TEST_MAIN=1", "MILLWRIGHT_TEST_ARGS="+string(a))
	cmd.Stdout, cmd.Stderr = logw, logw
	require.NoError(t, cmd.Start())
	return cmd
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, 30*time.Second, 5*time.Millisecond, "server did not listen on %s", addr)
}

// publisher sends QoS 1 batches from one device until ctx ends, reconnecting after errors, and
// records which batches were acknowledged.
type publisher struct {
	device string
	tls    *tls.Config
	addr   string
	base   int64 // first sample time, ms
	per    int   // samples per batch
	events bool  // each batch also carries a string value, dur_note = "n<batch>"

	mu      sync.Mutex
	next    uint64
	acked   []uint64
	refused int
}

// counts returns how many batches were acknowledged and how many refused so far.
func (p *publisher) counts() (acked, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked), p.refused
}

func (p *publisher) run(ctx context.Context) {
	for ctx.Err() == nil {
		conn, err := (&tls.Dialer{Config: p.tls}).DialContext(ctx, "tcp", p.addr)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: p.device})
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: p.device, KeepAlive: 30, CleanStart: true}); err != nil {
			_ = conn.Close()
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			p.mu.Lock()
			p.next++
			n := p.next
			p.mu.Unlock()
			pack := make(protocol.Pack, p.per)
			for k := range pack {
				v := float64(int(n)*p.per + k)
				pack[k] = protocol.Record{Name: "dur", Value: &v, Time: float64(p.base+int64(v)) / 1000}
			}
			pack[0].Seq = &n
			if p.events {
				note := fmt.Sprintf("n%d", n)
				pack = append(pack, protocol.Record{Name: "dur_note", StringValue: &note, Time: float64(p.base+int64(n)) / 1000})
			}
			payload, err := protocol.Encode(pack, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
			if err != nil {
				panic(err)
			}
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := c.Publish(pctx, &paho.Publish{Topic: protocol.BatchTopic(p.device), QoS: 1, Payload: payload})
			cancel()
			if err != nil || resp.ReasonCode >= 0x80 {
				p.mu.Lock()
				p.refused++
				p.mu.Unlock()
				break
			}
			p.mu.Lock()
			p.acked = append(p.acked, n)
			p.mu.Unlock()
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}
}

// TestDurabilityUnderSIGKILL runs the server as a separate process, publishes QoS 1 batches
// from two devices, SIGKILLs the server at random moments and restarts it, 20 times; every
// batch that got a PUBACK must then be queryable.
func TestDurabilityUnderSIGKILL(t *testing.T) {
	dir := t.TempDir()
	mqttAddr, httpAddr := freeAddr(t), freeAddr(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logw := writerFunc(func(b []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(b) })
	args := []string{"server", "--data", dir, "--mqtt-listen", mqttAddr, "--http-listen", httpAddr, "--log-level", "warn"}
	defer func() {
		if t.Failed() {
			logMu.Lock()
			t.Logf("server logs:\n%s", logs.String())
			logMu.Unlock()
		}
	}()

	// The first start makes the CA; devices get certificates from it.
	cmd := startChild(t, logw, args...)
	waitListening(t, mqttAddr)
	ca, err := pki.LoadCA(dir)
	require.NoError(t, err)
	now := time.Now()
	base := now.Add(-time.Hour).UnixMilli()
	var pubs []*publisher
	for i := range 2 {
		id := fmt.Sprintf("dur-%d", i)
		// The CLI registers the device, as enrollment would.
		certDir := t.TempDir()
		code, _, stderr := run("dev", "cert", "--data", dir, "--server", "https://"+httpAddr, "--device", id, "--out", certDir)
		require.Zero(t, code, stderr)
		pair, err := tls.LoadX509KeyPair(filepath.Join(certDir, id+".crt"), filepath.Join(certDir, id+".key"))
		require.NoError(t, err)
		cfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}
		pubs = append(pubs, &publisher{device: id, tls: cfg, addr: mqttAddr, base: base, per: 20})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Go(func() { p.run(ctx) })
	}

	const rounds = 20
	for round := range rounds {
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		if round < rounds-1 {
			cmd = startChild(t, logw, args...)
			waitListening(t, mqttAddr)
		}
	}
	cancel()
	wg.Wait()

	// A clean start answers the queries.
	cmd = startChild(t, logw, args...)
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	waitListening(t, httpAddr)
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	require.NoError(t, err)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}}
	for _, p := range pubs {
		require.NotEmpty(t, p.acked, "device %s got no acknowledgement at all", p.device)
		stored := storedValues(t, client, httpAddr, strings.TrimSpace(string(token)), p.device)
		missing := 0
		for _, n := range p.acked {
			for k := range p.per {
				if !stored[float64(int(n)*p.per+k)] {
					missing++
				}
			}
		}
		t.Logf("%s: %d batches acknowledged over %d kills, %d samples stored, %d acknowledged samples missing",
			p.device, len(p.acked), rounds, len(stored), missing)
		require.Zero(t, missing)
	}
}

// storedValues reads every value of the device's "dur" series.
func storedValues(t *testing.T, client *http.Client, addr, token, device string) map[float64]bool {
	t.Helper()
	q := url.Values{"query": {fmt.Sprintf(`dur{device=%q}[3h]`, device)}, "time": {strconv.FormatInt(time.Now().Unix(), 10)}}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/api/v1/query?"+q.Encode(), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status)
	out := map[float64]bool{}
	for _, r := range body.Data.Result {
		for _, v := range r.Values {
			f, err := strconv.ParseFloat(v[1].(string), 64)
			require.NoError(t, err)
			out[f] = true
		}
	}
	return out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
