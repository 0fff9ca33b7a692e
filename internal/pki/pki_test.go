package pki

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCAAndServerCertLifecycle(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, created, err := LoadOrCreateCA(dir, now)
	require.NoError(t, err)
	require.True(t, created)
	st, err := os.Stat(filepath.Join(dir, CAKeyFile))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())

	again, created, err := LoadOrCreateCA(dir, now)
	require.NoError(t, err)
	require.False(t, created)
	require.True(t, again.Cert.Equal(ca.Cert))

	names, ips := ServerNames("gw.example.com", []string{"mw1.example.com", "10.1.2.3"})
	require.Contains(t, names, "*.gw.example.com")
	require.Contains(t, names, "mw1.example.com")
	pair, err := EnsureServerCert(dir, ca, names, ips, now)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "dev-1.gw.example.com"})
	require.NoError(t, err, "a device reaching <device-id>.<zone> verifies the server")
	require.True(t, slicesContainsIP(leaf.IPAddresses, net.ParseIP("10.1.2.3")))

	// Same names: the certificate is kept. A new name or near expiry: reissued.
	same, err := EnsureServerCert(dir, ca, names, ips, now)
	require.NoError(t, err)
	require.Equal(t, pair.Certificate[0], same.Certificate[0])
	renamed, err := EnsureServerCert(dir, ca, append(names, "new.example.com"), ips, now)
	require.NoError(t, err)
	require.NotEqual(t, pair.Certificate[0], renamed.Certificate[0])
	late, err := EnsureServerCert(dir, ca, names, ips, now.Add(ServerCertValidity-time.Hour))
	require.NoError(t, err)
	require.NotEqual(t, renamed.Certificate[0], late.Certificate[0])
}

func TestLoadCAErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadCA(dir)
	require.ErrorIs(t, err, ErrNoCA)

	require.NoError(t, os.WriteFile(filepath.Join(dir, CAFile), []byte("not pem"), 0o644))
	_, err = LoadCA(dir)
	require.ErrorContains(t, err, "no CERTIFICATE block")

	ca, err := NewCA("a", time.Now())
	require.NoError(t, err)
	other, err := NewCA("b", time.Now())
	require.NoError(t, err)
	keyPEM, err := EncodeKey(other.Key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, CAFile), ca.PEM, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600))
	_, err = LoadCA(dir)
	require.ErrorContains(t, err, "does not match")
}

func TestDeviceCertIsClientOnly(t *testing.T) {
	ca, err := NewCA("a", time.Now())
	require.NoError(t, err)
	pair, err := ca.DeviceKeyPair("dev-1", time.Now(), time.Hour)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	require.NoError(t, err)
	require.Equal(t, "dev-1", leaf.Subject.CommonName)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	require.Error(t, err, "a device certificate cannot serve TLS")
}

func slicesContainsIP(ips []net.IP, ip net.IP) bool {
	for _, x := range ips {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}
