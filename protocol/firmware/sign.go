package firmware

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"
)

// Sign validates m, encodes it as JSON and signs those exact bytes with key.
func Sign(m Manifest, key ed25519.PrivateKey) (SignedManifest, error) {
	if len(key) != ed25519.PrivateKeySize {
		return SignedManifest{}, fmt.Errorf("sign manifest: ed25519 private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	if err := m.Validate(); err != nil {
		return SignedManifest{}, fmt.Errorf("sign manifest: %w", err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return SignedManifest{}, fmt.Errorf("sign manifest: %w", err)
	}
	return AddSignature(SignedManifest{Manifest: b}, key)
}

// AddSignature adds key's signature over the envelope's manifest bytes, for a
// manifest signed by more than one key. The bytes are not changed.
func AddSignature(sm SignedManifest, key ed25519.PrivateKey) (SignedManifest, error) {
	if len(key) != ed25519.PrivateKeySize {
		return SignedManifest{}, fmt.Errorf("add signature: ed25519 private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	id := KeyID(key.Public().(ed25519.PublicKey))
	for _, s := range sm.Signatures {
		if s.KeyID == id {
			return SignedManifest{}, fmt.Errorf("add signature: %w: key %s already signed", ErrMalformed, id)
		}
	}
	if len(sm.Signatures) >= MaxSignatures {
		return SignedManifest{}, fmt.Errorf("add signature: %w: already %d signatures", ErrMalformed, MaxSignatures)
	}
	out := SignedManifest{
		Manifest:   sm.Manifest,
		Signatures: append(append([]Signature(nil), sm.Signatures...), Signature{KeyID: id, Sig: ed25519.Sign(key, sm.Manifest)}),
	}
	return out, nil
}

// Verify checks the envelope and decides whether a device of the given
// hardware model, running version running, may install the manifest at time
// now. It returns the manifest, or an error wrapping one of: ErrMalformed,
// ErrUnknownKey (no signature by a trusted key), ErrBadSignature (a trusted
// key's signature does not verify), ErrWrongModel, ErrExpired,
// ErrSameVersion, ErrDowngrade (lower version without rollback) and ErrTooOld
// (running is older than min_from).
//
// Signatures by keys not in trusted are ignored, so a manifest may carry the
// old and the new key's signatures across a rotation; every signature by a
// trusted key must verify.
func Verify(sm SignedManifest, trusted TrustedKeys, model, running string, now time.Time) (Manifest, error) {
	if err := sm.check(); err != nil {
		return Manifest{}, fmt.Errorf("verify manifest: %w", err)
	}
	verified := 0
	var unknown []string
	for _, s := range sm.Signatures {
		pub, ok := trusted.Key(s.KeyID)
		if !ok {
			unknown = append(unknown, s.KeyID)
			continue
		}
		if !ed25519.Verify(pub, sm.Manifest, s.Sig) {
			return Manifest{}, fmt.Errorf("verify manifest: %w: key %s", ErrBadSignature, s.KeyID)
		}
		verified++
	}
	if verified == 0 {
		return Manifest{}, fmt.Errorf("verify manifest: %w: signed by %v, trusted %v", ErrUnknownKey, unknown, trusted.IDs())
	}
	m, err := ParseManifest(sm.Manifest)
	if err != nil {
		return Manifest{}, fmt.Errorf("verify manifest: %w", err)
	}
	if err := m.Allows(model, running, now); err != nil {
		return Manifest{}, fmt.Errorf("verify manifest: %w", err)
	}
	return m, nil
}

// Allows applies the install policy to an already verified manifest: the
// model must match, the manifest must not have expired, and the version must
// be newer than running (or lower with Rollback set) with running at least
// MinFrom.
func (m Manifest) Allows(model, running string, now time.Time) error {
	if m.Model != model {
		return fmt.Errorf("%w: manifest for %q, device is %q", ErrWrongModel, m.Model, model)
	}
	if !now.Before(m.Expires) {
		return fmt.Errorf("%w: version %s expired at %s, now %s", ErrExpired, m.Version,
			m.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	c, err := CompareVersions(m.Version, running)
	if err != nil {
		return fmt.Errorf("running version: %w", err)
	}
	switch {
	case c == 0:
		return fmt.Errorf("%w: %s", ErrSameVersion, running)
	case c < 0 && !m.Rollback:
		return fmt.Errorf("%w: %s is lower than running %s", ErrDowngrade, m.Version, running)
	}
	if m.MinFrom != "" {
		c, err := CompareVersions(running, m.MinFrom)
		if err != nil {
			return fmt.Errorf("min_from: %w", err)
		}
		if c < 0 {
			return fmt.Errorf("%w: running %s, %s needs at least %s", ErrTooOld, running, m.Version, m.MinFrom)
		}
	}
	return nil
}
