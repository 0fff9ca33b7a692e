package gateway_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/gateway"
	"github.com/millwright/millwright/internal/ingest"
	"github.com/millwright/millwright/internal/pki"
)

// Environment of the idle-connection holder: the test binary re-executed as a separate
// process, so the clients' memory is not counted with the server's.
const (
	holderAddrEnv = "MW_TEST_IDLE_HOLDER_ADDR"
	holderDirEnv  = "MW_TEST_IDLE_HOLDER_CA_DIR"
	holderNEnv    = "MW_TEST_IDLE_HOLDER_N"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(holderAddrEnv); addr != "" {
		if err := holdIdle(addr, os.Getenv(holderDirEnv), os.Getenv(holderNEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "idle holder:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// holdIdle connects n MQTT 5 clients over mutual TLS, prints "ready", and holds them until its
// standard input closes.
func holdIdle(addr, caDir, count string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return fmt.Errorf("%s: %w", holderNEnv, err)
	}
	ca, _, err := pki.LoadOrCreateCA(caDir, time.Now())
	if err != nil {
		return err
	}
	ctx := context.Background()
	clients := make([]*paho.Client, 0, n)
	for i := range n {
		id := fmt.Sprintf("idle-%05d", i)
		pair, err := ca.DeviceKeyPair(id, time.Now(), time.Hour)
		if err != nil {
			return err
		}
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"})
		if err != nil {
			return fmt.Errorf("device %d: %w", i, err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: id})
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 600, CleanStart: true}); err != nil {
			return fmt.Errorf("device %d: connect: %w", i, err)
		}
		clients = append(clients, c)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range clients {
		_ = c.Disconnect(&paho.Disconnect{})
	}
	return nil
}

// BenchmarkIdleConnectionMemory measures what an idle MQTT 5 device on mutual TLS costs the
// gateway: b.N devices connect from a separate process and stay idle; after a GC the benchmark
// reports the gateway process's heap in use, goroutine stack in use and resident set growth,
// each per connection. With MW_HEAP_PROFILE=FILE it writes a heap profile while the
// connections are held.
//
//	go test ./internal/gateway -run '^$' -bench IdleConnectionMemory -benchtime 2000x
func BenchmarkIdleConnectionMemory(b *testing.B) {
	r := newRig(b, ingest.DefaultOptions())
	reg := r.reg
	m, err := gateway.NewMQTT(gateway.MQTTOptions{Listen: "127.0.0.1:0"},
		r.serverTLS, r.ing, nil, nil, nil, reg)
	require.NoError(b, err)
	require.NoError(b, m.Start())
	defer m.Close()

	if os.Getenv("MW_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 512
	}
	before := memSnapshot()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), holderAddrEnv+"="+m.Addr().String(), holderDirEnv+"="+r.dir, holderNEnv+"="+strconv.Itoa(b.N))
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	cmd.Stderr = os.Stderr
	require.NoError(b, cmd.Start())
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(b, err, "holder exited before its devices connected")
	require.Equal(b, "ready", strings.TrimSpace(line))
	require.Eventually(b, func() bool { return connected(b, reg) == float64(b.N) }, 30*time.Second, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond) // the write loops and CONNACKs settle
	after := memSnapshot()
	if path := os.Getenv("MW_HEAP_PROFILE"); path != "" {
		f, err := os.Create(path)
		require.NoError(b, err)
		require.NoError(b, pprof.Lookup("heap").WriteTo(f, 0))
		require.NoError(b, f.Close())
	}
	n := float64(b.N)
	b.ReportMetric(float64(after.heap-before.heap)/n, "heap-B/conn")
	b.ReportMetric(float64(after.stack-before.stack)/n, "stack-B/conn")
	b.ReportMetric(float64(after.rss-before.rss)/n, "rss-B/conn")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/conn")
}

type memState struct {
	heap, stack, rss uint64
	goroutines       int
}

// memSnapshot collects garbage first, so the figures are what is live.
func memSnapshot() memState {
	for range 4 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memState{heap: ms.HeapInuse, stack: ms.StackInuse, rss: vmRSS(), goroutines: runtime.NumGoroutine()}
}

func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		panic(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				panic(err)
			}
			return kb << 10
		}
	}
	panic("no VmRSS in /proc/self/status")
}

// connected reads the gateway's connected-clients gauge.
func connected(b *testing.B, reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	require.NoError(b, err)
	for _, mf := range mfs {
		if mf.GetName() == "millwright_mqtt_connected_clients" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
