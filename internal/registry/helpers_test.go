package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/registry/registrytest"
)

// testStart is the fake clock's start: not on a whole second, to catch lost milliseconds.
var testStart = time.Date(2026, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

var testURLs sync.Map // *Registry -> the URL it was opened with

// forEachBackend runs fn as two subtests, "sqlite" and "postgres", each with a fresh registry
// whose clock is a *clock.Fake at testStart (see fakeClock). PostgreSQL not answering fails
// the test: the registry tests never skip a backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, r *Registry)) {
	t.Helper()
	for _, backend := range []string{BackendSQLite, BackendPostgres} {
		t.Run(backend, func(t *testing.T) {
			fn(t, openTest(t, backend))
		})
	}
}

// openTest opens a fresh registry on backend and closes it (and drops its schema) at the end.
func openTest(tb testing.TB, backend string) *Registry {
	tb.Helper()
	ctx := context.Background()
	var url string
	switch backend {
	case BackendSQLite:
		url = "sqlite://" + filepath.Join(tb.TempDir(), "registry.db")
	case BackendPostgres:
		url = registrytest.SchemaURL(tb)
	default:
		tb.Fatalf("unknown backend %q", backend)
	}
	r, err := Open(ctx, url, "", clock.NewFake(testStart))
	require.NoError(tb, err)
	require.Equal(tb, backend, r.Backend())
	testURLs.Store(r, url)
	tb.Cleanup(func() {
		testURLs.Delete(r)
		require.NoError(tb, r.Close())
	})
	return r
}

func testURL(tb testing.TB, r *Registry) string {
	u, ok := testURLs.Load(r)
	require.True(tb, ok)
	return u.(string)
}

func fakeClock(r *Registry) *clock.Fake { return r.clk.(*clock.Fake) }

// testCA signs device certificates the way the EST endpoint will: a real ECDSA P-256 CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  func() time.Time
}

func newTestCA(tb testing.TB, now func() time.Time) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "registry test CA"},
		NotBefore:             now().Add(-time.Hour),
		NotAfter:              now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(tb, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(tb, err)
	return &testCA{cert: cert, key: key, now: now}
}

// sign issues a device certificate for id over pub.
func (ca *testCA) sign(id string, pub any) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial.Add(serial, big.NewInt(1)),
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// issuer returns an Enroll callback that signs a certificate for a fresh key.
func (ca *testCA) issuer(tb testing.TB) func(string) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	return func(id string) (*x509.Certificate, error) { return ca.sign(id, &key.PublicKey) }
}

// csrIssuer returns an Enroll callback doing what the EST endpoint does with a request: parse
// the PKCS#10 CSR, check its signature, sign a certificate for its key.
func (ca *testCA) csrIssuer(csrDER []byte) func(string) (*x509.Certificate, error) {
	return func(id string) (*x509.Certificate, error) {
		csr, err := x509.ParseCertificateRequest(csrDER)
		if err != nil {
			return nil, err
		}
		if err := csr.CheckSignature(); err != nil {
			return nil, fmt.Errorf("CSR signature: %w", err)
		}
		return ca.sign(id, csr.PublicKey)
	}
}

func newCSR(tb testing.TB, cn string) []byte {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	require.NoError(tb, err)
	return der
}

// oneToken creates a single enrollment token.
func oneToken(t testing.TB, r *Registry, spec TokenSpec) string {
	t.Helper()
	spec.Count = 1
	toks, err := r.CreateEnrollmentTokens(context.Background(), spec, "o-test")
	require.NoError(t, err)
	require.Len(t, toks, 1)
	return toks[0]
}

// auditActions returns the actions of the audit log, oldest first.
func auditActions(t testing.TB, r *Registry) []string {
	t.Helper()
	entries, err := r.ListAudit(context.Background(), maxListLimit, 0)
	require.NoError(t, err)
	out := make([]string, len(entries))
	for i, e := range entries {
		out[len(entries)-1-i] = e.Action
	}
	return out
}
