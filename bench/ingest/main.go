// Command ingest is the ingest benchmark harness: N TLS devices publish SenML CBOR+zstd batches
// as fast as acknowledgements allow, against a Millwright server running as its own process and,
// in the same run with the same load generator, against Mosquitto (a TLS listener this harness
// starts with its own configuration, and the plain listener already on 127.0.0.1:1883).
//
// Millwright acknowledges a batch only after it is stored and fsynced; Mosquitto stores nothing
// (no subscriber, no persistence) and acknowledges on receipt.
//
//	go run ./bench/ingest -devices 1000 -duration 30s -batch 100
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/protocol"
)

type config struct {
	devices  int
	duration time.Duration
	warmup   time.Duration
	batch    int
	targets  string
	fsync    string
	out      string
}

func main() {
	var c config
	flag.IntVar(&c.devices, "devices", 1000, "devices (MQTT connections)")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "measured time per target")
	flag.DurationVar(&c.warmup, "warmup", 3*time.Second, "unmeasured time before each measurement")
	flag.IntVar(&c.batch, "batch", 100, "measurements per batch")
	flag.StringVar(&c.targets, "targets", "millwright,mosquitto-tls,mosquitto-plain", "comma-separated targets")
	flag.StringVar(&c.fsync, "fsync", "always", "Millwright --fsync policy")
	flag.StringVar(&c.out, "out", "", "also write the result table (Markdown) to this file")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	target, transport   string
	measurements        int64
	batches             int64
	refused             int64
	elapsed             time.Duration
	p50, p99            time.Duration
	serverCPU           time.Duration // during the measured window
	serverRSS, serverHW int64         // bytes, at the end; peak
	loadCPU             time.Duration
	note                string
}

func run(c config) error {
	work, err := os.MkdirTemp("", "mw-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "millwright")
	fmt.Fprintln(os.Stderr, "building millwright…")
	build := exec.Command("go", "build", "-o", bin, "./cmd/millwright")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	// The CA and device certificates come from a Millwright data directory; Mosquitto uses the
	// same CA so both see identical clients.
	dataDir := filepath.Join(work, "data")
	ca, _, err := pki.LoadOrCreateCA(dataDir, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "issuing %d device certificates…\n", c.devices)
	certs := make([]tls.Certificate, c.devices)
	for i := range certs {
		if certs[i], err = ca.DeviceKeyPair(deviceID(i), time.Now(), 24*time.Hour); err != nil {
			return err
		}
	}

	tlsFor := func(i int) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{certs[i]}, ServerName: "localhost"}
	}
	var results []result
	for _, target := range strings.Split(c.targets, ",") {
		var r result
		switch strings.TrimSpace(target) {
		case "millwright":
			r, err = benchMillwright(c, bin, dataDir, tlsFor)
		case "mosquitto-tls":
			r, err = benchMosquittoTLS(c, work, ca, tlsFor)
		case "mosquitto-plain":
			r, err = benchMosquittoPlain(c)
		default:
			err = fmt.Errorf("unknown target %q", target)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", target, err)
		}
		results = append(results, r)
		fmt.Fprintln(os.Stderr, formatRow(r))
	}
	table := formatTable(c, results)
	fmt.Println(table)
	if c.out != "" {
		return os.WriteFile(c.out, []byte(table+"\n"), 0o644)
	}
	return nil
}

func deviceID(i int) string { return fmt.Sprintf("bench-%05d", i) }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			return c.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s after %s", addr, timeout)
}

// serveAndLoad starts a broker process, waits for it to listen on addr, runs the load against
// it and stops it.
func serveAndLoad(c config, cmd *exec.Cmd, addr string, wait time.Duration, tlsFor func(int) *tls.Config) (result, error) {
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	if err := waitListening(addr, wait); err != nil {
		return result{}, err
	}
	return load(c, addr, tlsFor, cmd.Process.Pid)
}

func benchMillwright(c config, bin, dataDir string, tlsFor func(int) *tls.Config) (result, error) {
	mqttAddr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	httpAddr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	cmd := exec.Command(bin, "server", "--data", dataDir, "--mqtt-listen", mqttAddr, "--http-listen", httpAddr,
		"--log-level", "warn", "--fsync", c.fsync)
	r, err := serveAndLoad(c, cmd, mqttAddr, 60*time.Second, tlsFor)
	r.target, r.transport = "Millwright (stored, fsync "+c.fsync+")", "TLS"
	return r, err
}

func benchMosquittoTLS(c config, work string, ca *pki.CA, tlsFor func(int) *tls.Config) (result, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return result{}, errors.New("mosquitto not installed (Debian package mosquitto)")
	}
	dir := filepath.Join(work, "mosquitto")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return result{}, err
	}
	names, ips := pki.ServerNames("", nil)
	if _, err := pki.EnsureServerCert(dir, ca, names, ips, time.Now()); err != nil {
		return result{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM, 0o644); err != nil {
		return result{}, err
	}
	addr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`user root
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
max_connections -1
listener %s 127.0.0.1
cafile %s
certfile %s
keyfile %s
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
`, port, filepath.Join(dir, "ca.pem"), filepath.Join(dir, pki.ServerCertFile), filepath.Join(dir, pki.ServerKeyFile))
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return result{}, err
	}
	r, err := serveAndLoad(c, exec.Command(bin, "-c", confPath), addr, 10*time.Second, tlsFor)
	r.target, r.transport, r.note = "Mosquitto "+mosquittoVersion(bin)+" (stores nothing)", "TLS", "harness-started listener"
	return r, err
}

func benchMosquittoPlain(c config) (result, error) {
	const addr = "127.0.0.1:1883"
	if err := waitListening(addr, time.Second); err != nil {
		return result{}, fmt.Errorf("the local Mosquitto on %s: %w", addr, err)
	}
	pid := 0
	if out, err := exec.Command("pgrep", "-o", "-x", "mosquitto").Output(); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
	}
	r, err := load(c, addr, nil, pid)
	r.target, r.transport, r.note = "Mosquitto (stores nothing)", "plain TCP", "the machine's own broker on 127.0.0.1:1883"
	return r, err
}

func mosquittoVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(line); len(f) >= 3 {
		return f[2]
	}
	return ""
}

// load connects every device, runs the publishers through the warm-up and the measured
// window, and reports what was acknowledged in the window.
func load(c config, addr string, tlsFor func(int) *tls.Config, pid int) (result, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clients := make([]*paho.Client, c.devices)
	var (
		wg      sync.WaitGroup
		connErr atomic.Value
		sem     = make(chan struct{}, 64)
	)
	fmt.Fprintf(os.Stderr, "connecting %d devices to %s…\n", c.devices, addr)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := connect(ctx, addr, tlsFor, i)
			if err != nil {
				connErr.Store(fmt.Errorf("device %d: %w", i, err))
				return
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				_ = cl.Disconnect(&paho.Disconnect{})
			}
		}
	}()
	if err, ok := connErr.Load().(error); ok {
		return result{}, err
	}

	var (
		measuring atomic.Bool
		batches   atomic.Int64
		refused   atomic.Int64
		latMu     sync.Mutex
		lats      []time.Duration
	)
	start := time.Now()
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gen := newGenerator(i, c.batch, start)
			local := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				payload := gen.next()
				t0 := time.Now()
				resp, err := cl.Publish(ctx, &paho.Publish{Topic: protocol.BatchTopic(deviceID(i)), QoS: 1, Payload: payload})
				lat := time.Since(t0)
				if ctx.Err() != nil {
					break
				}
				if err != nil && (resp == nil || resp.ReasonCode < 0x80) {
					connErr.Store(fmt.Errorf("device %d: publish: %w", i, err))
					return
				}
				if !measuring.Load() {
					continue
				}
				if resp.ReasonCode >= 0x80 {
					refused.Add(1)
					continue
				}
				batches.Add(1)
				local = append(local, lat)
			}
			latMu.Lock()
			lats = append(lats, local...)
			latMu.Unlock()
		}()
	}
	time.Sleep(c.warmup)
	cpu0 := procCPU(pid)
	self0 := procCPU(os.Getpid())
	measuring.Store(true)
	t0 := time.Now()
	time.Sleep(c.duration)
	measuring.Store(false)
	elapsed := time.Since(t0)
	cpu1 := procCPU(pid)
	self1 := procCPU(os.Getpid())
	rss, hwm := procRSS(pid)
	cancel()
	wg.Wait()
	if err, ok := connErr.Load().(error); ok {
		return result{}, err
	}
	slices.Sort(lats)
	r := result{
		measurements: batches.Load() * int64(c.batch),
		batches:      batches.Load(),
		refused:      refused.Load(),
		elapsed:      elapsed,
		serverCPU:    cpu1 - cpu0,
		serverRSS:    rss,
		serverHW:     hwm,
		loadCPU:      self1 - self0,
	}
	if len(lats) > 0 {
		r.p50 = lats[len(lats)/2]
		r.p99 = lats[len(lats)*99/100]
	}
	return r, nil
}

func connect(ctx context.Context, addr string, tlsFor func(int) *tls.Config, i int) (*paho.Client, error) {
	var (
		conn net.Conn
		err  error
	)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if tlsFor != nil {
		conn, err = (&tls.Dialer{Config: tlsFor(i)}).DialContext(dctx, "tcp", addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	cl := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: deviceID(i)})
	if _, err := cl.Connect(dctx, &paho.Connect{ClientID: deviceID(i), KeepAlive: 60, CleanStart: true}); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return cl, nil
}

// generator makes realistic sensor batches: ten metrics (temperatures drifting, a vibration
// reading, a counter, a state) sampled every 10 ms, ten samples each per batch of 100. The
// data starts an hour back, so a device may send faster than real time for an hour.
type generator struct {
	device int
	per    int
	t      time.Time
	vals   []float64
	rng    *rand.Rand
	pack   protocol.Pack
}

const sampleStep = 10 * time.Millisecond

var metricNames = []string{"temp_motor", "temp_bearing", "temp_ambient", "vibration_rms", "current", "voltage", "pressure", "flow", "cycles_total", "state"}

func newGenerator(device, per int, start time.Time) *generator {
	g := &generator{device: device, per: per, t: start.Add(-time.Hour).Truncate(time.Second),
		vals: make([]float64, len(metricNames)), rng: rand.New(rand.NewPCG(uint64(device), 7))}
	for i := range g.vals {
		g.vals[i] = 20 + float64(i)*10
	}
	return g
}

func (g *generator) next() []byte {
	per := len(metricNames)
	steps := (g.per + per - 1) / per
	g.pack = g.pack[:0]
	bt := float64(g.t.UnixMilli()) / 1000
	for s := range steps {
		for m := range per {
			if len(g.pack) == g.per {
				break
			}
			switch metricNames[m] {
			case "cycles_total":
				g.vals[m]++
			case "state":
				if g.rng.IntN(50) == 0 {
					g.vals[m] = float64(g.rng.IntN(3))
				}
			default:
				g.vals[m] = float64(int((g.vals[m]+g.rng.NormFloat64()*0.05)*100)) / 100
			}
			v := g.vals[m]
			r := protocol.Record{Name: metricNames[m], Value: &v, Time: float64(s) * sampleStep.Seconds()}
			if len(g.pack) == 0 {
				r.BaseTime = bt
			}
			g.pack = append(g.pack, r)
		}
	}
	g.t = g.t.Add(time.Duration(steps) * sampleStep)
	b, err := protocol.Encode(g.pack, protocol.Encoding{Format: protocol.FormatCBOR, Compressed: true})
	if err != nil {
		panic(err)
	}
	return b
}

// procCPU is a process's user+system CPU time, from /proc.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procRSS is a process's resident set size and its peak, in bytes.
func procRSS(pid int) (rss, hwm int64) {
	if pid <= 0 {
		return 0, 0
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<16))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

func formatRow(r result) string {
	return fmt.Sprintf("%s %s: %.0f measurements/s, p50 %s, p99 %s, refused %d, server CPU %.2fs",
		r.target, r.transport, float64(r.measurements)/r.elapsed.Seconds(), r.p50, r.p99, r.refused, r.serverCPU.Seconds())
}

func formatTable(c config, rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d devices, %d measurements per SenML CBOR+zstd batch, QoS 1, %s measured after %s warm-up; load generator in the same machine.\n\n",
		c.devices, c.batch, c.duration, c.warmup)
	b.WriteString("| target | transport | acked measurements/s | batches/s | ack p50 | ack p99 | refused | server CPU s per 1M measurements | server RSS (peak) | load generator CPU s per 1M | ratio to Millwright |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var base float64
	for i, r := range rs {
		rate := float64(r.measurements) / r.elapsed.Seconds()
		if i == 0 {
			base = rate
		}
		perM := func(d time.Duration) string {
			if r.measurements == 0 || d == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2f", d.Seconds()/(float64(r.measurements)/1e6))
		}
		mem := "n/a"
		if r.serverRSS > 0 {
			mem = fmt.Sprintf("%.0f MiB (%.0f MiB)", float64(r.serverRSS)/(1<<20), float64(r.serverHW)/(1<<20))
		}
		ratio := "1.00"
		if i > 0 && base > 0 {
			ratio = fmt.Sprintf("%.2f", rate/base)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %.0f | %s | %s | %d | %s | %s | %s | %s |\n",
			r.target, r.transport, rate, float64(r.batches)/r.elapsed.Seconds(),
			r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.refused,
			perM(r.serverCPU), mem, perM(r.loadCPU), ratio)
	}
	return b.String()
}
