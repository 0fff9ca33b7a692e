package main

import (
	"bufio"
	"crypto/tls"

	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// holderFleet is the idle-device load generator: several child processes (the open-file limit
// is per process), each connecting from its own 127.0.0.x source address.
type holderFleet struct {
	cmds   []*exec.Cmd
	stdins []io.WriteCloser

	mu     sync.Mutex
	ups    []time.Time
	ready  int
	errs   []string
	update chan struct{}
}

func startHolders(work, server, caFile, prefix string, certs []tls.Certificate, children int, backoffMode string) (*holderFleet, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	h := &holderFleet{update: make(chan struct{}, 1)}
	per := (len(certs) + children - 1) / children
	for k := range children {
		lo, hi := k*per, min((k+1)*per, len(certs))
		if lo >= hi {
			break
		}
		path := filepath.Join(work, fmt.Sprintf("%s-creds-%d.pem", prefix, k))
		if err := writeCreds(path, certs[lo:hi]); err != nil {
			return nil, err
		}
		cmd := exec.Command(self, "-hold", "-hold-server", server, "-hold-creds", path, "-hold-ca", caFile,
			"-hold-source", fmt.Sprintf("127.0.0.%d", 2+k), "-hold-prefix", prefix, "-hold-first", strconv.Itoa(lo),
			"-hold-backoff", backoffMode)
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := startProc(cmd); err != nil {
			h.stop()
			return nil, err
		}
		h.cmds = append(h.cmds, cmd)
		h.stdins = append(h.stdins, stdin)
		go h.read(stdout)
	}
	return h, nil
}

func (h *holderFleet) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		kind, arg, _ := strings.Cut(sc.Text(), " ")
		h.mu.Lock()
		switch kind {
		case "up":
			ns, _ := strconv.ParseInt(arg, 10, 64)
			h.ups = append(h.ups, time.Unix(0, ns))
		case "ready":
			h.ready++
		case "error":
			h.errs = append(h.errs, arg)
		}
		h.mu.Unlock()
		select {
		case h.update <- struct{}{}:
		default:
		}
	}
}

// waitReady waits until every child connected all its devices once.
func (h *holderFleet) waitReady(timeout time.Duration) error {
	deadline := time.After(timeout)
	for {
		h.mu.Lock()
		ready, errs, ups := h.ready, h.errs, len(h.ups)
		h.mu.Unlock()
		if len(errs) > 0 {
			e := errs[0]
			if len(e) > 500 {
				e = e[:500] + "…"
			}
			return fmt.Errorf("load generator: %s (%d devices connected)", e, ups)
		}
		if ready == len(h.cmds) {
			return nil
		}
		select {
		case <-h.update:
		case <-time.After(time.Second):
		case <-deadline:
			return fmt.Errorf("load generator: %d devices connected after %s, %d of %d processes ready", ups, timeout, ready, len(h.cmds))
		}
	}
}

// upsSince are the connects after t, as offsets from t.
func (h *holderFleet) upsSince(t time.Time) []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []time.Duration
	for _, u := range h.ups {
		if u.After(t) {
			out = append(out, u.Sub(t))
		}
	}
	return out
}

func (h *holderFleet) connects() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ups)
}

// stop closes the children's standard input (they disconnect and exit) and reaps them.
func (h *holderFleet) stop() {
	for _, in := range h.stdins {
		_ = in.Close()
	}
	for _, c := range h.cmds {
		stopProc(c, 10*time.Second)
	}
}

// connResult is one server holding idle devices.
type connResult struct {
	target          string
	devices         int
	connectTime     time.Duration
	rssBefore       int64
	rssAfter        int64
	rssLater        int64
	fds             int
	heapInuse       float64 // Go servers only
	stackInuse      float64
	goroutines      float64
	heapInuseBefore float64
	stackBefore     float64
}

func (r connResult) perConn() float64 {
	return float64(r.rssAfter-r.rssBefore) / float64(r.devices)
}

// holdIdle connects devices to a running server, waits for a steady state and measures.
func holdIdle(work, server, caFile, prefix string, certs []tls.Certificate, children, pid int, scrape func() map[string]float64) (connResult, error) {
	r := connResult{devices: len(certs)}
	time.Sleep(3 * time.Second) // the server settles after its start
	r.rssBefore, _ = procRSS(pid)
	if m := scrape(); m != nil {
		r.heapInuseBefore, r.stackBefore = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"]
	}
	t0 := time.Now()
	h, err := startHolders(work, server, caFile, prefix, certs, children, "")
	if err != nil {
		return r, err
	}
	defer h.stop()
	if err := h.waitReady(5 * time.Minute); err != nil {
		return r, err
	}
	r.connectTime = time.Since(t0)
	fmt.Fprintf(os.Stderr, "  %d devices connected in %s\n", len(certs), r.connectTime.Round(100*time.Millisecond))
	// Steady state: 10 s after the last connect, no forced collection.
	time.Sleep(10 * time.Second)
	r.rssAfter, _ = procRSS(pid)
	r.fds = procFDs(pid)
	if m := scrape(); m != nil {
		r.heapInuse, r.stackInuse, r.goroutines = m["go_memstats_heap_inuse_bytes"], m["go_memstats_stack_inuse_bytes"], m["go_goroutines"]
	}
	time.Sleep(20 * time.Second)
	r.rssLater, _ = procRSS(pid)
	return r, nil
}
