package estserver

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol/est"
)

const (
	day  = 24 * time.Hour
	year = 365 * day
)

// dormantFixture is an enrollment server over a real SQLite registry and a real CA, both on a
// fake clock, served over TLS.
type dormantFixture struct {
	t   *testing.T
	clk *clock.Fake
	ca  *pki.CA
	reg *registry.Registry
	est *Server
	url string
	cl  *http.Client
}

// hookRegistry is the real registry with a hook after NewestCertificate answers, to change
// the registry between the handler's checks and its record.
type hookRegistry struct {
	*registry.Registry
	afterNewest func()
}

func (h *hookRegistry) NewestCertificate(ctx context.Context, id string) (*registry.Certificate, error) {
	c, err := h.Registry.NewestCertificate(ctx, id)
	if h.afterNewest != nil {
		h.afterNewest()
	}
	return c, err
}

func newDormantFixture(t *testing.T, window time.Duration, hook func(*hookRegistry)) *dormantFixture {
	t.Helper()
	clk := clock.NewFake(time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC))
	ca, err := pki.NewCA("dormant test CA", clk.Now().Add(-5*year))
	require.NoError(t, err)
	reg, err := registry.Open(context.Background(), "", t.TempDir(), clk)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, reg.Close()) })
	hr := &hookRegistry{Registry: reg}
	if hook != nil {
		hook(hr)
	}
	opts := DefaultOptions()
	opts.DormantReenrollWindow = window
	s := New(ca, hr, clk, opts, nil, prometheus.NewRegistry())
	mux := http.NewServeMux()
	s.Register(mux)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return &dormantFixture{t: t, clk: clk, ca: ca, reg: reg, est: s, url: srv.URL, cl: srv.Client()}
}

// device issues a certificate to id that expired `ago` before now, after a lifetime of 90
// days, and registers it (creating the device, active) unless register is false.
func (f *dormantFixture) device(id string, ago time.Duration, register bool) (crypto.Signer, *x509.Certificate) {
	f.t.Helper()
	key, err := pki.GenerateKey()
	require.NoError(f.t, err)
	cert, _, err := f.ca.DeviceCert(id, key.Public(), f.clk.Now().Add(-ago-90*day), 90*day)
	require.NoError(f.t, err)
	if register {
		require.NoError(f.t, f.reg.AddCertificate(context.Background(), id, cert, true))
	}
	return key, cert
}

// body builds a dormant re-enrollment request: the certificate, a request for newKey (nil:
// a fresh P-256 key) and the signature of signer (the certificate's key, or another).
func (f *dormantFixture) body(signer crypto.Signer, cert *x509.Certificate, newKey crypto.Signer) []byte {
	f.t.Helper()
	if newKey == nil {
		var err error
		newKey, err = pki.GenerateKey()
		require.NoError(f.t, err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, newKey)
	require.NoError(f.t, err)
	sig, err := est.SignDormant(signer, cert.Raw, csr)
	require.NoError(f.t, err)
	return est.EncodeDormantRequest(cert.Raw, csr, sig)
}

func (f *dormantFixture) post(body []byte) (int, string) {
	f.t.Helper()
	resp, err := f.cl.Post(f.url+est.PathDormantReenroll, est.ContentDormant, bytes.NewReader(body))
	require.NoError(f.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(f.t, err)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// refused posts body and checks the answer's status, that its message contains want, and
// that exactly one refusal was counted, for reason.
func (f *dormantFixture) refused(t *testing.T, body []byte, status int, reason, want string) {
	t.Helper()
	before := testutil.ToFloat64(f.est.dormantRefused.WithLabelValues(reason))
	code, msg := f.post(body)
	require.Equal(t, status, code, msg)
	require.Contains(t, msg, want)
	require.Equal(t, before+1, testutil.ToFloat64(f.est.dormantRefused.WithLabelValues(reason)), "refusals counted as %s", reason)
}

func TestDormantReenroll(t *testing.T) {
	f := newDormantFixture(t, DefaultDormantReenrollWindow, nil)
	ctx := context.Background()
	key, old := f.device("d-sleeper", 2*year, true)
	newKey, err := pki.GenerateKey()
	require.NoError(t, err)
	body := f.body(key, old, newKey)

	code, msg := f.post(body)
	require.Equal(t, http.StatusOK, code, msg)
	der, err := est.DecodeBase64([]byte(msg))
	require.NoError(t, err)
	certs, err := est.DecodeCertsOnly(der)
	require.NoError(t, err)
	fresh := certs[0]
	require.Equal(t, "d-sleeper", fresh.Subject.CommonName)
	require.True(t, newKey.Public().(*ecdsa.PublicKey).Equal(fresh.PublicKey))
	require.Equal(t, f.clk.Now().Add(90*day), fresh.NotAfter, "a full lifetime from now")
	_, err = fresh.Verify(x509.VerifyOptions{Roots: f.ca.Pool(), CurrentTime: f.clk.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	newest, err := f.reg.NewestCertificate(ctx, "d-sleeper")
	require.NoError(t, err)
	require.Equal(t, registry.SerialHex(fresh), newest.Serial)
	require.Equal(t, 1.0, testutil.ToFloat64(f.est.dormantIssued))
	audit, err := f.reg.ListAudit(ctx, 1, 0)
	require.NoError(t, err)
	require.Equal(t, "device:d-sleeper", audit[0].Actor)
	require.Equal(t, registry.ActionCertificateDormant, audit[0].Action)
	require.Equal(t, "d-sleeper", audit[0].Target)
	require.Contains(t, audit[0].Detail, "expired serial "+registry.SerialHex(old)+", expired 2y ago")

	// The device came back: the same request again, or any request with the old key, is
	// refused, since the expired certificate is no longer the device's newest.
	f.refused(t, body, http.StatusForbidden, dormantNotNewest, "is not the newest of \"d-sleeper\"")
	f.refused(t, f.body(key, old, nil), http.StatusForbidden, dormantNotNewest, "only the newest may come back")
	require.Equal(t, 1.0, testutil.ToFloat64(f.est.dormantIssued))
}

// TestDormantReenrollRefusals covers each refusal, with its status, message and metric.
func TestDormantReenrollRefusals(t *testing.T) {
	f := newDormantFixture(t, DefaultDormantReenrollWindow, nil)
	ctx := context.Background()
	key, old := f.device("d-sleeper", 2*year, true)

	t.Run("request", func(t *testing.T) {
		f.refused(t, []byte("not PEM"), http.StatusBadRequest, dormantRequest, "malformed EST message")
		f.refused(t, bytes.Repeat([]byte(" "), est.MaxDormantRequest+1), http.StatusRequestEntityTooLarge, dormantRequest, "the limit is 16384 bytes")
		weak, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		require.NoError(t, err)
		f.refused(t, f.body(key, old, weak), http.StatusBadRequest, dormantRequest, "P-224 is too weak")
		f.refused(t, f.body(key, old, key), http.StatusBadRequest, dormantRequest, "the expired certificate's key: make a new key")
	})
	t.Run("not_expired", func(t *testing.T) {
		k, c := f.device("d-awake", -30*day, true) // expires in 30 days
		f.refused(t, f.body(k, c, nil), http.StatusConflict, dormantNotExpired, "renew it with /.well-known/est/simplereenroll")
	})
	t.Run("window", func(t *testing.T) {
		k, c := f.device("d-rip", DefaultDormantReenrollWindow+30*day, true)
		f.refused(t, f.body(k, c, nil), http.StatusForbidden, dormantWindow,
			"expired 3y30d ago, 30d beyond the dormant re-enrollment window of 3y")
	})
	t.Run("certificate", func(t *testing.T) {
		other, err := pki.NewCA("another CA", f.clk.Now().Add(-5*year))
		require.NoError(t, err)
		fk, err := pki.GenerateKey()
		require.NoError(t, err)
		foreign, _, err := other.DeviceCert("d-sleeper", fk.Public(), f.clk.Now().Add(-year-90*day), 90*day)
		require.NoError(t, err)
		f.refused(t, f.body(fk, foreign, nil), http.StatusForbidden, dormantCertificate, "was not issued by this server's CA")

		k, unknown := f.device("d-unknown", year, false)
		f.refused(t, f.body(k, unknown, nil), http.StatusForbidden, dormantCertificate, `device "d-unknown" is not registered`)
		_, _ = f.device("d-known", year, true)
		k, unregistered := f.device("d-known", year, false)
		f.refused(t, f.body(k, unregistered, nil), http.StatusForbidden, dormantCertificate, "is not registered")
		k, elsewhere := f.device("d-known", year, false)
		require.NoError(t, f.reg.AddCertificate(ctx, "d-other", elsewhere, true))
		f.refused(t, f.body(k, elsewhere, nil), http.StatusForbidden, dormantCertificate, "is registered to another device")
	})
	t.Run("signature", func(t *testing.T) {
		thief, err := pki.GenerateKey()
		require.NoError(t, err)
		f.refused(t, f.body(thief, old, nil), http.StatusForbidden, dormantSignature, "does not verify with the expired certificate's key")
	})
	t.Run("status", func(t *testing.T) {
		k, c := f.device("d-paused", year, true)
		require.NoError(t, f.reg.SetStatus(ctx, "d-paused", registry.StatusSuspended, "o-test", ""))
		f.refused(t, f.body(k, c, nil), http.StatusForbidden, dormantStatus, `device "d-paused" is suspended: an operator must resume it first`)
		k, c = f.device("d-gone", year, true)
		require.NoError(t, f.reg.SetStatus(ctx, "d-gone", registry.StatusRevoked, "o-test", ""))
		f.refused(t, f.body(k, c, nil), http.StatusForbidden, dormantStatus, `device "d-gone" is revoked: it was revoked for good`)
	})
	t.Run("revoked", func(t *testing.T) {
		// Revoked, then set active again: the device is active, its old certificate stays
		// revoked.
		k, c := f.device("d-back", year, true)
		require.NoError(t, f.reg.SetStatus(ctx, "d-back", registry.StatusRevoked, "o-test", ""))
		require.NoError(t, f.reg.SetStatus(ctx, "d-back", registry.StatusActive, "o-test", ""))
		f.refused(t, f.body(k, c, nil), http.StatusForbidden, dormantRevoked, "of \"d-back\" was revoked at")
	})
	t.Run("not_newest", func(t *testing.T) {
		// The device renewed a year before it went to sleep: its older certificate, expired
		// longer ago, cannot bring it back.
		k, older := f.device("d-renewed", 2*year, true)
		_, _ = f.device("d-renewed", year, true)
		f.refused(t, f.body(k, older, nil), http.StatusForbidden, dormantNotNewest, "is not the newest of \"d-renewed\"")
	})
	t.Run("conflict", func(t *testing.T) {
		g := newDormantFixture(t, DefaultDormantReenrollWindow, func(h *hookRegistry) {
			h.afterNewest = func() {
				// An operator suspends the device while its request is being checked.
				require.NoError(t, h.SetStatus(context.Background(), "d-racy", registry.StatusSuspended, "o-test", ""))
			}
		})
		k, c := g.device("d-racy", year, true)
		g.refused(t, g.body(k, c, nil), http.StatusConflict, dormantConflict, "device d-racy is suspended")
		certs, err := g.reg.DeviceCertificates(ctx, "d-racy")
		require.NoError(t, err)
		require.Len(t, certs, 1, "nothing recorded")
	})
	t.Run("disabled", func(t *testing.T) {
		g := newDormantFixture(t, 0, nil)
		k, c := g.device("d-sleeper", year, true)
		g.refused(t, g.body(k, c, nil), http.StatusForbidden, dormantDisabled, "turned off on this server (--dormant-reenroll-window 0)")
	})
	require.Zero(t, testutil.ToFloat64(f.est.dormantIssued), "no refused request got a certificate")
	certs, err := f.reg.DeviceCertificates(ctx, "d-sleeper")
	require.NoError(t, err)
	require.Len(t, certs, 1)
}

func TestOptionsValidateDormantWindow(t *testing.T) {
	o := DefaultOptions()
	require.Equal(t, 26280*time.Hour, o.DormantReenrollWindow)
	require.NoError(t, o.Validate())
	o.DormantReenrollWindow = 0
	require.NoError(t, o.Validate(), "0 turns dormant re-enrollment off")
	o.DormantReenrollWindow = -time.Hour
	require.EqualError(t, o.Validate(), "invalid dormant_reenroll_window -1h0m0s: must be positive, or 0 to turn dormant re-enrollment off")
}

func TestFmtDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                                   "0s",
		1500 * time.Millisecond:             "2s",
		26280 * time.Hour:                   "3y",
		3*year + 30*day + 4*time.Hour:       "3y30d4h",
		2*day + 3*time.Minute + time.Second: "2d3m1s",
		-day:                                "-1d",
	} {
		require.Equal(t, want, fmtDuration(d), "%v", d)
	}
}
