package estclient_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/agent/estclient"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
	"github.com/millwright/millwright/internal/server/servertest"
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
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: leaf.Subject.CommonName})
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
