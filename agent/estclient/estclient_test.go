package estclient_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/agent/estclient"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
	"github.com/millwright/millwright/protocol"
)

func startServer(t *testing.T) *server.Server { return servertest.Start(t, nil) }

func token(t *testing.T, s *server.Server, spec registry.TokenSpec) string {
	t.Helper()
	toks, err := s.Registry().CreateEnrollmentTokens(context.Background(), spec, "test")
	require.NoError(t, err)
	return toks[0]
}

func connect(t *testing.T, s *server.Server, pair tls.Certificate) error {
	t.Helper()
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: &tls.Config{RootCAs: s.CA().Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}}).DialContext(ctx, "tcp", s.MQTTAddr().String())
	if err != nil {
		return err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: pahopackets.NewThreadSafeConn(conn), ClientID: leaf.Subject.CommonName})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: leaf.Subject.CommonName, KeepAlive: 30, CleanStart: true}); err != nil {
		_ = conn.Close()
		return err
	}
	return c.Disconnect(&paho.Disconnect{})
}

func TestEnrollDirAndRotation(t *testing.T) {
	s := startServer(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(caFile, s.CA().PEM, 0o644))
	dir := t.TempDir()
	url := "https://localhost:" + portOf(s.HTTPAddr().String())
	ctx := context.Background()

	id, err := estclient.EnrollDir(ctx, estclient.Options{Server: url, Token: token(t, s, registry.TokenSpec{Count: 1, Model: "gw-200"}),
		Model: "gw-200", CAFile: caFile, Dir: dir})
	require.NoError(t, err)
	st, err := os.Stat(filepath.Join(dir, estclient.KeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the key is private")
	old, err := tls.LoadX509KeyPair(filepath.Join(dir, estclient.CertFile), filepath.Join(dir, estclient.KeyFile))
	require.NoError(t, err)
	require.NoError(t, connect(t, s, old))
	oldLeaf, err := x509.ParseCertificate(old.Certificate[0])
	require.NoError(t, err)
	require.Equal(t, id, oldLeaf.Subject.CommonName)

	// A refused token is a permanent error naming the reason.
	_, err = estclient.EnrollDir(ctx, estclient.Options{Server: url, Token: "mwe_unknown", CAFile: caFile, Dir: t.TempDir()})
	var refused *estclient.RefusedError
	require.ErrorAs(t, err, &refused)
	require.True(t, refused.Permanent())

	// Rotation with an injected clock: nothing before two-thirds of the lifetime, then a new
	// certificate for a new key; both certificates work until the old one expires.
	fake := clock.NewFake(time.Now())
	renewed := make(chan *x509.Certificate, 1)
	rot := &estclient.Rotator{Dir: dir, Client: &estclient.Client{Server: url, Roots: s.CA().Pool()}, Clock: fake,
		Renewed: func(c *x509.Certificate) {
			select {
			case renewed <- c:
			default:
			}
		}}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- rot.Run(rctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	fake.BlockUntil(1)
	at := estclient.RenewAt(oldLeaf)
	require.InDelta(t, float64(oldLeaf.NotAfter.Sub(oldLeaf.NotBefore))*2/3, float64(at.Sub(oldLeaf.NotBefore)), float64(time.Second))
	fake.Set(at.Add(-time.Minute))
	select {
	case <-renewed:
		t.Fatal("renewed before two-thirds of the lifetime")
	case <-time.After(100 * time.Millisecond):
	}
	fake.Set(at.Add(time.Second))
	var fresh *x509.Certificate
	select {
	case fresh = <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal at two-thirds of the lifetime")
	}
	require.Equal(t, id, fresh.Subject.CommonName)
	require.NotEqual(t, oldLeaf.SerialNumber, fresh.SerialNumber)
	newPair, err := tls.LoadX509KeyPair(filepath.Join(dir, estclient.CertFile), filepath.Join(dir, estclient.KeyFile))
	require.NoError(t, err)
	require.NotEqual(t, old.Certificate[0], newPair.Certificate[0])
	require.NoError(t, connect(t, s, newPair))
	require.NoError(t, connect(t, s, old), "the old certificate stays valid until it expires")
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestEnrollLeavesNoConnection checks that an enrollment closes its HTTPS
// connection: a fleet enrolling at once must not hold a socket per device.
func TestEnrollLeavesNoConnection(t *testing.T) {
	s := startServer(t)
	port := portOf(s.HTTPAddr().String())
	c := &estclient.Client{Server: "https://localhost:" + port, Roots: s.CA().Pool()}
	for range 5 {
		key, err := estclient.NewKey()
		require.NoError(t, err)
		_, err = c.Enroll(context.Background(), token(t, s, registry.TokenSpec{Count: 1}), key)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return establishedTo(t, port) == 0 }, 5*time.Second, 20*time.Millisecond,
		"connections to the EST port still open after enrolling")
}

// establishedTo counts this process's established TCP connections whose
// remote port is port (the client sides of connections to the server in
// this process).
func establishedTo(t *testing.T, port string) int {
	t.Helper()
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	want := fmt.Sprintf(":%04X", p)
	own := map[string]bool{} // socket inodes of this process
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(link, "socket:[") {
			own[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	n := 0
	for _, f := range []string{"/proc/self/net/tcp", "/proc/self/net/tcp6"} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(line)
			if len(fields) > 9 && strings.HasSuffix(fields[2], want) && fields[3] == "01" && own[fields[9]] {
				n++
			}
		}
	}
	return n
}

// expiredDevice registers a device whose certificate expired 20 minutes ago and writes its
// certificate and key into a new credentials directory.
func expiredDevice(t *testing.T, s *server.Server, id string) (dir string, leaf *x509.Certificate) {
	t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(t, err)
	leaf, certPEM, err := s.CA().DeviceCert(id, key.Public(), time.Now().Add(-30*time.Minute), 10*time.Minute)
	require.NoError(t, err)
	require.NoError(t, s.Registry().AddCertificate(context.Background(), id, leaf, true))
	keyPEM, err := pki.EncodeKey(key)
	require.NoError(t, err)
	dir = t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, estclient.CertFile), certPEM, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, estclient.KeyFile), keyPEM, 0o600))
	return dir, leaf
}

// postBatch posts an empty batch over HTTPS with pair as the client certificate: an error
// when the server does not take the connection, nil for any HTTP answer.
func postBatch(t *testing.T, s *server.Server, pair tls.Certificate) error {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: s.CA().Pool(), Certificates: []tls.Certificate{pair}, ServerName: "localhost"}}}
	resp, err := c.Post("https://"+s.HTTPAddr().String()+protocol.BatchPath, "application/senml+cbor", strings.NewReader(""))
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// syncBuffer collects log output written from other goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// TestRotatorDormant: a Rotator whose certificate has expired re-enrolls by dormant
// re-enrollment at once, stores the new pair, and the device connects with it; the expired
// certificate itself is still refused at connect.
func TestRotatorDormant(t *testing.T) {
	s := startServer(t)
	url := "https://localhost:" + portOf(s.HTTPAddr().String())
	dir, old := expiredDevice(t, s, "d-sleeper")
	expired, err := tls.LoadX509KeyPair(filepath.Join(dir, estclient.CertFile), filepath.Join(dir, estclient.KeyFile))
	require.NoError(t, err)
	require.Error(t, connect(t, s, expired), "the expired certificate cannot connect")

	fake := clock.NewFake(time.Now())
	var logs syncBuffer
	renewed := make(chan *x509.Certificate, 1)
	rot := &estclient.Rotator{Dir: dir, Client: &estclient.Client{Server: url, Roots: s.CA().Pool()}, Clock: fake,
		Log:     slog.New(slog.NewTextHandler(&logs, nil)),
		Renewed: func(c *x509.Certificate) { renewed <- c }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rot.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	var fresh *x509.Certificate
	select {
	case fresh = <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatalf("no dormant re-enrollment; log:\n%s", logs.String())
	}
	require.Equal(t, "d-sleeper", fresh.Subject.CommonName)
	require.NotEqual(t, old.SerialNumber, fresh.SerialNumber)
	require.Contains(t, logs.String(), "certificate re-enrolled after dormancy")
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, estclient.CertFile), filepath.Join(dir, estclient.KeyFile))
	require.NoError(t, err)
	require.NotEqual(t, expired.Certificate[0], pair.Certificate[0])
	require.NoError(t, connect(t, s, pair))
	require.Error(t, connect(t, s, expired), "the expired certificate still cannot connect")
	require.Error(t, postBatch(t, s, expired), "nor post a batch over HTTPS")
	require.NoError(t, postBatch(t, s, pair))
	// Renewal goes back to its ordinary schedule: the next attempt waits for two-thirds of the
	// new certificate's lifetime.
	fake.BlockUntil(1)
}

// TestRotatorDormantRefused: when the server refuses a dormant re-enrollment (here: the device
// is suspended), the Rotator logs the server's reason, keeps its files, and tries again after
// a backoff on its own pace.
func TestRotatorDormantRefused(t *testing.T) {
	s := startServer(t)
	url := "https://localhost:" + portOf(s.HTTPAddr().String())
	dir, _ := expiredDevice(t, s, "d-paused")
	require.NoError(t, s.Registry().SetStatus(context.Background(), "d-paused", registry.StatusSuspended, "o-test", ""))
	before, err := os.ReadFile(filepath.Join(dir, estclient.CertFile))
	require.NoError(t, err)

	fake := clock.NewFake(time.Now())
	var logs syncBuffer
	rot := &estclient.Rotator{Dir: dir, Client: &estclient.Client{Server: url, Roots: s.CA().Pool()}, Clock: fake,
		Log:          slog.New(slog.NewTextHandler(&logs, nil)),
		DormantRetry: backoff.Policy{Base: time.Hour, Cap: 24 * time.Hour, Jitter: backoff.JitterNone},
		Renewed:      func(*x509.Certificate) { t.Error("renewed a suspended device") }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rot.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	const refusal = `re-enrollment after dormancy refused by the server; retrying later" reason="dormant re-enrollment refused: device \"d-paused\" is suspended: an operator must resume it first" status=403`
	fake.BlockUntil(1) // the first attempt was made, and refused
	require.Equal(t, 1, strings.Count(logs.String(), refusal), "log:\n%s", logs.String())
	require.Contains(t, logs.String(), "retry_in=1h0m0s")
	fake.Advance(59 * time.Minute)
	require.Equal(t, 1, strings.Count(logs.String(), refusal), "retried before its backoff")
	fake.Advance(time.Minute)
	require.Eventually(t, func() bool { return strings.Count(logs.String(), refusal) == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "retry_in=2h0m0s") }, 10*time.Second, 10*time.Millisecond,
		"the next retry waits twice as long")
	after, err := os.ReadFile(filepath.Join(dir, estclient.CertFile))
	require.NoError(t, err)
	require.Equal(t, before, after, "a refused device keeps its certificate")
}
