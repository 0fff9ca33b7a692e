package firmware

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Bounds on a signed manifest.
const (
	// MaxSignedManifestSize is the largest encoded SignedManifest accepted.
	MaxSignedManifestSize = 64 << 10
	// MaxSignatures is the most signatures an envelope may carry.
	MaxSignatures = 8
)

// Manifest describes one firmware release for one hardware model. It is what
// gets signed.
type Manifest struct {
	// Version is the release's semantic version (semver 2.0.0).
	Version string `json:"version"`
	// Model is the hardware model the artifact is built for.
	Model string `json:"model"`
	// Artifact names the firmware image and pins its bytes.
	Artifact Artifact `json:"artifact"`
	// MinFrom is the oldest running version that may install this release
	// directly; "" means any.
	MinFrom string `json:"min_from,omitempty"`
	// Rollback marks a release explicitly signed as a rollback: only then may
	// it install over a higher running version.
	Rollback bool `json:"rollback,omitempty"`
	// Expires is when the manifest stops being accepted; it must be set.
	Expires time.Time `json:"expires"`
	// Notes are free-form release notes.
	Notes string `json:"notes,omitempty"`
	// Created is when the manifest was made (signed).
	Created time.Time `json:"created"`
}

// Artifact is the firmware image a manifest pins.
type Artifact struct {
	// Name is the image's file name or path in the archive.
	Name string `json:"name"`
	// SHA256 is the image's SHA-256, 64 lower-case hex characters.
	SHA256 string `json:"sha256"`
	// Size is the image's length in bytes.
	Size int64 `json:"size"`
}

// Validate checks the manifest's fields; an error wraps ErrMalformed and names
// the field.
func (m Manifest) Validate() error {
	if err := ValidVersion(m.Version); err != nil {
		return fmt.Errorf("manifest version: %w", err)
	}
	if m.Model == "" {
		return fmt.Errorf("%w: manifest model is empty", ErrMalformed)
	}
	if m.Artifact.Name == "" {
		return fmt.Errorf("%w: manifest artifact name is empty", ErrMalformed)
	}
	if len(m.Artifact.SHA256) != 64 || !isLowerHex(m.Artifact.SHA256) {
		return fmt.Errorf("%w: manifest artifact sha256 %q: want 64 lower-case hex characters", ErrMalformed, m.Artifact.SHA256)
	}
	if m.Artifact.Size < 0 {
		return fmt.Errorf("%w: manifest artifact size %d is negative", ErrMalformed, m.Artifact.Size)
	}
	if m.MinFrom != "" {
		if err := ValidVersion(m.MinFrom); err != nil {
			return fmt.Errorf("manifest min_from: %w", err)
		}
	}
	if m.Expires.IsZero() {
		return fmt.Errorf("%w: manifest expires is not set", ErrMalformed)
	}
	if m.Created.IsZero() {
		return fmt.Errorf("%w: manifest created is not set", ErrMalformed)
	}
	if !m.Expires.After(m.Created) {
		return fmt.Errorf("%w: manifest expires %s is not after created %s", ErrMalformed,
			m.Expires.UTC().Format(time.RFC3339), m.Created.UTC().Format(time.RFC3339))
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// SignedManifest is the envelope that travels: the manifest's exact JSON
// bytes (base64 in the envelope's JSON, so no re-encoding can alter them) and
// one or more signatures over those bytes.
type SignedManifest struct {
	// Manifest is the manifest's JSON exactly as signed.
	Manifest []byte `json:"manifest"`
	// Signatures are ed25519 signatures over Manifest, at most MaxSignatures.
	Signatures []Signature `json:"signatures"`
}

// Signature is one ed25519 signature and the ID of the key that made it.
type Signature struct {
	// KeyID is KeyID of the signing public key.
	KeyID string `json:"key_id"`
	// Sig is the 64-byte ed25519 signature (base64 in JSON).
	Sig []byte `json:"sig"`
}

// check enforces the envelope's bounds and shapes, not its signatures.
func (sm SignedManifest) check() error {
	if len(sm.Manifest) == 0 {
		return fmt.Errorf("%w: signed manifest has no manifest bytes", ErrMalformed)
	}
	if len(sm.Manifest) > MaxSignedManifestSize {
		return fmt.Errorf("%w: manifest is %d bytes, limit %d", ErrMalformed, len(sm.Manifest), MaxSignedManifestSize)
	}
	if n := len(sm.Signatures); n == 0 || n > MaxSignatures {
		return fmt.Errorf("%w: %d signatures, want 1 to %d", ErrMalformed, n, MaxSignatures)
	}
	seen := make(map[string]bool, len(sm.Signatures))
	for i, s := range sm.Signatures {
		if len(s.KeyID) != KeyIDLen || !isLowerHex(s.KeyID) {
			return fmt.Errorf("%w: signature %d: key_id %q: want %d lower-case hex characters", ErrMalformed, i, s.KeyID, KeyIDLen)
		}
		if seen[s.KeyID] {
			return fmt.Errorf("%w: signature %d: key_id %s appears twice", ErrMalformed, i, s.KeyID)
		}
		seen[s.KeyID] = true
		if len(s.Sig) != 64 {
			return fmt.Errorf("%w: signature %d (key %s) is %d bytes, want 64", ErrMalformed, i, s.KeyID, len(s.Sig))
		}
	}
	return nil
}

// Encode renders the envelope as JSON.
func (sm SignedManifest) Encode() ([]byte, error) {
	if err := sm.check(); err != nil {
		return nil, fmt.Errorf("encode signed manifest: %w", err)
	}
	return json.Marshal(sm)
}

// DecodeSignedManifest parses an envelope, refusing more than
// MaxSignedManifestSize bytes, more than MaxSignatures signatures, unknown
// fields and trailing data. It does not verify; see Verify.
func DecodeSignedManifest(b []byte) (SignedManifest, error) {
	var sm SignedManifest
	if len(b) > MaxSignedManifestSize {
		return sm, fmt.Errorf("decode signed manifest: %w: %d bytes, limit %d", ErrMalformed, len(b), MaxSignedManifestSize)
	}
	if err := decodeStrict(b, &sm); err != nil {
		return SignedManifest{}, fmt.Errorf("decode signed manifest: %w: %v", ErrMalformed, err)
	}
	if err := sm.check(); err != nil {
		return SignedManifest{}, fmt.Errorf("decode signed manifest: %w", err)
	}
	return sm, nil
}

// decodeStrict decodes one JSON value with no unknown fields and nothing after
// it. Object keys must be unique and lower-case: encoding/json matches keys
// without regard to case and lets a later duplicate win, where another
// verifier's parser might take the first, so both are refused.
func decodeStrict(b []byte, v any) error {
	if err := checkKeys(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// ParseManifest decodes manifest JSON strictly and validates it. Unknown
// fields are refused: a signed constraint an older verifier does not know
// must not be silently ignored.
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	if err := decodeStrict(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w: %v", ErrMalformed, err)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("parse manifest: %w", err)
	}
	return m, nil
}

// checkKeys walks the JSON tokens and refuses an object key that is not
// lower-case or appears twice in its object.
func checkKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var stack []keyFrame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if n := len(stack); n > 0 && stack[n-1].keys != nil && stack[n-1].wantKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				markValue(stack)
				continue
			}
			k, _ := tok.(string)
			if k != strings.ToLower(k) {
				return fmt.Errorf("key %q is not lower-case", k)
			}
			if stack[n-1].keys[k] {
				return fmt.Errorf("key %q appears twice", k)
			}
			stack[n-1].keys[k] = true
			stack[n-1].wantKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, keyFrame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, keyFrame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			markValue(stack)
		default:
			markValue(stack)
		}
	}
}

// keyFrame is an open object or array in checkKeys.
type keyFrame struct {
	keys    map[string]bool // nil for an array
	wantKey bool            // in an object, the next token is a key
}

// markValue records that a value ended: in an object, a key comes next.
func markValue(stack []keyFrame) {
	if n := len(stack); n > 0 && stack[n-1].keys != nil {
		stack[n-1].wantKey = true
	}
}
