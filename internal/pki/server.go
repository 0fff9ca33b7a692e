package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/millwright/millwright/atomicfile"
)

// ServerCertValidity is how long a generated server certificate is valid.
const ServerCertValidity = 365 * 24 * time.Hour

// ServerNames returns the names the server certificate must cover: localhost, the loopback
// addresses, the host's own name, any extra names, and a wildcard for the gateway zone so a
// device can reach the server as <device-id>.<zone>.
func ServerNames(zone string, extra []string) ([]string, []net.IP) {
	names := []string{"localhost"}
	if h, err := os.Hostname(); err == nil && h != "" && h != "localhost" {
		names = append(names, strings.ToLower(h))
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, e := range extra {
		if ip := net.ParseIP(e); ip != nil {
			ips = append(ips, ip)
		} else if e != "" {
			names = append(names, strings.ToLower(e))
		}
	}
	if zone != "" {
		zone = strings.TrimSuffix(strings.ToLower(zone), ".")
		names = append(names, zone, "*."+zone)
	}
	return names, ips
}

// EnsureServerCert loads the server certificate from dir, issuing a new one signed by ca when
// none exists, when it expires within 30 days, or when it lacks one of the wanted names.
func EnsureServerCert(dir string, ca *CA, dnsNames []string, ips []net.IP, now time.Time) (tls.Certificate, error) {
	certPath := filepath.Join(dir, ServerCertFile)
	keyPath := filepath.Join(dir, ServerKeyFile)
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		leaf, perr := x509.ParseCertificate(pair.Certificate[0])
		if perr == nil && leaf.CheckSignatureFrom(ca.Cert) == nil &&
			!TLSCertNeedsRenewal(leaf, dnsNames, ips, now, 30*24*time.Hour) {
			pair.Leaf = leaf
			return ca.withChain(pair), nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("load server certificate: %w", err)
	}
	key, err := GenerateKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	_, certPEM, err := ca.ServerCert(dnsNames, ips, key.Public(), now, ServerCertValidity)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load new server certificate: %w", err)
	}
	return ca.withChain(pair), nil
}

// withChain appends an intermediate CA's certificate to a server certificate, so clients that
// trust only the root can build the chain.
func (ca *CA) withChain(pair tls.Certificate) tls.Certificate {
	if ca.Intermediate() {
		pair.Certificate = append(pair.Certificate, ca.Cert.Raw)
	}
	return pair
}

// WriteDeviceCert makes a key and a certificate for device id and writes them as
// outDir/<id>.crt and outDir/<id>.key (mode 0600). It is for development and tests, where the
// key is made beside the CA; enrolled devices make their key themselves.
func WriteDeviceCert(ca *CA, id, outDir string, now time.Time, validity time.Duration) (certPath, keyPath string, err error) {
	key, err := GenerateKey()
	if err != nil {
		return "", "", err
	}
	_, certPEM, err := ca.DeviceCert(id, key.Public(), now, validity)
	if err != nil {
		return "", "", err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return "", "", fmt.Errorf("create %s: %w", outDir, err)
	}
	certPath = filepath.Join(outDir, id+".crt")
	keyPath = filepath.Join(outDir, id+".key")
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// DeviceKeyPair makes a key and a certificate for device id, ready for a TLS client. For tests,
// simulators and benchmarks, where the key is made beside the CA.
func (ca *CA) DeviceKeyPair(id string, now time.Time, validity time.Duration) (tls.Certificate, error) {
	key, err := GenerateKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	_, certPEM, err := ca.DeviceCert(id, key.Public(), now, validity)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load device certificate: %w", err)
	}
	return pair, nil
}
