package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/millwright/millwright/internal/pki"
)

// procs tracks every process the suite starts, so that all of them are killed on the way out,
// whatever went wrong.
var procs struct {
	sync.Mutex
	live map[*exec.Cmd]bool
}

func startProc(cmd *exec.Cmd) error {
	if cmd.Stderr == nil {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	procs.Lock()
	if procs.live == nil {
		procs.live = map[*exec.Cmd]bool{}
	}
	procs.live[cmd] = true
	procs.Unlock()
	return nil
}

// untrack removes cmd from the live processes and tells whether it was one (and so still
// needs stopping).
func untrack(cmd *exec.Cmd) bool {
	procs.Lock()
	defer procs.Unlock()
	live := procs.live[cmd]
	delete(procs.live, cmd)
	return live && cmd.Process != nil
}

// stopProc sends SIGTERM, then SIGKILL after grace, and reaps the process.
func stopProc(cmd *exec.Cmd, grace time.Duration) {
	if !untrack(cmd) {
		return
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

// killProc kills at once (SIGKILL) and reaps.
func killProc(cmd *exec.Cmd) {
	if untrack(cmd) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// killAll kills every process still running.
func killAll() {
	procs.Lock()
	var cmds []*exec.Cmd
	for c := range procs.live {
		cmds = append(cmds, c)
	}
	procs.Unlock()
	for _, c := range cmds {
		killProc(c)
	}
}

func freeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			return c.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("nothing listening on %s after %s", addr, timeout)
}

// procCPU is a process's user+system CPU time.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return parseStatCPU(string(b))
}

func parseStatCPU(stat string) time.Duration {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 || i+2 > len(stat) {
		return 0
	}
	f := strings.Fields(stat[i+2:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procRSS is a process's resident set size and its peak, in bytes.
func procRSS(pid int) (rss, hwm int64) {
	if pid <= 0 {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	return parseStatusRSS(string(b))
}

func parseStatusRSS(status string) (rss, hwm int64) {
	for line := range strings.SplitSeq(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
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

// procFDs counts a process's open file descriptors.
func procFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdLimit is this process's open-file limit (zeros when it cannot be read).
func fdLimit() (soft, hard uint64) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0
	}
	return l.Cur, l.Max
}

func openFileLimit() string {
	soft, hard := fdLimit()
	if soft == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d soft, %d hard", soft, hard)
}

// serverExtraEnv is added to the environment of every Millwright server (-server-env).
var serverExtraEnv []string

// millwright is a server process started by the suite.
type millwright struct {
	bin, data       string
	mqttAddr, https string
	extra           []string
	env             []string // added to the environment
	cmd             *exec.Cmd
}

func (m *millwright) start() error {
	args := append([]string{"server", "--data", m.data, "--mqtt-listen", m.mqttAddr, "--http-listen", m.https,
		"--log-level", "warn"}, m.extra...)
	m.cmd = exec.Command(m.bin, args...)
	noteCommand(append(append(append([]string{}, m.env...), "millwright"), args...)...)
	m.cmd.Env = append(append(os.Environ(), serverExtraEnv...), m.env...)
	if err := startProc(m.cmd); err != nil {
		return err
	}
	if err := waitListening(m.mqttAddr, 90*time.Second); err != nil {
		killProc(m.cmd)
		return fmt.Errorf("millwright: %w", err)
	}
	return nil
}

func (m *millwright) pid() int { return m.cmd.Process.Pid }

func newMillwright(bin, data string, extra ...string) (*millwright, error) {
	mq, err := freeAddr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	h, err := freeAddr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	return &millwright{bin: bin, data: data, mqttAddr: mq, https: h, extra: extra}, nil
}

// metrics scrapes the server's /metrics and returns the unlabelled samples and the sums of
// labelled ones by name.
func (m *millwright) metrics(ca *pki.CA) (map[string]float64, error) {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}}
	defer cl.CloseIdleConnections()
	resp, err := cl.Get("https://" + m.https + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format: each sample's value, labelled samples of one
// name summed.
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics: bad line %q", line)
			}
			name, rest, ok = line[:i], strings.TrimSpace(line[j+1:]), true
		}
		if !ok {
			return nil, fmt.Errorf("metrics: bad line %q", line)
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		out[name] += v
	}
	return out, sc.Err()
}

// mosquitto is a Mosquitto TLS listener started by the suite with its own configuration.
type mosquitto struct {
	addr    string
	version string
	cmd     *exec.Cmd
}

func startMosquitto(work string, ca *pki.CA) (*mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, errors.New("mosquitto not installed (Debian package mosquitto)")
	}
	dir, err := os.MkdirTemp(work, "mosquitto-")
	if err != nil {
		return nil, err
	}
	names, ips := pki.ServerNames("", nil)
	if _, err := pki.EnsureServerCert(dir, ca, names, ips, time.Now()); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM, 0o644); err != nil {
		return nil, err
	}
	addr, err := freeAddr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf(`user root
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
max_connections -1
max_queued_messages 64
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
		return nil, err
	}
	m := &mosquitto{addr: addr, version: mosquittoVersion(bin), cmd: exec.Command(bin, "-c", confPath)}
	noteCommand("mosquitto", "-c", confPath, "  #", strings.ReplaceAll(strings.TrimSpace(conf), "\n", "; "))
	if err := startProc(m.cmd); err != nil {
		return nil, err
	}
	if err := waitListening(addr, 10*time.Second); err != nil {
		killProc(m.cmd)
		return nil, fmt.Errorf("mosquitto: %w", err)
	}
	return m, nil
}

func (m *mosquitto) pid() int { return m.cmd.Process.Pid }

func mosquittoVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	if f := strings.Fields(line); len(f) >= 3 {
		return f[2]
	}
	return "unknown"
}

// victoriaMetrics is a VictoriaMetrics single-node process with its own data directory.
type victoriaMetrics struct {
	addr, data, version string
	cmd                 *exec.Cmd
}

// ensureVictoriaMetrics installs the Debian package when the binary is missing.
func ensureVictoriaMetrics() (string, error) {
	if p, err := exec.LookPath("victoria-metrics"); err == nil {
		return p, nil
	}
	fmt.Fprintln(os.Stderr, "installing victoria-metrics (Debian package)…")
	var sudo []string
	if os.Geteuid() != 0 {
		sudo = []string{"sudo"}
	}
	for _, args := range [][]string{{"apt-get", "update", "-qq"}, {"apt-get", "install", "-y", "-qq", "victoria-metrics"}} {
		cmd := exec.Command(append(sudo, args...)[0], append(sudo, args...)[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("install victoria-metrics: %w", err)
		}
	}
	return exec.LookPath("victoria-metrics")
}

func startVictoriaMetrics(work string) (*victoriaMetrics, error) {
	bin, err := ensureVictoriaMetrics()
	if err != nil {
		return nil, err
	}
	data, err := os.MkdirTemp(work, "victoria-metrics-")
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr("127.0.0.1")
	if err != nil {
		return nil, err
	}
	v := &victoriaMetrics{addr: addr, data: data}
	if out, err := exec.Command(bin, "-version").CombinedOutput(); err == nil {
		v.version = strings.TrimSpace(string(out))
	}
	if v.version == "" {
		if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "victoria-metrics").Output(); err == nil {
			v.version = "(Debian package " + strings.TrimSpace(string(out)) + ")"
		}
	}
	vmArgs := []string{"-storageDataPath", data, "-httpListenAddr", addr, "-retentionPeriod", "100y", "-loggerLevel", "ERROR"}
	v.cmd = exec.Command(bin, vmArgs...)
	noteCommand(append([]string{"victoria-metrics"}, vmArgs...)...)
	if err := startProc(v.cmd); err != nil {
		return nil, err
	}
	if err := waitListening(addr, 30*time.Second); err != nil {
		killProc(v.cmd)
		return nil, fmt.Errorf("victoria-metrics: %w", err)
	}
	return v, nil
}

func (v *victoriaMetrics) pid() int { return v.cmd.Process.Pid }

// get calls a VictoriaMetrics HTTP endpoint and fails on a non-2xx answer.
func (v *victoriaMetrics) get(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+v.addr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("victoria-metrics %s: %s: %s", path, resp.Status, b)
	}
	return string(b), nil
}

// dirSize is the sum of the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}
