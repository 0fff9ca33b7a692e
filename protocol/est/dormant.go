package est

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Dormant re-enrollment: a device whose certificate expired while it was powered off asks for
// a certificate for a new key by proving that it still holds the expired certificate's key.
// It POSTs, without a client certificate, a PEM body of three blocks in this order:
//
//	-----BEGIN CERTIFICATE-----                   the expired certificate
//	-----BEGIN CERTIFICATE REQUEST-----           a PKCS #10 request for a new key
//	-----BEGIN MILLWRIGHT DORMANT SIGNATURE-----  the old key's signature
//
// The signature is made with the expired certificate's key over DormantMessage: a fixed
// context string, then the certificate's DER, then the request's DER. It binds the old key to
// the new one, so a copy of the request replayed by someone else yields at most a certificate
// for a key they do not hold. The scheme follows the key: ECDSA with SHA-256 (ASN.1 DER
// signature), RSA PKCS #1 v1.5 with SHA-256, or Ed25519 over the message itself. With openssl:
//
//	cat context.bin old.der new.csr.der > msg   # context.bin: DormantContext, no newline
//	openssl dgst -sha256 -sign old.key -out sig msg                 # ECDSA, RSA
//	openssl pkeyutl -sign -inkey old.key -rawin -in msg -out sig    # Ed25519
const (
	// DormantContext starts every signed dormant re-enrollment message, so that a signature
	// made for it is never one of anything else the key signs (a TLS handshake, a CSR).
	DormantContext = "millwright dormant re-enrollment v1\x00"
	// MaxDormantRequest is the largest dormant re-enrollment body: room for an RSA-4096
	// certificate, request and signature with margin. The server reads this much before it
	// knows who asks, so it is kept far below the 64 KiB of the other EST bodies.
	MaxDormantRequest = 16 << 10

	pemCertificate = "CERTIFICATE"
	pemRequest     = "CERTIFICATE REQUEST"
	pemSignature   = "MILLWRIGHT DORMANT SIGNATURE"
	maxSignature   = 1024 // an RSA-8192 signature
)

// DormantRequest is a decoded dormant re-enrollment request. Decoding checks its form and the
// request's own signature; Verify checks the old key's signature.
type DormantRequest struct {
	// Expired is the certificate the device held when it went to sleep.
	Expired *x509.Certificate
	// CSR is the request for the new key, its self-signature checked.
	CSR *x509.CertificateRequest
	// Signature is the expired certificate's key's signature over DormantMessage.
	Signature []byte
}

// DormantMessage is what the expired certificate's key signs: DormantContext, the expired
// certificate's DER, the request's DER. DER is self-delimiting, so the parts cannot be shifted
// against each other.
func DormantMessage(expiredDER, csrDER []byte) []byte {
	m := make([]byte, 0, len(DormantContext)+len(expiredDER)+len(csrDER))
	m = append(m, DormantContext...)
	m = append(m, expiredDER...)
	return append(m, csrDER...)
}

// SignDormant signs DormantMessage(expiredDER, csrDER) with old, the expired certificate's key.
func SignDormant(old crypto.Signer, expiredDER, csrDER []byte) ([]byte, error) {
	msg := DormantMessage(expiredDER, csrDER)
	switch old.Public().(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey:
		h := sha256.Sum256(msg)
		return old.Sign(rand.Reader, h[:], crypto.SHA256)
	case ed25519.PublicKey:
		return old.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("sign dormant re-enrollment: unsupported key type %T", old.Public())
	}
}

// EncodeDormantRequest writes the PEM body of a dormant re-enrollment request.
func EncodeDormantRequest(expiredDER, csrDER, sig []byte) []byte {
	var b bytes.Buffer
	for _, blk := range []pem.Block{
		{Type: pemCertificate, Bytes: expiredDER},
		{Type: pemRequest, Bytes: csrDER},
		{Type: pemSignature, Bytes: sig},
	} {
		_ = pem.Encode(&b, &blk) // a bytes.Buffer does not fail
	}
	return b.Bytes()
}

// DecodeDormantRequest reads a dormant re-enrollment body: at most MaxDormantRequest bytes,
// exactly the three PEM blocks in order, without PEM headers, and nothing but white space
// around them. The certificate must parse, the request must parse and carry a valid
// self-signature, and the signature must be 1 to 1,024 bytes. Errors wrap ErrMalformed and
// name the part at fault. The old key's signature is not checked here: see Verify.
func DecodeDormantRequest(body []byte) (*DormantRequest, error) {
	if len(body) > MaxDormantRequest {
		return nil, fmt.Errorf("%w: dormant re-enrollment request of %d bytes, the limit is %d", ErrMalformed, len(body), MaxDormantRequest)
	}
	if n := bytes.Count(body, []byte("-----BEGIN")); n != 3 {
		return nil, fmt.Errorf("%w: dormant re-enrollment request has %d PEM blocks, want 3 (%s, %s, %s)",
			ErrMalformed, n, pemCertificate, pemRequest, pemSignature)
	}
	rest := body
	var blocks [3][]byte
	for i, want := range []string{pemCertificate, pemRequest, pemSignature} {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("%w: dormant re-enrollment request: want a %s PEM block, found other text", ErrMalformed, want)
		}
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		switch {
		case blk == nil || blk.Type != want:
			return nil, fmt.Errorf("%w: dormant re-enrollment request: block %d is not a well-formed %s PEM block", ErrMalformed, i+1, want)
		case len(blk.Headers) > 0:
			return nil, fmt.Errorf("%w: dormant re-enrollment request: the %s PEM block has headers", ErrMalformed, want)
		}
		blocks[i] = blk.Bytes
	}
	if len(bytes.TrimLeft(rest, " \t\r\n")) > 0 {
		return nil, fmt.Errorf("%w: dormant re-enrollment request: text after the %s PEM block", ErrMalformed, pemSignature)
	}
	cert, err := x509.ParseCertificate(blocks[0])
	if err != nil {
		return nil, fmt.Errorf("%w: dormant re-enrollment request: expired certificate: %v", ErrMalformed, err)
	}
	csr, err := x509.ParseCertificateRequest(blocks[1])
	if err != nil {
		return nil, fmt.Errorf("%w: dormant re-enrollment request: PKCS #10: %v", ErrMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: dormant re-enrollment request: PKCS #10 signature: %v", ErrMalformed, err)
	}
	if n := len(blocks[2]); n == 0 || n > maxSignature {
		return nil, fmt.Errorf("%w: dormant re-enrollment request: signature of %d bytes, want 1 to %d", ErrMalformed, n, maxSignature)
	}
	return &DormantRequest{Expired: cert, CSR: csr, Signature: blocks[2]}, nil
}

// ErrDormantSignature is returned by Verify when the signature is not the expired
// certificate's key's over the request.
var ErrDormantSignature = errors.New("the signature does not verify with the expired certificate's key")

// Verify checks that the expired certificate's key signed DormantMessage of this request.
func (r *DormantRequest) Verify() error {
	var alg x509.SignatureAlgorithm
	switch r.Expired.PublicKey.(type) {
	case *ecdsa.PublicKey:
		alg = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		alg = x509.SHA256WithRSA
	case ed25519.PublicKey:
		alg = x509.PureEd25519
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrDormantSignature, r.Expired.PublicKey)
	}
	if err := r.Expired.CheckSignature(alg, DormantMessage(r.Expired.Raw, r.CSR.Raw), r.Signature); err != nil {
		return fmt.Errorf("%w: %v", ErrDormantSignature, err)
	}
	return nil
}
