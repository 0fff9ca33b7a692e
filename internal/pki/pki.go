// Package pki holds Millwright's certificate authority: the CA that signs device and server
// certificates, the server's own TLS certificate, and the helpers that read and write them as
// PEM files in the data directory.
//
// On first start the server creates a development CA (ECDSA P-256, ten years) in its data
// directory. Device certificates carry the device ID as their common name and are valid for
// client authentication only; the server certificate covers the names devices and operators
// use to reach it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/millwright/millwright/atomicfile"
)

// File names inside the data directory.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.pem"
	ServerKeyFile  = "server.key"
)

// ErrNoCA is returned when a data directory holds no CA yet.
var ErrNoCA = errors.New("no certificate authority in data directory")

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate in PEM form, as written to ca.pem; for an operator-supplied
	// intermediate CA, followed by its chain.
	PEM []byte
	// Chain holds the certificates above Cert (empty for the generated, self-signed CA).
	Chain []*x509.Certificate
}

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// LoadOrCreateCA reads the CA from dir, creating a new one (and dir) when none exists.
// The key file is written with mode 0600.
func LoadOrCreateCA(dir string, now time.Time) (*CA, bool, error) {
	ca, err := LoadCA(dir)
	if err == nil {
		return ca, false, nil
	}
	if !errors.Is(err, ErrNoCA) {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create data directory: %w", err)
	}
	ca, err = NewCA(DevelopmentCAName, now)
	if err != nil {
		return nil, false, err
	}
	keyPEM, err := EncodeKey(ca.Key)
	if err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(filepath.Join(dir, CAFile), ca.PEM, 0o644); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

// DevelopmentCAName is the common name of the CA LoadOrCreateCA makes.
const DevelopmentCAName = "Millwright development CA"

// IsDevelopment reports whether ca is a development CA made by LoadOrCreateCA: self-signed,
// with DevelopmentCAName as its common name.
func (ca *CA) IsDevelopment() bool {
	c := ca.Cert
	return c.IsCA && c.Subject.CommonName == DevelopmentCAName && c.Issuer.String() == c.Subject.String()
}

// LoadCA reads ca.pem and ca.key from dir. It returns an error wrapping ErrNoCA when the
// certificate file does not exist.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load CA from %s: %w", dir, ErrNoCA)
	}
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", filepath.Join(dir, CAFile), err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", filepath.Join(dir, CAKeyFile), err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load CA: key %s does not match certificate %s", CAKeyFile, CAFile)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// NewCA makes a self-signed ECDSA P-256 CA valid for ten years from now.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Millwright"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1, // room for one operator intermediate below it
		SubjectKeyId:          keyID(key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, PEM: EncodeCert(der)}, nil
}

// DeviceCert issues a client certificate for device id over pub, valid for validity.
func (ca *CA) DeviceCert(id string, pub crypto.PublicKey, now time.Time, validity time.Duration) (*x509.Certificate, []byte, error) {
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.sign(tmpl, pub)
}

// ServerCert issues a TLS server certificate for the given DNS names and IP addresses.
func (ca *CA) ServerCert(dnsNames []string, ips []net.IP, pub crypto.PublicKey, now time.Time, validity time.Duration) (*x509.Certificate, []byte, error) {
	cn := "millwright"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Millwright"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	return ca.sign(tmpl, pub)
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, []byte, error) {
	tmpl.AuthorityKeyId = ca.Cert.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, EncodeCert(der), nil
}

// GenerateKey makes a new ECDSA P-256 private key.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// EncodeCert returns DER bytes as a PEM CERTIFICATE block.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKey returns a private key as a PKCS #8 PEM block, the form OpenSSL, mosquitto and Go
// all read.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertPEM parses the first CERTIFICATE block of a PEM file.
func ParseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no CERTIFICATE block in PEM data")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// ParseKeyPEM parses a PKCS #8, EC or PKCS #1 private key from PEM.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block in key data")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q for a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key of type %T cannot sign", key)
	}
	return signer, nil
}

// TLSCertNeedsRenewal reports whether cert expires within the margin or lacks any of the
// wanted names.
func TLSCertNeedsRenewal(cert *x509.Certificate, dnsNames []string, ips []net.IP, now time.Time, margin time.Duration) bool {
	if now.Add(margin).After(cert.NotAfter) {
		return true
	}
	for _, n := range dnsNames {
		if !slices.Contains(cert.DNSNames, n) {
			return true
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return true
		}
	}
	return false
}

func randomSerial() *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}

func keyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// LoadCAFiles reads an operator-supplied CA, typically an intermediate whose root stays
// offline: certPath holds the CA certificate first, then optionally its chain up to the root;
// keyPath holds the CA's private key. The whole file becomes the CA bundle devices trust.
func LoadCAFiles(certPath, keyPath string) (*CA, error) {
	bundle, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	var certs []*x509.Certificate
	for rest := bundle; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate %s: %w", certPath, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificate in %s", certPath)
	}
	if !certs[0].IsCA || certs[0].KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: the first certificate is not a CA allowed to sign certificates", certPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	if !publicKeysEqual(certs[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("CA key %s does not match the first certificate of %s", keyPath, certPath)
	}
	return &CA{Cert: certs[0], Key: key, PEM: bundle, Chain: certs[1:]}, nil
}

// Intermediate reports whether the CA is not self-signed, so that servers must send its
// certificate along with their own for clients that trust only the root.
func (ca *CA) Intermediate() bool {
	return ca.Cert.CheckSignatureFrom(ca.Cert) != nil
}

// NewIntermediate makes a CA signed by parent, valid for validity.
func (ca *CA) NewIntermediate(name string, now time.Time, validity time.Duration) (*CA, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Millwright"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(key.Public()),
	}
	cert, certPEM, err := ca.sign(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: append(certPEM, ca.PEM...), Chain: append([]*x509.Certificate{ca.Cert}, ca.Chain...)}, nil
}
