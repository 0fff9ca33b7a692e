package firmware

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
)

// PEM block types.
const (
	pemPrivateKey = "PRIVATE KEY" // PKCS #8
	pemPublicKey  = "PUBLIC KEY"  // PKIX
)

// KeyIDLen is the length of a key ID in hex characters (8 bytes).
const KeyIDLen = 16

// KeyID names a public key: the first 8 bytes of the SHA-256 of the raw
// 32-byte ed25519 public key, in lower-case hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// GenerateKey makes a new ed25519 signing key from crypto/rand.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	return pub, priv, nil
}

// EncodePrivateKeyPEM encodes an ed25519 private key as a PKCS #8
// "PRIVATE KEY" PEM block.
func EncodePrivateKeyPEM(priv ed25519.PrivateKey) ([]byte, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("encode private key: ed25519 private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// DecodePrivateKeyPEM decodes a PKCS #8 "PRIVATE KEY" PEM block holding an
// ed25519 key; any other kind of key is refused.
func DecodePrivateKeyPEM(b []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("decode private key: no PEM block")
	}
	if block.Type != pemPrivateKey {
		return nil, fmt.Errorf("decode private key: PEM block %q, want %q (PKCS #8)", block.Type, pemPrivateKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decode private key: %w", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("decode private key: %T is not an ed25519 key; firmware keys are ed25519 only", k)
	}
	return priv, nil
}

// EncodePublicKeyPEM encodes an ed25519 public key as a PKIX "PUBLIC KEY"
// PEM block.
func EncodePublicKeyPEM(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("encode public key: ed25519 public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPublicKey, Bytes: der}), nil
}

// DecodePublicKeyPEM decodes one PKIX "PUBLIC KEY" PEM block holding an
// ed25519 key; any other kind of key is refused.
func DecodePublicKeyPEM(b []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("decode public key: no PEM block")
	}
	return parsePublicBlock(block)
}

func parsePublicBlock(block *pem.Block) (ed25519.PublicKey, error) {
	if block.Type != pemPublicKey {
		return nil, fmt.Errorf("decode public key: PEM block %q, want %q (PKIX)", block.Type, pemPublicKey)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("decode public key: %w", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("decode public key: %T is not an ed25519 key; firmware keys are ed25519 only", k)
	}
	return pub, nil
}

// TrustedKeys is the set of public keys whose signatures a verifier accepts,
// by key ID. The zero value trusts nothing. A key is rotated by shipping a new
// list (for the agent, in its configuration, delivered by a signed update).
type TrustedKeys struct {
	keys map[string]ed25519.PublicKey
}

// NewTrustedKeys makes a trusted set of the given keys.
func NewTrustedKeys(pubs ...ed25519.PublicKey) (TrustedKeys, error) {
	t := TrustedKeys{keys: make(map[string]ed25519.PublicKey, len(pubs))}
	for _, pub := range pubs {
		if len(pub) != ed25519.PublicKeySize {
			return TrustedKeys{}, fmt.Errorf("trusted keys: ed25519 public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
		}
		id := KeyID(pub)
		if have, ok := t.keys[id]; ok && !have.Equal(pub) {
			return TrustedKeys{}, fmt.Errorf("trusted keys: two different keys share key ID %s", id)
		}
		t.keys[id] = bytes.Clone(pub)
	}
	return t, nil
}

// ParseTrustedKeys reads one or more concatenated "PUBLIC KEY" PEM blocks
// (text between blocks is ignored, so a file may carry comments). No block,
// or any block that is not an ed25519 public key, is an error.
func ParseTrustedKeys(pemBytes []byte) (TrustedKeys, error) {
	var pubs []ed25519.PublicKey
	rest := pemBytes
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		pub, err := parsePublicBlock(block)
		if err != nil {
			return TrustedKeys{}, fmt.Errorf("trusted keys: block %d: %w", len(pubs)+1, err)
		}
		pubs = append(pubs, pub)
	}
	if len(pubs) == 0 {
		return TrustedKeys{}, errors.New("trusted keys: no PEM \"PUBLIC KEY\" block")
	}
	return NewTrustedKeys(pubs...)
}

// Len is the number of trusted keys.
func (t TrustedKeys) Len() int { return len(t.keys) }

// IDs lists the trusted key IDs, sorted.
func (t TrustedKeys) IDs() []string {
	ids := make([]string, 0, len(t.keys))
	for id := range t.keys {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Key returns the trusted key with the given ID.
func (t TrustedKeys) Key(id string) (ed25519.PublicKey, bool) {
	k, ok := t.keys[id]
	return k, ok
}
