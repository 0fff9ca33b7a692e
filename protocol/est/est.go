// Package est holds the wire formats of EST enrollment (RFC 7030) as Millwright speaks them: a
// device POSTs a base64 PKCS #10 certificate request to /.well-known/est/simpleenroll (with a
// one-time enrollment token) or /simplereenroll (with its current certificate) and receives its
// certificate as a base64 "certs-only" PKCS #7 structure; /cacerts returns the CA the same way.
// A device whose certificate expired while it was powered off POSTs to /dormantreenroll, a
// Millwright extension, a PEM body proving that it holds the expired certificate's key.
//
// Only the degenerate, unsigned PKCS #7 SignedData that EST uses for certificates is
// implemented: no signatures, no encrypted content. Both the server and the agent use it, so
// standard EST clients (curl with openssl, estclient, libest) interoperate with both.
package est

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
)

// Paths under the EST well-known prefix.
const (
	PathPrefix   = "/.well-known/est"
	PathCACerts  = PathPrefix + "/cacerts"
	PathEnroll   = PathPrefix + "/simpleenroll"
	PathReenroll = PathPrefix + "/simplereenroll"
	// PathDormantReenroll is not in RFC 7030: a device whose certificate expired while it was
	// off proves possession of the expired certificate's key (DecodeDormantRequest).
	PathDormantReenroll = PathPrefix + "/dormantreenroll"
	ContentCerts        = "application/pkcs7-mime; smime-type=certs-only"
	ContentCSR          = "application/pkcs10"
	// ContentDormant is the content type of a dormant re-enrollment request: PEM.
	ContentDormant = "application/x-pem-file"
	HeaderModel    = "Millwright-Hardware-Model"
	maxMessageSize = 64 << 10
)

// ErrMalformed is returned for input that is not the expected base64 DER structure.
var ErrMalformed = errors.New("malformed EST message")

var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"optional"`
}

type signedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	EncapContent     struct{ ContentType asn1.ObjectIdentifier }
	Certificates     asn1.RawValue `asn1:"optional"`
	SignerInfos      asn1.RawValue
}

var emptySet = asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: []byte{}}

// EncodeCertsOnly returns certificates as a certs-only PKCS #7 SignedData, DER.
func EncodeCertsOnly(certs ...*x509.Certificate) ([]byte, error) {
	var raw []byte
	for _, c := range certs {
		raw = append(raw, c.Raw...)
	}
	sd := signedData{Version: 1, DigestAlgorithms: emptySet, SignerInfos: emptySet,
		Certificates: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: raw}}
	sd.EncapContent.ContentType = oidData
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return nil, fmt.Errorf("encode PKCS #7: %w", err)
	}
	out, err := asn1.Marshal(contentInfo{ContentType: oidSignedData,
		Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}})
	if err != nil {
		return nil, fmt.Errorf("encode PKCS #7: %w", err)
	}
	return out, nil
}

// DecodeCertsOnly parses a certs-only PKCS #7 SignedData (DER) and returns its certificates.
func DecodeCertsOnly(der []byte) ([]*x509.Certificate, error) {
	var ci contentInfo
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS #7 content info: %v", ErrMalformed, err)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the PKCS #7 structure", ErrMalformed, len(rest))
	}
	if !ci.ContentType.Equal(oidSignedData) || ci.Content.Class != asn1.ClassContextSpecific || ci.Content.Tag != 0 {
		return nil, fmt.Errorf("%w: not a PKCS #7 SignedData", ErrMalformed)
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, fmt.Errorf("%w: PKCS #7 signed data: %v", ErrMalformed, err)
	}
	if sd.Certificates.Class != asn1.ClassContextSpecific || sd.Certificates.Tag != 0 || len(sd.Certificates.Bytes) == 0 {
		return nil, fmt.Errorf("%w: PKCS #7 holds no certificates", ErrMalformed)
	}
	certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrMalformed, err)
	}
	return certs, nil
}

// EncodeBase64 is the EST transfer encoding: standard base64 in lines of 64 characters.
func EncodeBase64(der []byte) []byte {
	s := base64.StdEncoding.EncodeToString(der)
	var b bytes.Buffer
	for len(s) > 64 {
		b.WriteString(s[:64])
		b.WriteString("\r\n")
		s = s[64:]
	}
	b.WriteString(s)
	b.WriteString("\r\n")
	return b.Bytes()
}

// DecodeBase64 reads an EST body: base64 with any line breaks and spaces.
func DecodeBase64(body []byte) ([]byte, error) {
	if len(body) > maxMessageSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMalformed, len(body), maxMessageSize)
	}
	clean := make([]byte, 0, len(body))
	for _, c := range body {
		switch c {
		case '\r', '\n', ' ', '\t':
		default:
			clean = append(clean, c)
		}
	}
	der, err := base64.StdEncoding.DecodeString(string(clean))
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	return der, nil
}

// DecodeCSR reads a base64 PKCS #10 request and checks its signature.
func DecodeCSR(body []byte) (*x509.CertificateRequest, error) {
	der, err := DecodeBase64(body)
	if err != nil {
		return nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: PKCS #10: %v", ErrMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: PKCS #10 signature: %v", ErrMalformed, err)
	}
	return csr, nil
}
