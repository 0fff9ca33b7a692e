package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/millwright/millwright/internal/sim"
)

// simFleet is the device load generator: several `millwright sim` processes (real agents,
// the same code as millwright-agent), because each agent holds four open files and a process
// may hold 20,000. Each process connects from its own 127.0.0.x source address.
type simFleet struct {
	cmds []*exec.Cmd
	outs []*bytes.Buffer
	logs []string
}

// simCommand is the command line of one simulator process. The simulator registers its
// devices through the API at api (https://host:port); "" leaves registration out, for a broker
// that is not Millwright.
func simCommand(bin, server, api, data, prefix string, devices int, source, jitter string, limit time.Duration) []string {
	register := []string{"--register=false"}
	if api != "" {
		register = []string{"--api-server", api}
	}
	return append([]string{bin, "sim", "--server", server, "--data", data, "--devices", strconv.Itoa(devices),
		"--id-prefix", prefix, "--metrics", "idle", "--source-addrs", source, "--backoff-jitter", jitter,
		"--duration", limit.String(), "--json", "--log-level", "warn", "--agent-log-level", "error", "--progress-interval", "1s"}, register...)
}

func startSims(e *env, server, api, data, prefix string, total, procs int, jitter string, limit time.Duration) (*simFleet, error) {
	s := &simFleet{}
	per := (total + procs - 1) / procs
	for k := range procs {
		n := min(per, total-k*per)
		if n <= 0 {
			break
		}
		args := simCommand(e.bin, server, api, data, fmt.Sprintf("%s%d", prefix, k), n, fmt.Sprintf("127.0.0.%d", 2+k), jitter, limit)
		noteCommand(append([]string{"millwright"}, args[1:]...)...)
		cmd := exec.Command(args[0], args[1:]...)
		out := new(bytes.Buffer)
		cmd.Stdout = out
		logPath := filepath.Join(e.work, fmt.Sprintf("sim-%s%d.log", prefix, k))
		lf, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		cmd.Stderr = lf
		if err := startProc(cmd); err != nil {
			_ = lf.Close()
			s.stop()
			return nil, err
		}
		_ = lf.Close()
		s.cmds, s.outs, s.logs = append(s.cmds, cmd), append(s.outs, out), append(s.logs, logPath)
	}
	return s, nil
}

// check reports a simulator that has already exited, with the end of its log.
func (s *simFleet) check() error {
	for i, c := range s.cmds {
		if exited(c.Process.Pid) {
			return fmt.Errorf("simulator %d exited early; its log ends: %s", i, tail(s.logs[i], 5))
		}
	}
	return nil
}

// awaitConnected waits until connected reports n devices; it fails when a simulator exits or
// limit passes first.
func (s *simFleet) awaitConnected(connected func() int, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for connected() < n {
		if err := s.check(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d devices connected after %s (%s)", connected(), n, limit, s.progress())
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil
}

// connected is how many devices the simulators count as connected (MQTT session up: CONNACK
// received), from the last progress line of each (one a second); -1 until every simulator has
// printed one. A server's own count of TCP connections also holds sockets still waiting for
// their handshake, or for the broker to accept them at all.
func (s *simFleet) connected() int {
	total := 0
	for _, path := range s.logs {
		n, ok := lastConnected(path)
		if !ok {
			return -1
		}
		total += n
	}
	return total
}

// lastConnected reads the connected= figure of the last progress line in a simulator's log.
func lastConnected(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.HasPrefix(lines[i], "sim ") {
			continue
		}
		for _, f := range strings.Fields(lines[i]) {
			if v, ok := strings.CutPrefix(f, "connected="); ok {
				n, err := strconv.Atoi(v)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// progress is the last progress line of each simulator, for error messages.
func (s *simFleet) progress() string {
	var out []string
	for i := range s.cmds {
		out = append(out, fmt.Sprintf("simulator %d: %s", i, tail(s.logs[i], 1)))
	}
	return strings.Join(out, "; ")
}

// exited tells whether a child process has ended (a zombie waiting to be reaped, or gone).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	st := string(b)
	i := strings.LastIndexByte(st, ')')
	return i < 0 || i+2 >= len(st) || st[i+2] == 'Z'
}

// stop ends every simulator (SIGTERM: drain, then the summary) and reads their --json summaries.
func (s *simFleet) stop() ([]sim.Summary, error) {
	var out []sim.Summary
	var errs []string
	// Signal them all first, so that they drain at the same time.
	for _, c := range s.cmds {
		if c.Process != nil {
			_ = c.Process.Signal(syscall.SIGTERM)
		}
	}
	for i, c := range s.cmds {
		stopProc(c, 60*time.Second)
		var sum sim.Summary
		if err := json.Unmarshal(s.outs[i].Bytes(), &sum); err != nil {
			errs = append(errs, fmt.Sprintf("simulator %d: summary: %v; its log ends: %s", i, err, tail(s.logs[i], 5)))
			continue
		}
		out = append(out, sum)
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

// established counts ESTABLISHED TCP connections (IPv4) whose local port is port.
func established(port int) int {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return -1
	}
	defer f.Close()
	return countEstablished(bufio.NewScanner(f), port)
}

func countEstablished(sc *bufio.Scanner, port int) int {
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "01" {
			n++
		}
	}
	return n
}

// perSecondSince merges the simulators' timelines into connects per second after t: second i
// holds the connects of every simulator second that ended in (t+i s, t+(i+1) s].
func perSecondSince(sums []sim.Summary, t time.Time) []int {
	var per []int
	for _, s := range sums {
		for _, sec := range s.Timeline {
			end := s.Started.Add(time.Duration(sec.Second+1) * time.Second)
			if !end.After(t) || sec.Connects == 0 {
				continue
			}
			i := int((end.Sub(t) - 1) / time.Second)
			for len(per) <= i {
				per = append(per, 0)
			}
			per[i] += int(sec.Connects)
		}
	}
	return per
}
