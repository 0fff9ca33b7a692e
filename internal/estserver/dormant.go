package estserver

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/millwright/millwright/internal/httplimit"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/protocol/est"
)

// Dormant re-enrollment. A device that was powered off for longer than its certificate's
// lifetime cannot connect (its certificate has expired) and cannot renew (simplereenroll
// authenticates with the current certificate). Within Options.DormantReenrollWindow after the
// certificate's NotAfter it may instead prove possession of the expired certificate's key: it
// POSTs, without a client certificate, the expired certificate, a request for a new key, and
// the old key's signature over both (est.DecodeDormantRequest). The expired certificate is
// accepted here and nowhere else: TLS client verification, MQTT and HTTPS ingest still refuse
// it.
//
// The checks, cheapest first, and what each refusal is counted as in
// millwright_enroll_dormant_refused_total{reason}:
//
//	disabled     the window is 0 (answered before the body is read)
//	request      the body is too large, malformed, or the request's key is weak or the old one
//	not_expired  the certificate is still valid: simplereenroll is the way
//	window       the certificate expired longer ago than the window
//	certificate  the certificate does not chain to the CA (checked as of 1 s before its
//	             NotAfter), or is not registered to the device it names
//	signature    the signature is not the expired certificate's key's over the request
//	status       the device is not active (suspended, revoked, pending)
//	revoked      the certificate was revoked
//	not_newest   the device has a newer certificate: it came back already, so an old key,
//	             stolen or replayed, mints nothing
//	conflict     the device's status or certificates changed while the request was handled
//
// The signature is checked before the registry is asked, so that the device's status is told
// only to a holder of its key.
const (
	dormantDisabled    = "disabled"
	dormantRequest     = "request"
	dormantNotExpired  = "not_expired"
	dormantWindow      = "window"
	dormantCertificate = "certificate"
	dormantSignature   = "signature"
	dormantStatus      = "status"
	dormantRevoked     = "revoked"
	dormantNotNewest   = "not_newest"
	dormantConflict    = "conflict"
)

var dormantReasons = []string{dormantDisabled, dormantRequest, dormantNotExpired, dormantWindow, dormantCertificate,
	dormantSignature, dormantStatus, dormantRevoked, dormantNotNewest, dormantConflict}

func (s *Server) registerDormantMetrics(metrics prometheus.Registerer) {
	f := promauto.With(metrics)
	s.dormantRefused = f.NewCounterVec(prometheus.CounterOpts{
		Name: "millwright_enroll_dormant_refused_total",
		Help: "Dormant re-enrollments (a device whose certificate expired while it was off) refused, by reason: disabled, request, not_expired, window, certificate, signature, status, revoked, not_newest, conflict.",
	}, []string{"reason"})
	for _, r := range dormantReasons {
		s.dormantRefused.WithLabelValues(r)
	}
	s.dormantIssued = f.NewCounter(prometheus.CounterOpts{
		Name: "millwright_enroll_dormant_reenrolled_total",
		Help: "Certificates issued by dormant re-enrollment to devices whose certificate had expired while they were off.",
	})
}

// dormantRefusal is a refused dormant re-enrollment: its metric reason, HTTP status and
// message.
type dormantRefusal struct {
	reason string
	status int
	msg    string
}

func (e *dormantRefusal) Error() string { return e.msg }

func refuseDormant(reason string, status int, format string, args ...any) *dormantRefusal {
	return &dormantRefusal{reason: reason, status: status, msg: "dormant re-enrollment refused: " + fmt.Sprintf(format, args...)}
}

// dormantReenroll issues a certificate for a new key to a device whose certificate expired
// while it was off, within the window (see the checks above).
func (s *Server) dormantReenroll(w http.ResponseWriter, r *http.Request) {
	if s.opts.DormantReenrollWindow <= 0 {
		s.dormantRefused.WithLabelValues(dormantDisabled).Inc()
		httplimit.Refuse(w, r)
		httpError(w, http.StatusForbidden, "dormant re-enrollment refused: it is turned off on this server (--dormant-reenroll-window 0); enroll the device again with a new token")
		return
	}
	body, ok := readBody(w, r, est.MaxDormantRequest, "dormant re-enrollment request")
	if !ok {
		s.dormantRefused.WithLabelValues(dormantRequest).Inc()
		return
	}
	req, err := est.DecodeDormantRequest(body)
	if err != nil {
		s.dormantRefused.WithLabelValues(dormantRequest).Inc()
		httpError(w, http.StatusBadRequest, "dormant re-enrollment refused: "+err.Error())
		return
	}
	now := s.clk.Now()
	cert, err := s.dormantIssue(r.Context(), req, now, r.RemoteAddr)
	if err != nil {
		old := req.Expired
		var ref *dormantRefusal
		if !errors.As(err, &ref) {
			s.log.Error("dormant re-enrollment failed", "device", old.Subject.CommonName, "error", err)
			w.Header().Set("Retry-After", "60")
			httpError(w, http.StatusServiceUnavailable, "dormant re-enrollment failed: "+err.Error()+"; try again later")
			return
		}
		s.dormantRefused.WithLabelValues(ref.reason).Inc()
		s.log.Info("dormant re-enrollment refused", "device", old.Subject.CommonName, "serial", old.SerialNumber.Text(16),
			"expired", old.NotAfter, "reason", ref.reason, "error", ref.msg, "remote", r.RemoteAddr)
		httpError(w, ref.status, ref.msg)
		return
	}
	s.dormantIssued.Inc()
	s.log.Info("device re-enrolled after dormancy", "device", cert.Subject.CommonName, "serial", cert.SerialNumber.Text(16),
		"expired_serial", req.Expired.SerialNumber.Text(16), "expired_for", now.Sub(req.Expired.NotAfter).Round(time.Second), "remote", r.RemoteAddr)
	der, err := est.EncodeCertsOnly(cert)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeCerts(w, der)
}

// dormantIssue checks a decoded request and issues and records the new certificate. A
// refusal is a *dormantRefusal; any other error is the registry's or the CA's.
func (s *Server) dormantIssue(ctx context.Context, req *est.DormantRequest, now time.Time, remote string) (*x509.Certificate, error) {
	old := req.Expired
	id, serial := old.Subject.CommonName, old.SerialNumber.Text(16)
	window := s.opts.DormantReenrollWindow

	// The certificate's own dates, then the cryptography, then the registry.
	if !now.After(old.NotAfter) {
		return nil, refuseDormant(dormantNotExpired, http.StatusConflict,
			"certificate %s of %q is valid until %s: renew it with %s and the certificate", serial, id, old.NotAfter.UTC().Format(time.RFC3339), est.PathReenroll)
	}
	if ago := now.Sub(old.NotAfter); ago > window {
		return nil, refuseDormant(dormantWindow, http.StatusForbidden,
			"certificate %s of %q expired %s ago, %s beyond the dormant re-enrollment window of %s; enroll the device again with a new token",
			serial, id, fmtDuration(ago), fmtDuration(ago-window), fmtDuration(window))
	}
	if _, err := old.Verify(x509.VerifyOptions{
		Roots:       s.ca.Pool(),
		CurrentTime: old.NotAfter.Add(-time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, refuseDormant(dormantCertificate, http.StatusForbidden, "certificate %s was not issued by this server's CA for a device: %v", serial, err)
	}
	if err := req.Verify(); err != nil {
		return nil, refuseDormant(dormantSignature, http.StatusForbidden, "%v", err)
	}
	if err := checkKey(req.CSR.PublicKey); err != nil {
		return nil, refuseDormant(dormantRequest, http.StatusBadRequest, "%v", err)
	}
	if publicKeyEqual(req.CSR.PublicKey, old.PublicKey) {
		return nil, refuseDormant(dormantRequest, http.StatusBadRequest, "the request is for the expired certificate's key: make a new key")
	}

	dev, err := s.reg.Device(ctx, id)
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrInvalid):
		return nil, refuseDormant(dormantCertificate, http.StatusForbidden, "device %q is not registered", id)
	case err != nil:
		return nil, err
	case dev.Status != registry.StatusActive:
		return nil, refuseDormant(dormantStatus, http.StatusForbidden, "device %q is %s%s", id, dev.Status, statusHint(dev.Status))
	}
	c, err := s.reg.Certificate(ctx, serial)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, refuseDormant(dormantCertificate, http.StatusForbidden, "certificate %s is not registered", serial)
	case err != nil:
		return nil, err
	case c.DeviceID != id:
		return nil, refuseDormant(dormantCertificate, http.StatusForbidden, "certificate %s is registered to another device", serial)
	case !c.RevokedAt.IsZero():
		return nil, refuseDormant(dormantRevoked, http.StatusForbidden, "certificate %s of %q was revoked at %s", serial, id, c.RevokedAt.Format(time.RFC3339))
	}
	newest, err := s.reg.NewestCertificate(ctx, id)
	if err != nil {
		return nil, err
	}
	if newest.Serial != serial {
		return nil, refuseDormant(dormantNotNewest, http.StatusForbidden,
			"certificate %s is not the newest of %q: certificate %s was issued to it at %s; only the newest may come back",
			serial, id, newest.Serial, newest.NotBefore.Format(time.RFC3339))
	}

	cert, _, err := s.ca.DeviceCert(id, req.CSR.PublicKey, now, s.opts.CertValidity)
	if err != nil {
		return nil, err
	}
	detail := fmt.Sprintf("new serial %s, expired serial %s, expired %s ago", cert.SerialNumber.Text(16), serial, fmtDuration(now.Sub(old.NotAfter)))
	if err := s.reg.AddDormantCertificate(ctx, id, serial, cert, detail, remote); err != nil {
		if errors.Is(err, registry.ErrInvalid) {
			return nil, refuseDormant(dormantConflict, http.StatusConflict, "%v", err)
		}
		return nil, err
	}
	return cert, nil
}

func statusHint(s registry.Status) string {
	switch s {
	case registry.StatusSuspended:
		return ": an operator must resume it first"
	case registry.StatusRevoked:
		return ": it was revoked for good; enroll it again with a new token"
	}
	return ""
}

// fmtDuration writes d in years of 365 days, days, hours, minutes and seconds ("2y",
// "3y30d", "4h20m"), a form the server's duration flags also take.
func fmtDuration(d time.Duration) string {
	d = d.Round(time.Second)
	if d < 0 {
		return "-" + fmtDuration(-d)
	}
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		unit string
		d    time.Duration
	}{{"y", 365 * 24 * time.Hour}, {"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.d
		}
	}
	return b.String()
}

func publicKeyEqual(a, b any) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
