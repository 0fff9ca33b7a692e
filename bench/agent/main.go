// Command agent measures the device agent's footprint: it builds the real
// millwright-agent binary (stripped, CGO off), starts a Millwright server in
// this process, runs the agent as its own process with the local API
// source, feeds it measurements at a fixed rate over that API, and samples
// the agent's resident memory and CPU time from /proc. At the end it checks
// that every measurement reached the server.
//
//	go run ./bench/agent -rate 100 -duration 2m
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/server"
)

func main() {
	rate := flag.Int("rate", 100, "measurements per second fed to the agent")
	per := flag.Int("per-request", 10, "measurements per local API request (1: a producer that POSTs each reading)")
	duration := flag.Duration("duration", 2*time.Minute, "how long to feed")
	interval := flag.Duration("interval", 45*time.Second, "agent schedule.interval")
	jitter := flag.Duration("jitter", 30*time.Second, "agent schedule.jitter")
	flag.Parse()
	if err := run(*rate, *per, *duration, *interval, *jitter); err != nil {
		fmt.Fprintln(os.Stderr, "bench/agent:", err)
		os.Exit(1)
	}
}

func run(rate, per int, duration, interval, jitter time.Duration) error {
	dir, err := os.MkdirTemp("", "mw-agent-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	bin := filepath.Join(dir, "millwright-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/millwright-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build agent: %w", err)
	}
	st, err := os.Stat(bin)
	if err != nil {
		return err
	}
	fmt.Printf("agent binary (linux/amd64, -s -w, CGO off): %d bytes (%.1f MiB)\n", st.Size(), float64(st.Size())/(1<<20))

	// The server, in this process.
	opts := server.DefaultOptions()
	opts.DataDir = filepath.Join(dir, "server")
	opts.MQTT.Listen = "127.0.0.1:0"
	opts.HTTPListen = "127.0.0.1:0"
	srv, err := server.New(opts, clock.Real(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	defer func() {
		cancel()
		<-srvDone
	}()
	if err := waitListen(srv.MQTTAddr().String()); err != nil {
		return err
	}

	// A registered device with its credentials on disk.
	const device = "bench-agent"
	pair, err := srv.CA().DeviceKeyPair(device, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	if err := srv.Registry().AddCertificate(ctx, device, pair.Leaf, true); err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(pair.PrivateKey.(crypto.Signer))
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"device.crt": pki.EncodeCert(pair.Certificate[0]), "device.key": keyPEM, "ca.crt": srv.CA().PEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	api, err := freeAddr()
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf(`tls:
  cert_file: %[1]s/device.crt
  key_file: %[1]s/device.key
  ca_file: %[1]s/ca.crt
  server_name: localhost
uplink:
  dev_address: %[2]s
spool:
  dir: %[1]s/spool
schedule:
  interval: %[3]s
  jitter: %[4]s
log:
  level: warn
sources:
  local_api:
    listen: %[5]s
`, dir, srv.MQTTAddr(), interval, jitter, api)
	cfgPath := filepath.Join(dir, "agent.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	agent := exec.Command(bin, "run", "--config", cfgPath)
	agent.Stdout, agent.Stderr = os.Stderr, os.Stderr
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		_ = agent.Wait()
	}()
	if err := waitListen(api); err != nil {
		return fmt.Errorf("local API: %w", err)
	}

	// Feed rate measurements per second, per in each request.
	fmt.Printf("feeding %d measurements/s for %v (schedule %v + %v); sampling RSS and CPU every second\n", rate, duration, interval, jitter)
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Second * time.Duration(per) / time.Duration(rate))
	defer tick.Stop()
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	start := time.Now()
	startCPU, err := cpuTime(agent.Process.Pid)
	if err != nil {
		return err
	}
	var rss []int64
	sent, n := 0, 0
	lastMs := int64(0)
	for time.Since(start) < duration {
		select {
		case <-tick.C:
			var buf bytes.Buffer
			buf.WriteByte('[')
			for i := range per {
				ms := max(time.Now().UnixMilli(), lastMs+1)
				lastMs = ms
				if i > 0 {
					buf.WriteByte(',')
				}
				fmt.Fprintf(&buf, `{"n":"bench_value","u":"Cel","t":%d.%03d,"v":%.2f}`, ms/1000, ms%1000, 20+float64(n%500)/100)
				n++
			}
			buf.WriteByte(']')
			resp, err := client.Post("http://"+api+"/v1/measurements", "application/senml+json", &buf)
			if err != nil {
				return fmt.Errorf("feed: %w", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("feed: %s", resp.Status)
			}
			sent += per
		case <-sample.C:
			r, err := rssKiB(agent.Process.Pid)
			if err != nil {
				return err
			}
			rss = append(rss, r)
		}
	}
	wall := time.Since(start)
	endCPU, err := cpuTime(agent.Process.Pid)
	if err != nil {
		return err
	}
	cpu := endCPU.total() - startCPU.total()
	var maxRSS, sumRSS int64
	half := rss[len(rss)/2:]
	for _, r := range rss {
		maxRSS = max(maxRSS, r)
	}
	for _, r := range half {
		sumRSS += r
	}
	fmt.Printf("agent RSS: max %.1f MiB, mean over the second half %.1f MiB\n", float64(maxRSS)/1024, float64(sumRSS)/float64(len(half))/1024)
	fmt.Printf("agent CPU: %v over %v = %.2f%% of one core (%.1f µs per measurement; user %v, kernel %v)\n",
		cpu.Round(time.Millisecond), wall.Round(time.Millisecond), 100*cpu.Seconds()/wall.Seconds(), float64(cpu.Microseconds())/float64(sent),
		(endCPU.user - startCPU.user).Round(time.Millisecond), (endCPU.sys - startCPU.sys).Round(time.Millisecond))

	// Stop the feed and let the agent deliver the rest: SIGTERM would leave
	// it in the spool; wait for the next sends instead.
	deadline := time.Now().Add(interval + jitter + 30*time.Second)
	var got int
	for time.Now().Before(deadline) {
		if got, err = count(srv, device); err != nil {
			return err
		}
		if got >= sent {
			break
		}
		time.Sleep(time.Second)
	}
	fmt.Printf("delivered: %d of %d measurements\n", got, sent)
	if got < sent {
		return errors.New("not every measurement arrived")
	}
	return nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitListen(addr string) error {
	for range 300 {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c.Close()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s does not listen", addr)
}

// rssKiB reads VmRSS from /proc/<pid>/status.
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// cpuTimes is a process's CPU time in user and in kernel mode.
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) total() time.Duration { return c.user + c.sys }

// cpuTime reads utime and stime from /proc/<pid>/stat (clock ticks of 10 ms).
func cpuTime(pid int) (cpuTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuTimes{}, errors.New("parse /proc stat")
	}
	return cpuTimes{time.Duration(u) * 10 * time.Millisecond, time.Duration(k) * 10 * time.Millisecond}, nil
}

// count asks the server how many bench_value samples it holds.
func count(srv *server.Server, device string) (int, error) {
	q := url.Values{"query": {fmt.Sprintf(`count_over_time(bench_value{device=%q}[1d])`, device)}}
	req, err := http.NewRequest(http.MethodGet, "https://"+srv.HTTPAddr().String()+"/api/v1/query?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.CA().Pool(), ServerName: "localhost"}}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, err
	}
	if len(body.Data.Result) == 0 {
		return 0, nil
	}
	v, err := strconv.ParseFloat(body.Data.Result[0].Value[1].(string), 64)
	return int(v), err
}
