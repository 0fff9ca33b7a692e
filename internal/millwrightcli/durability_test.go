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

	pahopackets "github.com/eclipse/paho.golang/packets"
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
		c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: p.device})
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

// serverProcess is `millwright server` run as a child process on free loopback ports, its log
// kept and shown when the test fails; it is SIGKILLed at the end if still running.
type serverProcess struct {
	t                  *testing.T
	dir                string
	mqttAddr, httpAddr string
	args               []string
	logw               io.Writer
	cmd                *exec.Cmd
	ca                 *pki.CA
}

func startServerProcess(t *testing.T, dir string) *serverProcess {
	t.Helper()
	s := &serverProcess{t: t, dir: dir, mqttAddr: freeAddr(t), httpAddr: freeAddr(t)}
	var logs bytes.Buffer
	var logMu sync.Mutex
	s.logw = writerFunc(func(b []byte) (int, error) { logMu.Lock(); defer logMu.Unlock(); return logs.Write(b) })
	s.args = []string{"server", "--data", dir, "--mqtt-listen", s.mqttAddr, "--http-listen", s.httpAddr, "--log-level", "warn"}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			logMu.Lock()
			t.Logf("server logs:\n%s", logs.String())
			logMu.Unlock()
		}
	})
	s.start()
	// The first start makes the CA; devices get certificates from it.
	ca, err := pki.LoadCA(dir)
	require.NoError(t, err)
	s.ca = ca
	return s
}

// start starts the server and waits until both listeners accept.
func (s *serverProcess) start() {
	s.t.Helper()
	s.cmd = startChild(s.t, s.logw, s.args...)
	waitListening(s.t, s.mqttAddr)
	waitListening(s.t, s.httpAddr)
}

// kill SIGKILLs the server, if it runs, and waits for it.
func (s *serverProcess) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
	s.cmd = nil
}

// publishers registers n devices prefix-0 … through the CLI (as enrollment would) and returns
// a publisher for each, sending per samples a batch from an hour ago on.
func (s *serverProcess) publishers(prefix string, n, per int, events bool) []*publisher {
	s.t.Helper()
	base := time.Now().Add(-time.Hour).UnixMilli()
	var pubs []*publisher
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		certDir := s.t.TempDir()
		code, _, stderr := run("dev", "cert", "--data", s.dir, "--server", "https://"+s.httpAddr, "--device", id, "--out", certDir)
		require.Zero(s.t, code, stderr)
		pair, err := tls.LoadX509KeyPair(filepath.Join(certDir, id+".crt"), filepath.Join(certDir, id+".key"))
		require.NoError(s.t, err)
		cfg := &tls.Config{RootCAs: s.ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}
		pubs = append(pubs, &publisher{device: id, tls: cfg, addr: s.mqttAddr, base: base, per: per, events: events})
	}
	return pubs
}

// runPublishers runs pubs until the returned stop is called; stop waits for them.
func runPublishers(pubs []*publisher) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, p := range pubs {
		wg.Go(func() { p.run(ctx) })
	}
	return func() { cancel(); wg.Wait() }
}

// getAPI GETs path with the admin token and decodes the JSON answer into out, whose "status"
// must be "success".
func (s *serverProcess) getAPI(path string, q url.Values, out any) {
	s.t.Helper()
	token, err := os.ReadFile(filepath.Join(s.dir, "admin.token"))
	require.NoError(s.t, err)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.Pool(), ServerName: "localhost"}}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "https://"+s.httpAddr+path+"?"+q.Encode(), nil)
	require.NoError(s.t, err)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	var status struct {
		Status string `json:"status"`
	}
	require.NoError(s.t, json.Unmarshal(body, &status), "%s", body)
	require.Equal(s.t, "success", status.Status, "%s", body)
	require.NoError(s.t, json.Unmarshal(body, out))
}

// missingSamples counts the samples of p's acknowledged batches that stored does not hold.
func (p *publisher) missingSamples(stored map[float64]bool) int {
	missing := 0
	for _, n := range p.acked {
		for k := range p.per {
			if !stored[float64(int(n)*p.per+k)] {
				missing++
			}
		}
	}
	return missing
}

// TestDurabilityUnderSIGKILL runs the server as a separate process, publishes QoS 1 batches
// from two devices, SIGKILLs the server at random moments and restarts it, 20 times; every
// batch that got a PUBACK must then be queryable.
func TestDurabilityUnderSIGKILL(t *testing.T) {
	srv := startServerProcess(t, t.TempDir())
	pubs := srv.publishers("dur", 2, 20, false)
	stop := runPublishers(pubs)
	const rounds = 20
	for round := range rounds {
		time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond) // a random moment
		srv.kill()
		if round < rounds-1 {
			srv.start()
		}
	}
	stop()

	// A clean start answers the queries.
	srv.start()
	for _, p := range pubs {
		require.NotEmpty(t, p.acked, "device %s got no acknowledgement at all", p.device)
		stored := srv.storedValues(p.device)
		missing := p.missingSamples(stored)
		t.Logf("%s: %d batches acknowledged over %d kills, %d samples stored, %d acknowledged samples missing",
			p.device, len(p.acked), rounds, len(stored), missing)
		require.Zero(t, missing)
	}
}

// storedValues reads every value of the device's "dur" series.
func (s *serverProcess) storedValues(device string) map[float64]bool {
	s.t.Helper()
	var body struct {
		Data struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	s.getAPI("/api/v1/query", url.Values{"query": {fmt.Sprintf(`dur{device=%q}[3h]`, device)}, "time": {strconv.FormatInt(time.Now().Unix(), 10)}}, &body)
	out := map[float64]bool{}
	for _, r := range body.Data.Result {
		for _, v := range r.Values {
			f, err := strconv.ParseFloat(v[1].(string), 64)
			require.NoError(s.t, err)
			out[f] = true
		}
	}
	return out
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
