package est

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// dormantParts makes an expired self-signed certificate over old and a request for a new
// P-256 key.
func dormantParts(t testing.TB, old crypto.Signer) (certDER, csrDER []byte) {
	t.Helper()
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: serial.Add(serial, big.NewInt(1)), Subject: pkix.Name{CommonName: "d-sleeper"},
		NotBefore: time.Now().Add(-800 * 24 * time.Hour), NotAfter: time.Now().Add(-700 * 24 * time.Hour)}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, old.Public(), old)
	require.NoError(t, err)
	fresh, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, fresh)
	require.NoError(t, err)
	return certDER, csrDER
}

func TestDormantRequestRoundTrip(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	for name, old := range map[string]crypto.Signer{"ecdsa": ec, "rsa": rk, "ed25519": ed} {
		t.Run(name, func(t *testing.T) {
			certDER, csrDER := dormantParts(t, old)
			sig, err := SignDormant(old, certDER, csrDER)
			require.NoError(t, err)
			req, err := DecodeDormantRequest(EncodeDormantRequest(certDER, csrDER, sig))
			require.NoError(t, err)
			require.Equal(t, certDER, req.Expired.Raw)
			require.Equal(t, csrDER, req.CSR.Raw)
			require.NoError(t, req.Verify())

			// The signature binds the request: with another request, or another certificate,
			// it no longer verifies.
			_, otherCSR := dormantParts(t, old)
			req2, err := DecodeDormantRequest(EncodeDormantRequest(certDER, otherCSR, sig))
			require.NoError(t, err)
			require.ErrorIs(t, req2.Verify(), ErrDormantSignature)
			otherCert, _ := dormantParts(t, old)
			req3, err := DecodeDormantRequest(EncodeDormantRequest(otherCert, csrDER, sig))
			require.NoError(t, err)
			require.ErrorIs(t, req3.Verify(), ErrDormantSignature)
		})
	}
}

// TestDormantSignatureWithOpenSSL signs a request the way the package comment tells an
// operator to, with openssl, and checks that it verifies.
func TestDormantSignatureWithOpenSSL(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	require.NoError(t, err, "openssl is needed (Debian package openssl)")
	dir := t.TempDir()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	for name, c := range map[string]struct {
		key  crypto.Signer
		args []string
	}{
		"ecdsa":   {ec, []string{"dgst", "-sha256", "-sign", "old.key", "-out", "sig", "msg"}},
		"ed25519": {ed, []string{"pkeyutl", "-sign", "-inkey", "old.key", "-rawin", "-in", "msg", "-out", "sig"}},
	} {
		t.Run(name, func(t *testing.T) {
			certDER, csrDER := dormantParts(t, c.key)
			keyDER, err := x509.MarshalPKCS8PrivateKey(c.key)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "old.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "msg"), DormantMessage(certDER, csrDER), 0o600))
			cmd := exec.Command(bin, c.args...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			sig, err := os.ReadFile(filepath.Join(dir, "sig"))
			require.NoError(t, err)
			req, err := DecodeDormantRequest(EncodeDormantRequest(certDER, csrDER, sig))
			require.NoError(t, err)
			require.NoError(t, req.Verify())
		})
	}
}

// validDormantBody is a well-formed body signed by a fresh P-256 key.
func validDormantBody(t testing.TB) []byte {
	old, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	certDER, csrDER := dormantParts(t, old)
	sig, err := SignDormant(old, certDER, csrDER)
	require.NoError(t, err)
	return EncodeDormantRequest(certDER, csrDER, sig)
}

func TestDecodeDormantRequestErrors(t *testing.T) {
	good := validDormantBody(t)
	certBlock, csrBlock, sigBlock := pemBlocks(t, good)
	badCSR := func() []byte {
		der := append([]byte(nil), csrBlock.Bytes...)
		der[len(der)-3] ^= 0xff // inside the request's signature
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	enc := func(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for name, c := range map[string]struct {
		body []byte
		want string
	}{
		"empty":           {nil, "0 PEM blocks"},
		"too large":       {append(bytes.Repeat([]byte(" "), MaxDormantRequest), good...), "the limit is 16384"},
		"two blocks":      {cat(enc(certBlock), enc(csrBlock)), "2 PEM blocks"},
		"four blocks":     {cat(good, enc(sigBlock)), "4 PEM blocks"},
		"out of order":    {cat(enc(csrBlock), enc(certBlock), enc(sigBlock)), "block 1 is not a well-formed CERTIFICATE"},
		"text before":     {cat([]byte("hello\n"), good), "found other text"},
		"text between":    {cat(enc(certBlock), []byte("x"), enc(csrBlock), enc(sigBlock)), "want a CERTIFICATE REQUEST PEM block, found other text"},
		"text after":      {cat(good, []byte("x")), "text after"},
		"headers":         {cat(enc(&pem.Block{Type: certBlock.Type, Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: certBlock.Bytes}), enc(csrBlock), enc(sigBlock)), "has headers"},
		"bad base64":      {bytes.Replace(good, []byte("-----\nM"), []byte("-----\n!"), 1), "block 1 is not a well-formed"},
		"not a cert":      {cat(enc(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0}}), enc(csrBlock), enc(sigBlock)), "expired certificate"},
		"bad CSR":         {cat(enc(certBlock), badCSR, enc(sigBlock)), "PKCS #10 signature"},
		"empty signature": {cat(enc(certBlock), enc(csrBlock), enc(&pem.Block{Type: sigBlock.Type})), "signature of 0 bytes"},
		"huge signature":  {cat(enc(certBlock), enc(csrBlock), enc(&pem.Block{Type: sigBlock.Type, Bytes: make([]byte, 1025)})), "signature of 1025 bytes"},
	} {
		_, err := DecodeDormantRequest(c.body)
		require.ErrorIs(t, err, ErrMalformed, name)
		require.ErrorContains(t, err, c.want, name)
	}
	// White space around the blocks, and CRLF line ends, are fine.
	crlf := bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n"))
	_, err := DecodeDormantRequest(append(append([]byte("\n  "), crlf...), "\n\n"...))
	require.NoError(t, err)
}

func pemBlocks(t testing.TB, body []byte) (cert, csr, sig *pem.Block) {
	cert, rest := pem.Decode(body)
	csr, rest = pem.Decode(rest)
	sig, _ = pem.Decode(rest)
	require.NotNil(t, sig)
	return cert, csr, sig
}

// FuzzDecodeDormantRequest: the decoder never panics, and what it accepts encodes back to a
// body it reads the same way; Verify never panics on what it accepts.
func FuzzDecodeDormantRequest(f *testing.F) {
	good := validDormantBody(f)
	f.Add(good)
	f.Add(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")))
	f.Add(good[:len(good)/2])
	f.Add([]byte(strings.Repeat("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", 3)))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeDormantRequest(body)
		if err != nil {
			require.ErrorIs(t, err, ErrMalformed)
			return
		}
		_ = req.Verify()
		again, err := DecodeDormantRequest(EncodeDormantRequest(req.Expired.Raw, req.CSR.Raw, req.Signature))
		require.NoError(t, err)
		require.Equal(t, req.Expired.Raw, again.Expired.Raw)
		require.Equal(t, req.CSR.Raw, again.CSR.Raw)
		require.Equal(t, req.Signature, again.Signature)
	})
}
