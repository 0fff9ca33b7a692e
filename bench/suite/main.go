// Command suite is Millwright's benchmark suite: it builds the server, runs every benchmark
// against it and against its peers (Mosquitto, VictoriaMetrics) on this machine, and writes
// the results into docs/benchmarks.md between its markers. Every figure stands beside the
// same figure of its peer, measured in the same run.
//
//	make bench                         # go run ./bench/suite -out docs/benchmarks.md
//	go run ./bench/suite -quick -only ingest,wire   # short runs while developing
//
// Everything runs on 127.0.0.0/8 and every process the suite starts is killed on the way out.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/millwright/millwright/internal/pki"
)

type options struct {
	out        string
	only       map[string]bool
	quick      bool
	ingestDevs int
	measure    time.Duration
	warmup     time.Duration
	idleDevs   int
	stormDevs  int
	serverEnv  []string
	keep       bool
}

// simProcs is how many simulator processes carry n devices: each simulated agent holds four
// open files (its connection, its spool's lock file, segment and sequence counter), a process
// at most 20,000, so at most 4,500 devices each (and one process per 127.0.0.x source address,
// whose ephemeral ports then suffice too).
func (o options) simProcs(n int) int { return max(1, (n+4499)/4500) }

// env is what every benchmark shares: the built server, the CA, a work directory.
type env struct {
	opts   options
	work   string
	bin    string
	ca     *pki.CA
	caFile string
}

// commands are the command lines of the servers, peers and load generators the suite started,
// for the report (paths shortened to the work directory's names).
var commands []string

// noteCommand records a command line for the report, once.
func noteCommand(args ...string) {
	c := strings.Join(args, " ")
	if workDir != "" {
		c = strings.ReplaceAll(c, workDir+"/", "$WORK/")
	}
	for _, x := range commands {
		if x == c {
			return
		}
	}
	commands = append(commands, c)
}

var workDir string

func main() {
	var (
		o    options
		only string
	)
	flag.StringVar(&o.out, "out", "", "write the results into this Markdown file between the suite's markers (e.g. docs/benchmarks.md)")
	flag.StringVar(&only, "only", "ingest,connections,storm,wire,storage,channel", "benchmarks to run, comma-separated")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, data) for inspection")
	flag.BoolVar(&o.quick, "quick", false, "short runs and small fleets, to check the harness")
	var devs, serverEnv string
	flag.StringVar(&devs, "devices", "", "override fleet sizes: ingest,idle,storm (e.g. 1000,19000,15000)")
	flag.StringVar(&serverEnv, "server-env", "", "extra environment for the Millwright server, comma-separated (e.g. GOGC=50), for experiments")
	flag.Parse()
	o.only = map[string]bool{}
	for _, s := range strings.Split(only, ",") {
		o.only[strings.TrimSpace(s)] = true
	}
	o.ingestDevs, o.measure, o.warmup, o.idleDevs, o.stormDevs = 1000, 8*time.Second, 2*time.Second, 19000, 15000
	if o.quick {
		o.ingestDevs, o.measure, o.warmup, o.idleDevs, o.stormDevs = 100, 2*time.Second, time.Second, 400, 300
	}
	if devs != "" {
		if _, err := fmt.Sscanf(devs, "%d,%d,%d", &o.ingestDevs, &o.idleDevs, &o.stormDevs); err != nil {
			fmt.Fprintln(os.Stderr, "bench: -devices wants three numbers, ingest,idle,storm:", err)
			os.Exit(2)
		}
	}
	if serverEnv != "" {
		o.serverEnv = strings.Split(serverEnv, ",")
	}
	serverExtraEnv = o.serverEnv
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "interrupted: stopping every process the suite started")
		killAll()
		os.Exit(130)
	}()
	err := run(o)
	killAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	m := describeMachine()
	work, err := os.MkdirTemp("", "mw-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "keeping the work directory", work)
	} else {
		defer os.RemoveAll(work)
	}
	workDir = work
	e := &env{opts: o, work: work, bin: filepath.Join(work, "millwright")}
	fmt.Fprintln(os.Stderr, "building millwright…")
	build := exec.Command("go", "build", "-o", e.bin, "./cmd/millwright")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	caDir := filepath.Join(work, "ca")
	if e.ca, _, err = pki.LoadOrCreateCA(caDir, time.Now()); err != nil {
		return err
	}
	e.caFile = filepath.Join(work, "ca.pem")
	if err := os.WriteFile(e.caFile, e.ca.PEM, 0o644); err != nil {
		return err
	}

	sections := map[string]string{"about": header(m)}
	var failed []string
	type bench struct {
		name string
		fn   func(*env) (string, error)
	}
	for _, b := range []bench{{"ingest", benchIngest}, {"connections", benchConnections}, {"storm", benchStorm}, {"channel", benchChannel},
		{"wire", benchWire}, {"storage", benchStorage}} {
		if !o.only[b.name] {
			continue
		}
		fmt.Fprintf(os.Stderr, "== %s\n", b.name)
		commands = nil
		t0, load0 := time.Now(), loadAverage()
		s, err := b.fn(e)
		killAll()
		if err != nil {
			// The other benchmarks still run; the report says what failed and the suite
			// exits non-zero.
			fmt.Fprintf(os.Stderr, "== %s FAILED: %v\n", b.name, err)
			failed = append(failed, b.name)
			s = fmt.Sprintf("### %s\n\n**Failed in this run:** %v\n", b.name, err)
		}
		title, rest, _ := strings.Cut(s, "\n\n")
		s = title + "\n\n" + runLine(t0, time.Since(t0), load0, loadAverage(), o.quick) + rest + commandList()
		fmt.Fprintf(os.Stderr, "== %s done in %s\n%s\n", b.name, time.Since(t0).Round(time.Second), s)
		sections[b.name] = s
	}
	if o.out == "" {
		for _, name := range sectionOrder {
			if s, ok := sections[name]; ok {
				fmt.Println(s)
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
		}
		return nil
	}
	old, err := os.ReadFile(o.out)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	if os.IsNotExist(err) {
		old = []byte("# Benchmarks\n")
	}
	merged, err := spliceSections(string(old), sections)
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(merged), 0o644); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s (written to %s)", strings.Join(failed, ", "), o.out)
	}
	return nil
}

// runLine opens each benchmark's section: when it ran, how long, how loaded the machine was.
func runLine(started time.Time, took time.Duration, load0, load1 string, quick bool) string {
	q := ""
	if quick {
		q = " **Quick mode: small fleets, short windows — not for comparison.**"
	}
	return fmt.Sprintf("_Measured %s UTC in %s; load average (1, 5, 15 min) %s before, %s after._%s\n\n",
		started.UTC().Format("2006-01-02 15:04"), took.Round(time.Second), load0, load1, q)
}

func header(m machine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Benchmark suite\n\n```sh\nmake bench    # = go run ./bench/suite -out docs/benchmarks.md\n")
	fmt.Fprintf(&b, "go run ./bench/suite -only storm,storage -out docs/benchmarks.md   # rewrites those sections only\n```\n\n")
	t := newTable("machine", "")
	t.add("CPU", m.cpu)
	t.add("cores", fmt.Sprint(m.cores))
	t.add("RAM", fmt.Sprintf("%.1f GiB", float64(m.ramBytes)/(1<<30)))
	t.add("kernel", "Linux "+m.kernel)
	t.add("Go", m.goVersion)
	t.add("open files per process", m.fdLimit)
	b.WriteString(t.String())
	b.WriteString(`
Each section below says when it was measured and how loaded the machine was. The load
generators run on the same two cores as the system under test, so absolute rates are lower
than a server alone would reach; each table gives the peer's figure from the same run and the
ratio between them. All traffic stays on 127.0.0.0/8.
`)
	return b.String()
}

// tlsFor returns the client TLS configuration of device i.
func tlsFor(ca *pki.CA, certs []tls.Certificate) func(int) *tls.Config {
	return func(i int) *tls.Config {
		return &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{certs[i]}, ServerName: "localhost"}
	}
}

// newServerData makes a Millwright data directory with the suite's CA and the devices'
// certificates registered.
func (e *env) newServerData(name, prefix string, certs []tls.Certificate) (string, error) {
	dir := filepath.Join(e.work, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for _, f := range []string{pki.CAFile, pki.CAKeyFile} {
		b, err := os.ReadFile(filepath.Join(e.work, "ca", f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			return "", err
		}
	}
	if len(certs) == 0 {
		return dir, nil
	}
	if err := register(dir, prefix, certs); err != nil {
		return "", fmt.Errorf("register devices: %w", err)
	}
	return dir, nil
}

func (e *env) scraper(m *millwright) func() map[string]float64 {
	return func() map[string]float64 {
		v, err := m.metrics(e.ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, "  metrics:", err)
			return nil
		}
		return v
	}
}

// connectedClients reads the server's connected-clients gauge (0 when the scrape fails).
func (e *env) connectedClients(m *millwright) func() int {
	scrape := e.scraper(m)
	return func() int {
		if v := scrape(); v != nil {
			return int(v["millwright_mqtt_connected_clients"])
		}
		return 0
	}
}

// commandList renders the recorded command lines.
func commandList() string {
	var b strings.Builder
	if len(commands) == 0 {
		return ""
	}
	b.WriteString("\nProcesses this benchmark started (`$WORK` is the suite's temporary directory; ports are free loopback ports picked at run time):\n\n```sh\n")
	for _, c := range commands {
		b.WriteString(c + "\n")
	}
	b.WriteString("```\n")
	return b.String()
}
