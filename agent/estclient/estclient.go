// Package estclient is the device side of enrollment: it makes the device's key on the device,
// asks the server for a certificate over EST (RFC 7030) with a one-time token, and later renews
// the certificate with a new key at two-thirds of its lifetime, authenticated by the current one.
// A device whose certificate expired while it was powered off comes back by dormant
// re-enrollment: it proves that it holds the expired certificate's key, and the server, within
// its window, issues a certificate for a new key.
//
// The private key never leaves the device. The server is verified against the CA bundle the
// device was given; there is no trust on first use.
package estclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/millwright/millwright/agent/backoff"
	"github.com/millwright/millwright/atomicfile"
	"github.com/millwright/millwright/clock"
	"github.com/millwright/millwright/protocol/est"
)

// File names in the credentials directory.
const (
	CertFile = "device.crt"
	KeyFile  = "device.key"
	CAFile   = "ca.pem"
)

// Client talks to the server's EST endpoints.
type Client struct {
	// Server is the server's base URL, e.g. https://gw.example.com:8443.
	Server string
	// Roots verify the server's certificate.
	Roots *x509.CertPool
	// Model is the hardware model stated at enrollment; a token may require one.
	Model string
	// Timeout bounds one request. Default 30 s.
	Timeout time.Duration
}

func (c *Client) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: c.Roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	t := c.Timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	// An enrollment is a single request every few months: no connection is
	// kept open after it (a fleet enrolling at once would otherwise hold a
	// socket per device until the server's idle timeout).
	return &http.Client{Timeout: t, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// Enroll asks for a certificate for key with a one-time token.
func (c *Client) Enroll(ctx context.Context, token string, key crypto.Signer) (*x509.Certificate, error) {
	csr, err := makeCSR(key)
	if err != nil {
		return nil, err
	}
	return c.request(ctx, est.PathEnroll, est.ContentCSR, est.EncodeBase64(csr), token, nil, key)
}

// Reenroll asks for a certificate for a new key, authenticated by the current certificate.
func (c *Client) Reenroll(ctx context.Context, current tls.Certificate, key crypto.Signer) (*x509.Certificate, error) {
	csr, err := makeCSR(key)
	if err != nil {
		return nil, err
	}
	return c.request(ctx, est.PathReenroll, est.ContentCSR, est.EncodeBase64(csr), "", &current, key)
}

// DormantReenroll asks for a certificate for a new key on behalf of a device whose certificate
// expired while it was powered off: it signs the request with the expired certificate's key
// (est.SignDormant) and presents no client certificate, since the server's TLS refuses an
// expired one. The server grants it within its dormant re-enrollment window only, to a device
// still active whose expired certificate is its newest and unrevoked; a refusal is a
// *RefusedError carrying the server's reason.
func (c *Client) DormantReenroll(ctx context.Context, expired tls.Certificate, key crypto.Signer) (*x509.Certificate, error) {
	old, ok := expired.PrivateKey.(crypto.Signer)
	if !ok || len(expired.Certificate) == 0 {
		return nil, errors.New("dormant re-enrollment: the expired certificate has no usable private key")
	}
	leaf, err := x509.ParseCertificate(expired.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("dormant re-enrollment: parse the expired certificate: %w", err)
	}
	csr, err := makeCSR(key)
	if err != nil {
		return nil, err
	}
	sig, err := est.SignDormant(old, leaf.Raw, csr)
	if err != nil {
		return nil, err
	}
	cert, err := c.request(ctx, est.PathDormantReenroll, est.ContentDormant, est.EncodeDormantRequest(leaf.Raw, csr, sig), "", nil, key)
	if err != nil {
		return nil, err
	}
	if cert.Subject.CommonName != leaf.Subject.CommonName {
		return nil, fmt.Errorf("dormant re-enrollment: the server returned a certificate for %q, not %q", cert.Subject.CommonName, leaf.Subject.CommonName)
	}
	return cert, nil
}

func makeCSR(key crypto.Signer) ([]byte, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("make certificate request: %w", err)
	}
	return csr, nil
}

func (c *Client) request(ctx context.Context, path, contentType string, body []byte, token string, current *tls.Certificate, key crypto.Signer) (*x509.Certificate, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.Server, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c.Model != "" {
		req.Header.Set(est.HeaderModel, c.Model)
	}
	resp, err := c.httpClient(current).Do(req)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", c.Server, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("enroll: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &RefusedError{Status: resp.StatusCode, Message: strings.TrimSpace(string(answer))}
	}
	der, err := est.DecodeBase64(answer)
	if err != nil {
		return nil, err
	}
	certs, err := est.DecodeCertsOnly(der)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !publicKeyMatches(cert.PublicKey, key.Public()) {
		return nil, errors.New("enroll: the server returned a certificate for another key")
	}
	return cert, nil
}

// RefusedError is a refusal by the server, with its status and message.
type RefusedError struct {
	Status  int
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server refused enrollment (HTTP %d): %s", e.Status, e.Message)
}

// Permanent reports whether retrying cannot help (a bad token, a refused request).
func (e *RefusedError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}

func publicKeyMatches(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// NewKey makes an ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// Options of EnrollDir.
type Options struct {
	Server, Token, Model string
	// CAFile is the CA bundle that verifies the server; it is copied into Dir.
	CAFile string
	// Dir receives device.key (0600), device.crt and ca.pem.
	Dir string
}

// EnrollDir makes a key in opts.Dir, enrolls it with the token, and stores the certificate;
// it returns the device ID the server assigned. The key is written (0600) before the request,
// so a crash never leaves a certificate without its key.
func EnrollDir(ctx context.Context, opts Options) (string, error) {
	caPEM, err := os.ReadFile(opts.CAFile)
	if err != nil {
		return "", fmt.Errorf("read --ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return "", fmt.Errorf("--ca %s holds no certificate", opts.CAFile)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", opts.Dir, err)
	}
	key, err := NewKey()
	if err != nil {
		return "", err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return "", err
	}
	c := &Client{Server: opts.Server, Roots: roots, Model: opts.Model}
	cert, err := c.Enroll(ctx, opts.Token, key)
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(filepath.Join(opts.Dir, CAFile), caPEM, 0o644); err != nil {
		return "", err
	}
	if err := atomicfile.Write(filepath.Join(opts.Dir, KeyFile), keyPEM, 0o600); err != nil {
		return "", err
	}
	if err := atomicfile.Write(filepath.Join(opts.Dir, CertFile), pemCert(cert), 0o644); err != nil {
		return "", err
	}
	return cert.Subject.CommonName, nil
}

// RenewAt is when a certificate should be renewed: at two-thirds of its lifetime.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life * 2 / 3)
}

// Rotator renews the certificate in a credentials directory at two-thirds of its lifetime,
// with a new key. It writes the new key and then the new certificate atomically; a reader that
// reloads on a change of the certificate file (as the agent does) sees a matching pair. The old
// certificate stays valid on the server until it expires, so a failed renewal is retried with
// backoff until it succeeds or the old certificate expires.
//
// Once the certificate has expired (by Clock) — the device was off, or renewal kept failing —
// the Rotator re-enrolls by dormant re-enrollment instead (Client.DormantReenroll), at once and
// then with backoff while it fails, and stores the result the same way. The server refuses it
// past its window, for a device that is not active, or for a certificate that is revoked or
// not the device's newest; such a refusal is logged at error level with the server's reason
// and retried on DormantRetry's longer pace, in case an operator sets things right.
type Rotator struct {
	// Dir holds device.crt and device.key, unless CertPath and KeyPath name them.
	Dir               string
	CertPath, KeyPath string
	Client            *Client
	Clock             clock.Clock
	Log               *slog.Logger
	// Retry paces failed renewals, and dormant re-enrollments that did not reach the server
	// or that it could not answer. Default base 1 min, cap 1 h.
	Retry backoff.Policy
	// DormantRetry paces dormant re-enrollments the server refused. Default base 10 min, cap
	// 24 h.
	DormantRetry backoff.Policy
	// Renewed is called after each renewal or dormant re-enrollment, if set.
	Renewed func(*x509.Certificate)
}

// Run renews until ctx ends. It returns an error only when the certificate files cannot be
// read.
func (r *Rotator) Run(ctx context.Context) error {
	clk := r.Clock
	if clk == nil {
		clk = clock.Real()
	}
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := r.Retry
	if p.Base <= 0 {
		p = backoff.Policy{Base: time.Minute, Cap: time.Hour}
	}
	dp := r.DormantRetry
	if dp.Base <= 0 {
		dp = backoff.Policy{Base: 10 * time.Minute, Cap: 24 * time.Hour}
	}
	bo, refusedBo := backoff.New(p, nil), backoff.New(dp, nil)
	retry := time.Duration(-1) // the wait before the next attempt after a failure; <0: none
	for {
		current, err := tls.LoadX509KeyPair(r.certPath(), r.keyPath())
		if err != nil {
			return fmt.Errorf("load current certificate: %w", err)
		}
		leaf, err := x509.ParseCertificate(current.Certificate[0])
		if err != nil {
			return fmt.Errorf("parse current certificate: %w", err)
		}
		wait := retry
		if wait < 0 {
			wait = max(RenewAt(leaf).Sub(clk.Now()), 0)
		}
		if !clock.Sleep(ctx, clk, wait) {
			return nil
		}
		dormant := clk.Now().After(leaf.NotAfter)
		var cert *x509.Certificate
		if dormant {
			cert, err = r.store(func(key crypto.Signer) (*x509.Certificate, error) {
				return r.Client.DormantReenroll(ctx, current, key)
			})
		} else {
			cert, err = r.store(func(key crypto.Signer) (*x509.Certificate, error) {
				return r.Client.Reenroll(ctx, current, key)
			})
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var refused *RefusedError
			switch {
			case dormant && errors.As(err, &refused) && refused.Permanent():
				retry = refusedBo.Next()
				log.Error("re-enrollment after dormancy refused by the server; retrying later", "reason", refused.Message,
					"status", refused.Status, "expired", leaf.NotAfter, "retry_in", retry)
			case dormant:
				retry = bo.Next()
				log.Warn("re-enrollment after dormancy failed; retrying", "error", err, "expired", leaf.NotAfter, "retry_in", retry)
			default:
				retry = bo.Next()
				log.Warn("certificate renewal failed; retrying", "error", err, "expires", leaf.NotAfter, "retry_in", retry)
			}
			continue
		}
		retry = -1
		bo.Reset()
		refusedBo.Reset()
		if dormant {
			log.Info("certificate re-enrolled after dormancy", "device", cert.Subject.CommonName, "serial", cert.SerialNumber.Text(16),
				"expired", leaf.NotAfter, "not_after", cert.NotAfter)
		} else {
			log.Info("certificate renewed", "device", cert.Subject.CommonName, "serial", cert.SerialNumber.Text(16), "not_after", cert.NotAfter)
		}
		if r.Renewed != nil {
			r.Renewed(cert)
		}
	}
}

// store makes a new key, has issue get a certificate for it, and writes the key and then the
// certificate.
func (r *Rotator) store(issue func(crypto.Signer) (*x509.Certificate, error)) (*x509.Certificate, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := issue(key)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(r.keyPath(), keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(r.certPath(), pemCert(cert), 0o644); err != nil {
		return nil, err
	}
	return cert, nil
}

func (r *Rotator) certPath() string {
	if r.CertPath != "" {
		return r.CertPath
	}
	return filepath.Join(r.Dir, CertFile)
}

func (r *Rotator) keyPath() string {
	if r.KeyPath != "" {
		return r.KeyPath
	}
	return filepath.Join(r.Dir, KeyFile)
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
