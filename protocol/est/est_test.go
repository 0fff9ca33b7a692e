package est

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func selfSigned(t testing.TB, cn string) *x509.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return c
}

func TestCertsOnlyRoundTrip(t *testing.T) {
	a, b := selfSigned(t, "a"), selfSigned(t, "b")
	der, err := EncodeCertsOnly(a, b)
	require.NoError(t, err)
	got, err := DecodeCertsOnly(der)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.True(t, got[0].Equal(a))
	require.True(t, got[1].Equal(b))

	body := EncodeBase64(der)
	back, err := DecodeBase64(body)
	require.NoError(t, err)
	require.Equal(t, der, back)
}

// TestOpenSSLReadsCertsOnly checks the encoding against a standard implementation: openssl
// prints the certificate from our PKCS #7.
func TestOpenSSLReadsCertsOnly(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	require.NoError(t, err, "openssl is needed (Debian package openssl)")
	der, err := EncodeCertsOnly(selfSigned(t, "dev-42"))
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "c.p7")
	require.NoError(t, os.WriteFile(path, der, 0o600))
	out, err := exec.Command(bin, "pkcs7", "-inform", "DER", "-in", path, "-print_certs").CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "CN = dev-42")
}

func TestDecodeErrors(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":          {},
		"garbage":        []byte("hello"),
		"trailing bytes": append(mustEncode(t), 0),
		"not signed data": func() []byte {
			b, _ := EncodeCertsOnly(selfSigned(t, "x"))
			b[15] ^= 0xff // inside the content-type OID
			return b
		}(),
	} {
		_, err := DecodeCertsOnly(in)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
	_, err := DecodeBase64([]byte("!!!"))
	require.ErrorIs(t, err, ErrMalformed)
	_, err = DecodeBase64([]byte(strings.Repeat("A", maxMessageSize+1)))
	require.ErrorIs(t, err, ErrMalformed)
	_, err = DecodeCSR(EncodeBase64([]byte{0x30, 0x00}))
	require.ErrorIs(t, err, ErrMalformed)
}

func mustEncode(t *testing.T) []byte {
	b, err := EncodeCertsOnly(selfSigned(t, "x"))
	require.NoError(t, err)
	return b
}

func FuzzDecode(f *testing.F) {
	der, err := EncodeCertsOnly(selfSigned(f, "seed"))
	require.NoError(f, err)
	f.Add(der)
	f.Add(EncodeBase64(der))
	f.Add([]byte{0x30, 0x03, 0x06, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		if certs, err := DecodeCertsOnly(b); err == nil && len(certs) == 0 {
			t.Fatal("success without certificates")
		}
		_, _ = DecodeCSR(b)
		_, _ = DecodeBase64(b)
	})
}
