// Package estserver is the server side of device enrollment: EST (RFC 7030) endpoints that turn a
// one-time enrollment token and a certificate request made on the device into a device
// certificate, re-enrollment with the current certificate for rotation, dormant re-enrollment
// for a device whose certificate expired while it was powered off (dormant.go), and the
// certificate revocation list for other verifiers.
//
// The device's private key never reaches the server: the device sends a PKCS #10 request, the
// server checks its signature and signs the public key with the device ID it assigns (or the one
// bound to the token) as the common name. Whatever name the request asks for is ignored.
package estserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/internal/httplimit"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol/est"
)

// Registry is what enrollment needs of the device registry.
type Registry interface {
	CheckEnrollmentToken(ctx context.Context, token, model string) error
	Enroll(ctx context.Context, token, model, remote string, issue func(deviceID string) (*x509.Certificate, error)) (*registry.Device, *x509.Certificate, error)
	AddCertificate(ctx context.Context, deviceID string, cert *x509.Certificate, create bool) error
	Device(ctx context.Context, id string) (*registry.Device, error)
	Certificate(ctx context.Context, serial string) (*registry.Certificate, error)
	NewestCertificate(ctx context.Context, deviceID string) (*registry.Certificate, error)
	AddDormantCertificate(ctx context.Context, deviceID, expiredSerial string, cert *x509.Certificate, detail, remote string) error
	RevokedCertificates(ctx context.Context) ([]registry.Certificate, error)
	Audit(ctx context.Context, actor, action, target, detail, remote string) error
}

// Clock tells the time.
type Clock interface{ Now() time.Time }

// Options configure enrollment.
type Options struct {
	// CertValidity is the lifetime of a device certificate. Default 90 days.
	CertValidity time.Duration `yaml:"cert_validity"`
	// CRLValidity is how long a published CRL is valid (its NextUpdate). Default 1 hour.
	CRLValidity time.Duration `yaml:"crl_validity"`
	// DormantReenrollWindow is how long after its certificate's NotAfter a device that was
	// powered off may still get a new certificate by proving possession of the expired
	// certificate's key (POST /.well-known/est/dormantreenroll, dormant.go). Default 3 years
	// (26280h); 0 turns dormant re-enrollment off. Validate refuses a negative window; New
	// takes one as 0.
	DormantReenrollWindow time.Duration `yaml:"dormant_reenroll_window"`
}

// DefaultDormantReenrollWindow is the default of Options.DormantReenrollWindow: three years of
// 365 days.
const DefaultDormantReenrollWindow = 3 * 365 * 24 * time.Hour

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{CertValidity: 90 * 24 * time.Hour, CRLValidity: time.Hour, DormantReenrollWindow: DefaultDormantReenrollWindow}
}

// Server serves the EST endpoints and the CRL.
type Server struct {
	ca   *pki.CA
	reg  Registry
	clk  Clock
	opts Options
	log  *slog.Logger
	// refused counts requests refused, by reason: no_token, token (invalid, used, expired,
	// or for another model), certificate (re-enrollment with a certificate or device the
	// registry does not admit), request (a certificate request unreadable, too large or too
	// slow).
	refused *prometheus.CounterVec
	// dormantRefused counts dormant re-enrollments refused, by reason (dormantReasons);
	// dormantIssued those that got a certificate.
	dormantRefused *prometheus.CounterVec
	dormantIssued  prometheus.Counter

	crlMu   sync.Mutex
	crl     []byte
	crlAt   time.Time
	crlNext int64
}

// New makes an enrollment server; its metrics go to metrics (nil for none).
func New(ca *pki.CA, reg Registry, clk Clock, opts Options, logger *slog.Logger, metrics prometheus.Registerer) *Server {
	d := DefaultOptions()
	if opts.CertValidity <= 0 {
		opts.CertValidity = d.CertValidity
	}
	if opts.CRLValidity <= 0 {
		opts.CRLValidity = d.CRLValidity
	}
	opts.DormantReenrollWindow = max(opts.DormantReenrollWindow, 0)
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	refused := promauto.With(metrics).NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_enroll_refused_total",
		Help: "Enrollment and re-enrollment requests refused, by reason: no_token, token, certificate, request.",
	}, []string{"reason"})
	for _, r := range []string{refusedNoToken, refusedToken, refusedCertificate, refusedRequest} {
		refused.WithLabelValues(r)
	}
	s := &Server{ca: ca, reg: reg, clk: clk, opts: opts, log: logger, refused: refused}
	s.registerDormantMetrics(metrics)
	return s
}

// Reasons for refusing a request, as metric labels.
const (
	refusedNoToken     = "no_token"
	refusedToken       = "token"
	refusedCertificate = "certificate"
	refusedRequest     = "request"
)

// refuse answers a request refused for its credentials, before its body is read: the body
// is never read, and the connection closes after the answer.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, reason string, status int, msg string) {
	s.refused.WithLabelValues(reason).Inc()
	httplimit.Refuse(w, r)
	httpError(w, status, msg)
}

// CRLPath is where the certificate revocation list is published.
const CRLPath = "/ca/crl"

// Register adds the routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+est.PathCACerts, s.caCerts)
	mux.HandleFunc("POST "+est.PathEnroll, s.enroll)
	mux.HandleFunc("POST "+est.PathReenroll, s.reenroll)
	mux.HandleFunc("POST "+est.PathDormantReenroll, s.dormantReenroll)
	mux.HandleFunc("GET "+CRLPath, s.crlHandler)
}

func (s *Server) caCerts(w http.ResponseWriter, _ *http.Request) {
	der, err := est.EncodeCertsOnly(s.ca.Cert)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeCerts(w, der)
}

func writeCerts(w http.ResponseWriter, der []byte) {
	w.Header().Set("Content-Type", est.ContentCerts)
	w.Header().Set("Content-Transfer-Encoding", "base64")
	_, _ = w.Write(est.EncodeBase64(der))
}

func httpError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

// tokenFrom reads the enrollment token: "Authorization: Bearer <token>", or HTTP Basic with the
// token as the password (what EST clients send), the user name being ignored.
func tokenFrom(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, p, ok := r.BasicAuth(); ok {
		return p
	}
	return ""
}

// readCSR reads the certificate request of a request whose credentials were checked, within
// the server's read deadline, and then lifts that deadline for the work that follows.
func (s *Server) readCSR(w http.ResponseWriter, r *http.Request) (*x509.CertificateRequest, bool) {
	body, ok := readBody(w, r, 64<<10, "certificate request")
	if !ok {
		s.refused.WithLabelValues(refusedRequest).Inc()
		return nil, false
	}
	csr, err := est.DecodeCSR(body)
	if err == nil {
		err = checkKey(csr.PublicKey)
	}
	if err != nil {
		s.refused.WithLabelValues(refusedRequest).Inc()
		httpError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	return csr, true
}

// readBody reads a request's body of at most limit bytes (what names it in errors), within
// the server's read deadline, and then lifts that deadline for the work that follows. When it
// cannot, it answers the request (413 or 400) and returns false.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s too large: the limit is %d bytes", what, limit))
		} else {
			w.Header().Set("Connection", "close")
			httpError(w, http.StatusBadRequest, "read "+what+": "+err.Error())
		}
		return nil, false
	}
	httplimit.BodyRead(w)
	return body, true
}

// checkKey accepts ECDSA P-256 or stronger, Ed25519, and RSA of 2048 bits or more.
func checkKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return fmt.Errorf("ECDSA key on %s is too weak: use P-256 or stronger", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too weak: use 2048 bits or more", k.N.BitLen())
		}
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// enroll checks the token before it reads the certificate request: a client without a
// usable token is answered at once, and the connection closes without reading its body.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	token := tokenFrom(r)
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="millwright enrollment"`)
		s.refuse(w, r, refusedNoToken, http.StatusUnauthorized,
			"an enrollment token is required (Authorization: Bearer <token>, or HTTP Basic with the token as password)")
		return
	}
	model := strings.TrimSpace(r.Header.Get(est.HeaderModel))
	if err := s.reg.CheckEnrollmentToken(r.Context(), token, model); err != nil {
		if !tokenRefusal(err) {
			s.log.Error("check enrollment token", "remote", r.RemoteAddr, "error", err)
			httplimit.Refuse(w, r)
			w.Header().Set("Retry-After", "5")
			httpError(w, http.StatusServiceUnavailable, "the registry cannot check the enrollment token; try again later")
			return
		}
		s.log.Info("enrollment refused", "remote", r.RemoteAddr, "error", err)
		s.refuse(w, r, refusedToken, http.StatusForbidden, "enrollment refused: "+err.Error())
		return
	}
	csr, ok := s.readCSR(w, r)
	if !ok {
		return
	}
	now := s.clk.Now()
	dev, cert, err := s.reg.Enroll(r.Context(), token, model, r.RemoteAddr, func(id string) (*x509.Certificate, error) {
		c, _, err := s.ca.DeviceCert(id, csr.PublicKey, now, s.opts.CertValidity)
		return c, err
	})
	if err != nil {
		status := http.StatusInternalServerError
		switch {
		case tokenRefusal(err):
			status = http.StatusForbidden
			s.refused.WithLabelValues(refusedToken).Inc()
		case errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrInvalid):
			status = http.StatusConflict
		}
		if status == http.StatusInternalServerError {
			s.log.Error("enrollment failed", "remote", r.RemoteAddr, "error", err)
		} else {
			s.log.Info("enrollment refused", "remote", r.RemoteAddr, "error", err)
		}
		httpError(w, status, "enrollment refused: "+err.Error())
		return
	}
	s.log.Info("device enrolled", "device", dev.ID, "serial", cert.SerialNumber.Text(16), "model", model, "remote", r.RemoteAddr)
	der, err := est.EncodeCertsOnly(cert)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeCerts(w, der)
}

// tokenRefusal reports whether err refuses the enrollment token itself.
func tokenRefusal(err error) bool {
	return errors.Is(err, registry.ErrTokenInvalid) || errors.Is(err, registry.ErrTokenUsed) ||
		errors.Is(err, registry.ErrTokenExpired) || errors.Is(err, registry.ErrModelMismatch)
}

// reenroll issues a new certificate for a new key to a device that presents its current,
// unrevoked certificate. The old certificate stays valid until it expires or is revoked.
func (s *Server) reenroll(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		s.refuse(w, r, refusedCertificate, http.StatusUnauthorized, "re-enrollment needs the device's current certificate (mutual TLS)")
		return
	}
	current := r.TLS.PeerCertificates[0]
	id := current.Subject.CommonName
	if err := s.authorizeCert(r.Context(), id, current.SerialNumber); err != nil {
		s.refuse(w, r, refusedCertificate, http.StatusForbidden, "re-enrollment refused: "+err.Error())
		return
	}
	csr, ok := s.readCSR(w, r)
	if !ok {
		return
	}
	cert, _, err := s.ca.DeviceCert(id, csr.PublicKey, s.clk.Now(), s.opts.CertValidity)
	if err == nil {
		err = s.reg.AddCertificate(r.Context(), id, cert, false)
	}
	if err == nil {
		err = s.reg.Audit(r.Context(), "device:"+id, "certificate.reenroll", id,
			"new serial "+cert.SerialNumber.Text(16)+", old serial "+current.SerialNumber.Text(16), r.RemoteAddr)
	}
	if err != nil {
		s.log.Error("re-enrollment failed", "device", id, "error", err)
		httpError(w, http.StatusInternalServerError, "re-enrollment failed: "+err.Error())
		return
	}
	s.log.Info("device re-enrolled", "device", id, "serial", cert.SerialNumber.Text(16))
	der, err := est.EncodeCertsOnly(cert)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeCerts(w, der)
}

// authorizeCert checks that the device is active and the certificate is known and unrevoked.
func (s *Server) authorizeCert(ctx context.Context, id string, serial *big.Int) error {
	dev, err := s.reg.Device(ctx, id)
	if err != nil {
		return fmt.Errorf("device %q: %w", id, err)
	}
	if dev.Status != registry.StatusActive {
		return fmt.Errorf("device %q is %s", id, dev.Status)
	}
	c, err := s.reg.Certificate(ctx, serial.Text(16))
	if err != nil {
		return fmt.Errorf("certificate %s: %w", serial.Text(16), err)
	}
	if !c.RevokedAt.IsZero() {
		return fmt.Errorf("certificate %s was revoked", serial.Text(16))
	}
	return nil
}

// InvalidateCRL makes the next CRL request rebuild the list (after a revocation).
func (s *Server) InvalidateCRL() {
	s.crlMu.Lock()
	s.crl = nil
	s.crlMu.Unlock()
}

func (s *Server) crlHandler(w http.ResponseWriter, r *http.Request) {
	der, err := s.CRL(r.Context())
	if err != nil {
		s.log.Error("build CRL", "error", err)
		httpError(w, http.StatusInternalServerError, "build CRL: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	_, _ = w.Write(der)
}

// CRL returns the current certificate revocation list (DER), rebuilt after a revocation and at
// least every tenth of its validity.
func (s *Server) CRL(ctx context.Context) ([]byte, error) {
	now := s.clk.Now()
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	if s.crl != nil && now.Sub(s.crlAt) < s.opts.CRLValidity/10 {
		return s.crl, nil
	}
	revoked, err := s.reg.RevokedCertificates(ctx)
	if err != nil {
		return nil, err
	}
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, c := range revoked {
		n, ok := new(big.Int).SetString(c.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("certificate serial %q is not hex", c.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: c.RevokedAt})
	}
	s.crlNext++
	der, err := x509.CreateRevocationList(nil, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixMilli()*1000 + s.crlNext%1000),
		ThisUpdate:                now,
		NextUpdate:                now.Add(s.opts.CRLValidity),
		RevokedCertificateEntries: entries,
	}, s.ca.Cert, s.ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign CRL: %w", err)
	}
	s.crl, s.crlAt = der, now
	return der, nil
}
