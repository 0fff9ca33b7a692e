package dnsserver

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/internal/registry"
)

// syncBuffer is a bytes.Buffer safe for the writer process and the reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startKnot runs Debian's knotd as a secondary of the zone, pulling from primary with the
// test TSIG key and accepting NOTIFY signed with it, on port.
func startKnotAt(t *testing.T, primary *net.UDPAddr, port int) int {
	t.Helper()
	knotd, err := exec.LookPath("knotd")
	if err != nil {
		knotd = "/usr/sbin/knotd"
	}
	_, err = os.Stat(knotd)
	require.NoError(t, err, "the test needs Debian's knot package (scripts/test installs it)")
	dir := t.TempDir()
	name, _, secret, err := ParseTSIGKey(testKey)
	require.NoError(t, err)
	conf := fmt.Sprintf(`server:
    rundir: "%[1]s"
    listen: 127.0.0.1@%[2]d
database:
    storage: "%[1]s/db"
log:
  - target: stderr
    any: info
key:
  - id: %[3]s
    algorithm: hmac-sha256
    secret: %[4]s
remote:
  - id: primary
    address: %[5]s@%[6]d
    key: %[3]s
acl:
  - id: notify_from_primary
    address: %[5]s
    key: %[3]s
    action: notify
template:
  - id: default
    storage: "%[1]s/zones"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
zone:
  - domain: %[7]s
    master: primary
    acl: notify_from_primary
`, dir, port, strings.TrimSuffix(name, "."), secret, primary.IP.String(), primary.Port, testZone)
	cf := filepath.Join(dir, "knot.conf")
	require.NoError(t, os.WriteFile(cf, []byte(conf), 0o600))
	out := &syncBuffer{}
	cmd := exec.Command(knotd, "-c", cf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() || os.Getenv("KNOT_LOG") != "" {
			t.Logf("knotd output:\n%s", out.String())
		}
	})
	return port
}

// TestKnotSecondary: a real Knot secondary transfers the zone with TSIG, is notified of a
// change and answers the new record; AXFR from the server without the key is refused.
func TestKnotSecondary(t *testing.T) {
	var knotPort int
	r := newRig(t, func(o *Options) {
		knotPort = freeDNSPort()
		o.Secondaries = []string{fmt.Sprintf("127.0.0.1:%d", knotPort)}
		o.Refresh = time.Hour // the test reloads itself
	})
	r.route(t, registry.Route{Scope: registry.RouteDevice, Selector: "dev-3", Cluster: "us-1"})
	knotPort = startKnotAt(t, r.srv.Addr(), knotPort)

	knotAnswers := func(name, want string) func() bool {
		return func() bool {
			res := dig(t, "127.0.0.1", knotPort, name, "A")
			return res.status == "NOERROR" && len(res.answers) == 1 && res.answers[0] == want
		}
	}
	// The first transfer, at Knot's start.
	require.Eventually(t, knotAnswers("dev-3."+testZone, "A 198.51.100.1"), 20*time.Second, 50*time.Millisecond)
	require.Eventually(t, knotAnswers("anything."+testZone, "A 192.0.2.1"), 5*time.Second, 50*time.Millisecond, "the wildcard")
	require.GreaterOrEqual(t, testutil.ToFloat64(r.srv.m.transfers.WithLabelValues("ok")), 1.0)

	// A change: NOTIFY, transfer, and Knot answers the new record.
	serial := r.srv.Serial()
	r.route(t, registry.Route{Scope: registry.RouteDevice, Selector: "dev-1", Address: netip.MustParseAddr("203.0.113.9")})
	require.Greater(t, r.srv.Serial(), serial)
	require.Eventually(t, knotAnswers("dev-1."+testZone, "A 203.0.113.9"), 20*time.Second, 50*time.Millisecond)
	require.Eventually(t, func() bool { return testutil.ToFloat64(r.srv.m.notifies.WithLabelValues("ok")) >= 1 }, 10*time.Second, 20*time.Millisecond)
	soa := dig(t, "127.0.0.1", knotPort, testZone, "SOA")
	require.Len(t, soa.answers, 1)
	require.Contains(t, soa.answers[0], fmt.Sprintf(" %d ", r.srv.Serial()), "Knot has the new serial")

	// Without the key: refused.
	a := r.srv.Addr()
	res := dig(t, a.IP.String(), a.Port, testZone, "AXFR")
	require.Contains(t, res.out, "Transfer failed", res.out)
}

// freeDNSPort finds a loopback port free for both UDP and TCP.
func freeDNSPort() int {
	pc, ln, err := listenBoth("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	_ = pc.Close()
	_ = ln.Close()
	return port
}
