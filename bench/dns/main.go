// Command dns measures Millwright's authoritative DNS server against Knot serving the same
// zone in the same run: it registers -devices devices in a SQLite registry (a share of them
// routed by their own routes, a group route and a tag route), starts internal/dnsserver on a
// free loopback port, transfers the zone from it with AXFR and TSIG into a zone file, starts
// Debian's knotd on that file, and asks both the same queries (every device's name, A, in a
// shuffled order) from -workers closed-loop UDP clients for -duration each. It prints
// queries per second and latency percentiles, and checks that both answered every query the
// same way.
//
//	go run ./bench/dns -devices 100000 -duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/millwright/millwright/internal/dnsserver"
	"github.com/millwright/millwright/internal/registry"
)

const (
	zone   = "gw.example.org"
	keyArg = "bench-key:hmac-sha256:YmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtYmVuY2gtMzI="
)

func main() {
	devices := flag.Int("devices", 100_000, "registered devices")
	routed := flag.Float64("routed", 0.1, "share of devices with a route of their own (a group and a tag route add as many again)")
	duration := flag.Duration("duration", 10*time.Second, "load time per server")
	workers := flag.Int("workers", 16, "closed-loop UDP clients")
	knotd := flag.String("knotd", "/usr/sbin/knotd", "Knot's server binary")
	profile := flag.String("cpuprofile", "", "write a CPU profile of this process (server and load) to this file")
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*devices, *routed, *duration, *workers, *knotd); err != nil {
		pprof.StopCPUProfile()
		log.Fatal(err)
	}
}

func run(n int, routed float64, duration time.Duration, workers int, knotd string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "millwright-dns-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	reg, err := registry.Open(ctx, "sqlite://"+filepath.Join(dir, "registry.db"), "", nil)
	if err != nil {
		return err
	}
	defer reg.Close()
	t0 := time.Now()
	names := make([]string, n)
	devs := make([]registry.DeviceImport, n)
	for i := range devs {
		id := fmt.Sprintf("dev-%06d", i)
		names[i] = id + "." + zone + "."
		devs[i] = registry.DeviceImport{ID: id}
		switch i % 10 {
		case 1:
			devs[i].Groups = []string{"line-a"}
		case 2:
			devs[i].Tags = map[string]string{"site": "north"}
		}
	}
	if _, err := reg.ImportDevices(ctx, devs, "bench", ""); err != nil {
		return err
	}
	for i, c := range []string{"eu-1", "eu-2", "us-1", "ap-1"} {
		addrs := []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i+1))}
		if _, err := reg.AddCluster(ctx, registry.Cluster{Name: c, Addresses: addrs, Default: i == 0}, "bench", ""); err != nil {
			return err
		}
	}
	if _, _, err := reg.SetRoute(ctx, registry.Route{Scope: registry.RouteGroup, Selector: "line-a", Cluster: "us-1"}, "bench", ""); err != nil {
		return err
	}
	if _, _, err := reg.SetRoute(ctx, registry.Route{Scope: registry.RouteTag, Selector: "site=north", Cluster: "ap-1"}, "bench", ""); err != nil {
		return err
	}
	step := max(int(1/routed), 1)
	own := 0
	for i := 0; i < n; i += step {
		rt := registry.Route{Scope: registry.RouteDevice, Selector: fmt.Sprintf("dev-%06d", i), Cluster: "eu-2"}
		if i%(step*10) == 0 {
			rt.Cluster, rt.Address = "", netip.AddrFrom4([4]byte{203, 0, 113, byte(i % 250)})
		}
		if _, _, err := reg.SetRoute(ctx, rt, "bench", ""); err != nil {
			return err
		}
		own++
	}
	fmt.Printf("registry: %d devices, %d device routes, a group and a tag route, in %v\n", n, own, time.Since(t0).Round(time.Millisecond))

	opts := dnsserver.DefaultOptions()
	opts.Zone, opts.Listen, opts.TSIGKeys = zone, "127.0.0.1:0", []string{keyArg}
	opts.RateLimit, opts.RateBurst = 1e9, 1e9 // one source sends everything here
	opts.MaxUDPInFlight = 4096
	srv, err := dnsserver.New(opts, reg, nil, nil, prometheus.NewRegistry())
	if err != nil {
		return err
	}
	t0 = time.Now()
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer srv.Stop()
	fmt.Printf("millwright: snapshot loaded and serving in %v\n", time.Since(t0).Round(time.Millisecond))

	zoneFile := filepath.Join(dir, "zone")
	t0 = time.Now()
	records, err := transfer(srv.Addr().String(), zoneFile)
	if err != nil {
		return err
	}
	fmt.Printf("AXFR: %d records in %v\n", records, time.Since(t0).Round(time.Millisecond))
	knotAddr, stop, err := startKnot(knotd, dir, zoneFile)
	if err != nil {
		return err
	}
	defer stop()

	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	if err := sameAnswers(srv.Addr().String(), knotAddr, names[:min(len(names), 2000)]); err != nil {
		return err
	}
	fmt.Println("answers: the same from both for 2000 names")
	for _, target := range []struct{ name, addr string }{{"millwright", srv.Addr().String()}, {"knot", knotAddr}, {"millwright", srv.Addr().String()}, {"knot", knotAddr}} {
		res, err := load(target.addr, names, duration, workers)
		if err != nil {
			return err
		}
		fmt.Printf("%-10s %8.0f q/s  p50 %6.0f µs  p99 %6.0f µs  p99.9 %6.0f µs  lost %d\n", target.name, res.qps,
			us(res.p50), us(res.p99), us(res.p999), res.lost)
	}
	if _, err := exec.LookPath("dnsperf"); err != nil {
		fmt.Println("dnsperf: not installed (apt-get install dnsperf); skipped")
		return nil
	}
	data := filepath.Join(dir, "queries")
	var sb strings.Builder
	for _, n := range names {
		sb.WriteString(n + " A\n")
	}
	if err := os.WriteFile(data, []byte(sb.String()), 0o600); err != nil {
		return err
	}
	for _, target := range []struct{ name, addr string }{{"millwright", srv.Addr().String()}, {"knot", knotAddr}} {
		host, port, _ := net.SplitHostPort(target.addr)
		out, err := exec.Command("dnsperf", "-s", host, "-p", port, "-d", data, "-l", fmt.Sprint(int(duration.Seconds())), "-c", "4", "-q", "200").CombinedOutput()
		if err != nil {
			return fmt.Errorf("dnsperf: %w\n%s", err, out)
		}
		var qps, avg, lost string
		for line := range strings.SplitSeq(string(out), "\n") {
			line = strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(line, "Queries per second:"):
				qps = strings.TrimSpace(strings.TrimPrefix(line, "Queries per second:"))
			case strings.HasPrefix(line, "Average Latency (s):"):
				avg = strings.TrimSpace(strings.TrimPrefix(line, "Average Latency (s):"))
			case strings.HasPrefix(line, "Queries lost:"):
				lost = strings.TrimSpace(strings.TrimPrefix(line, "Queries lost:"))
			}
		}
		fmt.Printf("dnsperf %-10s %s q/s, average latency %s s, lost %s\n", target.name, qps, avg, lost)
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// transfer writes the zone from addr, transferred with AXFR and TSIG, in master-file format.
func transfer(addr, file string) (int, error) {
	name, alg, secret, err := dnsserver.ParseTSIGKey(keyArg)
	if err != nil {
		return 0, err
	}
	m := new(dns.Msg)
	m.SetAxfr(zone + ".")
	m.SetTsig(name, alg, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{name: secret}}
	env, err := tr.In(m, addr)
	if err != nil {
		return 0, err
	}
	f, err := os.Create(file)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	soas := 0
	for e := range env {
		if e.Error != nil {
			return 0, e.Error
		}
		for _, rr := range e.RR {
			if rr.Header().Rrtype == dns.TypeSOA {
				soas++
				if soas > 1 {
					continue // the closing SOA
				}
			}
			fmt.Fprintln(f, rr.String())
			n++
		}
	}
	return n, f.Sync()
}

func freePort() (int, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0, err
	}
	return port, ln.Close()
}

func startKnot(knotd, dir, zoneFile string) (string, func(), error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
database:
    storage: "%[1]s/knotdb"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "%[1]s"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: %[3]s
    file: "%[4]s"
`, dir, port, zone, zoneFile)
	cf := filepath.Join(dir, "knot.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		return "", nil, err
	}
	cmd := exec.Command(knotd, "-c", cf)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start knotd (apt-get install knot): %w", err)
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion(zone+".", dns.TypeSOA)
	for range 100 {
		if r, _, err := c.Exchange(q, addr); err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			return addr, stop, nil
		}
		time.Sleep(100 * time.Millisecond) // knotd's start, polled
	}
	stop()
	return "", nil, errors.New("knotd did not answer the zone's SOA within 10 s")
}

func sameAnswers(a, b string, names []string) error {
	c := &dns.Client{Timeout: time.Second}
	for _, n := range names {
		var got [2]string
		for i, addr := range []string{a, b} {
			q := new(dns.Msg)
			q.SetQuestion(n, dns.TypeA)
			r, _, err := c.Exchange(q, addr)
			if err != nil {
				return fmt.Errorf("%s %s: %w", addr, n, err)
			}
			var as []string
			for _, rr := range r.Answer {
				as = append(as, rr.(*dns.A).A.String())
			}
			slices.Sort(as)
			got[i] = dns.RcodeToString[r.Rcode] + " " + strings.Join(as, ",")
		}
		if got[0] != got[1] {
			return fmt.Errorf("%s: millwright %q, knot %q", n, got[0], got[1])
		}
	}
	return nil
}

type result struct {
	qps            float64
	p50, p99, p999 time.Duration
	lost           int
}

// load sends queries for names from workers clients, each waiting for its answer before the
// next (closed loop), for d; a query unanswered within 1 s is lost.
func load(addr string, names []string, d time.Duration, workers int) (result, error) {
	var (
		mu   sync.Mutex
		lats []time.Duration
		lost int
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	end := time.Now().Add(d)
	for w := range workers {
		wg.Go(func() {
			conn, err := net.Dial("udp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			buf := make([]byte, 1500)
			var mine []time.Duration
			miss := 0
			for i := w; time.Now().Before(end); i += workers {
				q := new(dns.Msg)
				q.SetQuestion(names[i%len(names)], dns.TypeA)
				b, _ := q.Pack()
				start := time.Now()
				if _, err := conn.Write(b); err != nil {
					errs <- err
					return
				}
				_ = conn.SetReadDeadline(start.Add(time.Second))
				for {
					k, err := conn.Read(buf)
					if err != nil {
						miss++
						break
					}
					if k >= 2 && buf[0] == b[0] && buf[1] == b[1] {
						mine = append(mine, time.Since(start))
						break
					}
				}
			}
			mu.Lock()
			lats = append(lats, mine...)
			lost += miss
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		return result{}, err
	}
	slices.Sort(lats)
	if len(lats) == 0 {
		return result{}, errors.New("no answers")
	}
	pct := func(p float64) time.Duration { return lats[min(int(float64(len(lats))*p), len(lats)-1)] }
	return result{qps: float64(len(lats)) / d.Seconds(), p50: pct(0.5), p99: pct(0.99), p999: pct(0.999), lost: lost}, nil
}
