package firmware

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// testKey derives a deterministic key from a seed byte.
func testKey(seed byte) (ed25519.PublicKey, ed25519.PrivateKey) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	return priv.Public().(ed25519.PublicKey), priv
}

var testImage = []byte("firmware image bytes, version 1.2.0, for gw-1\n")

func testManifest() Manifest {
	sum := sha256.Sum256(testImage)
	return Manifest{
		Version:  "1.2.0",
		Model:    "gw-1",
		Artifact: Artifact{Name: "gw-1/1.2.0.img", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(testImage))},
		MinFrom:  "1.0.0",
		Expires:  t0.Add(30 * 24 * time.Hour),
		Notes:    "fixes <reconnect> & backoff",
		Created:  t0,
	}
}

func mustSign(t testing.TB, m Manifest, key ed25519.PrivateKey) SignedManifest {
	t.Helper()
	sm, err := Sign(m, key)
	require.NoError(t, err)
	return sm
}

func mustTrust(t testing.TB, pubs ...ed25519.PublicKey) TrustedKeys {
	t.Helper()
	tk, err := NewTrustedKeys(pubs...)
	require.NoError(t, err)
	return tk
}

func TestVerify(t *testing.T) {
	pubA, privA := testKey(1)
	pubB, privB := testKey(2)
	_, privC := testKey(3)
	trusted := mustTrust(t, pubA)

	with := func(f func(*Manifest)) Manifest {
		m := testManifest()
		f(&m)
		return m
	}
	cases := []struct {
		name    string
		sm      SignedManifest
		trusted TrustedKeys
		model   string
		running string
		now     time.Time
		err     error
		msg     string // a substring the error must name
	}{
		{name: "upgrade", sm: mustSign(t, testManifest(), privA), running: "1.1.0"},
		{name: "upgrade from min_from", sm: mustSign(t, testManifest(), privA), running: "1.0.0"},
		{name: "upgrade from prerelease of same", sm: mustSign(t, testManifest(), privA), running: "1.2.0-rc.1"},
		{name: "no min_from", sm: mustSign(t, with(func(m *Manifest) { m.MinFrom = "" }), privA), running: "0.1.0"},
		{name: "signed rollback", sm: mustSign(t, with(func(m *Manifest) { m.Rollback = true }), privA), running: "1.3.0"},
		{name: "rollback flag on an upgrade", sm: mustSign(t, with(func(m *Manifest) { m.Rollback = true }), privA), running: "1.1.0"},
		{name: "second signature by an untrusted key is ignored", sm: must(AddSignature(mustSign(t, testManifest(), privA), privC)), running: "1.1.0"},
		{name: "two trusted signatures", sm: must(AddSignature(mustSign(t, testManifest(), privA), privB)), trusted: mustTrust(t, pubA, pubB), running: "1.1.0"},
		{name: "just before expiry", sm: mustSign(t, testManifest(), privA), running: "1.1.0", now: t0.Add(30*24*time.Hour - time.Nanosecond)},

		{name: "unknown key", sm: mustSign(t, testManifest(), privB), running: "1.1.0", err: ErrUnknownKey, msg: KeyID(pubB)},
		{name: "empty trust list", sm: mustSign(t, testManifest(), privA), trusted: TrustedKeys{}, running: "1.1.0", err: ErrUnknownKey},
		{name: "signature from another key under a trusted ID", sm: func() SignedManifest {
			sm := mustSign(t, testManifest(), privB)
			sm.Signatures[0].KeyID = KeyID(pubA)
			return sm
		}(), running: "1.1.0", err: ErrBadSignature, msg: KeyID(pubA)},
		{name: "flipped signature bit", sm: func() SignedManifest {
			sm := mustSign(t, testManifest(), privA)
			sm.Signatures[0].Sig[10] ^= 1
			return sm
		}(), running: "1.1.0", err: ErrBadSignature},
		{name: "trusted signature bad beside a good one", sm: func() SignedManifest {
			sm := must(AddSignature(mustSign(t, testManifest(), privA), privB))
			sm.Signatures[1].Sig[0] ^= 0x80
			return sm
		}(), trusted: mustTrust(t, pubA, pubB), running: "1.1.0", err: ErrBadSignature, msg: KeyID(pubB)},
		{name: "wrong model", sm: mustSign(t, testManifest(), privA), model: "gw-2", running: "1.1.0", err: ErrWrongModel, msg: `"gw-2"`},
		{name: "unsigned downgrade", sm: mustSign(t, testManifest(), privA), running: "1.3.0", err: ErrDowngrade, msg: "1.3.0"},
		{name: "downgrade to prerelease", sm: mustSign(t, with(func(m *Manifest) { m.Version = "1.2.0-rc.1" }), privA), running: "1.2.0", err: ErrDowngrade},
		{name: "same version", sm: mustSign(t, testManifest(), privA), running: "1.2.0", err: ErrSameVersion, msg: "1.2.0"},
		{name: "same version, other build", sm: mustSign(t, testManifest(), privA), running: "1.2.0+b7", err: ErrSameVersion},
		{name: "same version signed as rollback", sm: mustSign(t, with(func(m *Manifest) { m.Rollback = true }), privA), running: "1.2.0", err: ErrSameVersion},
		{name: "expired", sm: mustSign(t, testManifest(), privA), running: "1.1.0", now: t0.Add(30 * 24 * time.Hour), err: ErrExpired, msg: "2026-12-31T12:00:00Z"},
		{name: "too old", sm: mustSign(t, testManifest(), privA), running: "0.9.0", err: ErrTooOld, msg: "0.9.0"},
		{name: "too old: prerelease of min_from", sm: mustSign(t, testManifest(), privA), running: "1.0.0-rc.2", err: ErrTooOld},
		{name: "running version malformed", sm: mustSign(t, testManifest(), privA), running: "one", err: ErrMalformed, msg: `"one"`},
		{name: "no signatures", sm: SignedManifest{Manifest: mustSign(t, testManifest(), privA).Manifest}, running: "1.1.0", err: ErrMalformed},
		{name: "no manifest bytes", sm: SignedManifest{Signatures: mustSign(t, testManifest(), privA).Signatures}, running: "1.1.0", err: ErrMalformed},
		{name: "signed garbage", sm: signRaw(t, []byte("not json"), privA), running: "1.1.0", err: ErrMalformed},
		{name: "signed manifest with an unknown field", sm: signRaw(t, []byte(`{"version":"1.2.0","model":"gw-1","artifact":{"name":"a","sha256":"`+strings.Repeat("0", 64)+`","size":1},"expires":"2027-01-01T00:00:00Z","created":"2026-12-01T00:00:00Z","requires":"x"}`), privA), running: "1.1.0", err: ErrMalformed, msg: "requires"},
		{name: "signed manifest without expiry", sm: signRaw(t, []byte(`{"version":"1.2.0","model":"gw-1","artifact":{"name":"a","sha256":"`+strings.Repeat("0", 64)+`","size":1},"created":"2026-12-01T00:00:00Z"}`), privA), running: "1.1.0", err: ErrMalformed, msg: "expires"},
		{name: "signed manifest with a duplicate key", sm: signRaw(t, []byte(`{"version":"1.2.0","model":"gw-1","artifact":{"name":"a","sha256":"`+strings.Repeat("0", 64)+`","size":1},"expires":"2027-01-01T00:00:00Z","created":"2026-12-01T00:00:00Z","model":"gw-2"}`), privA), running: "1.1.0", err: ErrMalformed, msg: `"model" appears twice`},
		{name: "signed manifest with an upper-case key", sm: signRaw(t, []byte(`{"version":"1.2.0","model":"gw-1","artifact":{"name":"a","sha256":"`+strings.Repeat("0", 64)+`","size":1},"expires":"2027-01-01T00:00:00Z","created":"2026-12-01T00:00:00Z","Version":"9.0.0"}`), privA), running: "1.1.0", err: ErrMalformed, msg: `"Version"`},
		{name: "signed manifest with a duplicate nested key", sm: signRaw(t, []byte(`{"version":"1.2.0","model":"gw-1","artifact":{"name":"a","name":"b","sha256":"`+strings.Repeat("0", 64)+`","size":1},"expires":"2027-01-01T00:00:00Z","created":"2026-12-01T00:00:00Z"}`), privA), running: "1.1.0", err: ErrMalformed, msg: `"name" appears twice`},
		{name: "signed manifest expiring before it was made", sm: signRaw(t, []byte(`{"version":"1.2.0","model":"gw-1","artifact":{"name":"a","sha256":"`+strings.Repeat("0", 64)+`","size":1},"expires":"2026-11-01T00:00:00Z","created":"2026-12-01T00:00:00Z"}`), privA), running: "1.1.0", err: ErrMalformed, msg: "not after created"},
		{name: "signed manifest with a bad version", sm: signRaw(t, []byte(`{"version":"1.2","model":"gw-1","artifact":{"name":"a","sha256":"`+strings.Repeat("0", 64)+`","size":1},"expires":"2027-01-01T00:00:00Z","created":"2026-12-01T00:00:00Z"}`), privA), running: "1.1.0", err: ErrMalformed, msg: `"1.2"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tk := trusted
			if tc.trusted.keys != nil || tc.name == "empty trust list" {
				tk = tc.trusted
			}
			model := tc.model
			if model == "" {
				model = "gw-1"
			}
			now := tc.now
			if now.IsZero() {
				now = t0.Add(time.Hour)
			}
			m, err := Verify(tc.sm, tk, model, tc.running, now)
			if tc.err == nil {
				require.NoError(t, err)
				require.Equal(t, "1.2", m.Version[:3])
				return
			}
			require.ErrorIs(t, err, tc.err)
			for _, other := range allErrs {
				if other != tc.err {
					require.NotErrorIs(t, err, other)
				}
			}
			require.Contains(t, err.Error(), tc.msg)
			require.Equal(t, Manifest{}, m)
		})
	}
}

var allErrs = []error{ErrMalformed, ErrBadSignature, ErrUnknownKey, ErrWrongModel, ErrDowngrade,
	ErrSameVersion, ErrExpired, ErrTooOld, ErrArtifactMismatch}

func must(sm SignedManifest, err error) SignedManifest {
	if err != nil {
		panic(err)
	}
	return sm
}

// signRaw signs arbitrary bytes as a manifest, bypassing Sign's validation.
func signRaw(t testing.TB, b []byte, key ed25519.PrivateKey) SignedManifest {
	t.Helper()
	sm, err := AddSignature(SignedManifest{Manifest: b}, key)
	require.NoError(t, err)
	return sm
}

// TestFlippedManifestByte flips each byte of the signed manifest JSON in turn:
// every variant is refused as a bad signature.
func TestFlippedManifestByte(t *testing.T) {
	pub, priv := testKey(1)
	trusted := mustTrust(t, pub)
	sm := mustSign(t, testManifest(), priv)
	_, err := Verify(sm, trusted, "gw-1", "1.1.0", t0)
	require.NoError(t, err)
	for i := range sm.Manifest {
		for _, bit := range []byte{0x01, 0x80} {
			bad := SignedManifest{Manifest: bytes.Clone(sm.Manifest), Signatures: sm.Signatures}
			bad.Manifest[i] ^= bit
			_, err := Verify(bad, trusted, "gw-1", "1.1.0", t0)
			require.ErrorIs(t, err, ErrBadSignature, "byte %d bit %#x", i, bit)
		}
	}
}

// TestEnvelopeRoundTrip: the envelope survives encoding, including the
// manifest's exact bytes, HTML-special characters and all.
func TestEnvelopeRoundTrip(t *testing.T) {
	pub, priv := testKey(1)
	sm := mustSign(t, testManifest(), priv)
	b, err := sm.Encode()
	require.NoError(t, err)
	got, err := DecodeSignedManifest(b)
	require.NoError(t, err)
	require.Equal(t, sm, got)
	m, err := Verify(got, mustTrust(t, pub), "gw-1", "1.1.0", t0)
	require.NoError(t, err)
	require.Equal(t, testManifest(), m)

	// Manifest bytes signed with whitespace by another tool verify as they are.
	raw := []byte("{\n  \"version\": \"1.2.0\", \"model\": \"gw-1\",\n  \"artifact\": {\"name\": \"a\", \"sha256\": \"" +
		strings.Repeat("ab", 32) + "\", \"size\": 0},\n  \"expires\": \"2027-01-01T00:00:00Z\", \"created\": \"2026-12-01T00:00:00Z\"\n}\n")
	b, err = signRaw(t, raw, priv).Encode()
	require.NoError(t, err)
	got, err = DecodeSignedManifest(b)
	require.NoError(t, err)
	require.Equal(t, raw, got.Manifest)
	_, err = Verify(got, mustTrust(t, pub), "gw-1", "1.1.0", t0)
	require.NoError(t, err)
}

func TestDecodeSignedManifestBounds(t *testing.T) {
	_, priv := testKey(1)
	sm := mustSign(t, testManifest(), priv)
	good, err := sm.Encode()
	require.NoError(t, err)

	nineSigs := SignedManifest{Manifest: sm.Manifest}
	for i := byte(1); i <= 9; i++ {
		_, k := testKey(i)
		nineSigs.Signatures = append(nineSigs.Signatures, Signature{KeyID: KeyID(k.Public().(ed25519.PublicKey)), Sig: ed25519.Sign(k, sm.Manifest)})
	}
	nine, err := json.Marshal(nineSigs)
	require.NoError(t, err)
	eight, err := json.Marshal(SignedManifest{Manifest: sm.Manifest, Signatures: nineSigs.Signatures[:8]})
	require.NoError(t, err)

	dup, err := json.Marshal(SignedManifest{Manifest: sm.Manifest, Signatures: []Signature{sm.Signatures[0], sm.Signatures[0]}})
	require.NoError(t, err)

	big := append(bytes.Clone(good[:len(good)-1]), []byte(`,"pad":"`+strings.Repeat("x", MaxSignedManifestSize)+`"}`)...)

	cases := []struct {
		name string
		in   []byte
		err  bool
		msg  string
	}{
		{name: "good", in: good},
		{name: "eight signatures", in: eight},
		{name: "nine signatures", in: nine, err: true, msg: "9 signatures"},
		{name: "larger than 64 KiB", in: big, err: true, msg: "limit 65536"},
		{name: "empty", in: nil, err: true},
		{name: "not json", in: []byte("hello"), err: true},
		{name: "trailing data", in: append(bytes.Clone(good), []byte(" {}")...), err: true},
		{name: "unknown field", in: []byte(`{"manifest":"e30=","signatures":[],"x":1}`), err: true},
		{name: "duplicate manifest", in: append([]byte(`{"manifest":"e30=",`), good[1:]...), err: true, msg: `"manifest" appears twice`},
		{name: "upper-case key", in: bytes.Replace(good, []byte(`"signatures"`), []byte(`"Signatures"`), 1), err: true, msg: `"Signatures"`},
		{name: "no signatures", in: []byte(`{"manifest":"e30=","signatures":[]}`), err: true, msg: "0 signatures"},
		{name: "duplicate key id", in: dup, err: true, msg: "twice"},
		{name: "short key id", in: []byte(`{"manifest":"e30=","signatures":[{"key_id":"abcd","sig":"` + strings.Repeat("A", 86) + `=="}]}`), err: true, msg: `"abcd"`},
		{name: "short sig", in: []byte(`{"manifest":"e30=","signatures":[{"key_id":"0123456789abcdef","sig":"AAAA"}]}`), err: true, msg: "3 bytes"},
		{name: "manifest not base64", in: []byte(`{"manifest":"{}","signatures":[{"key_id":"0123456789abcdef","sig":"AAAA"}]}`), err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeSignedManifest(tc.in)
			if !tc.err {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrMalformed)
			require.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestKeyRotation: a manifest signed by a new key B is refused while the
// device trusts only A, and accepted once an update ships a list with B.
// Signed by both, it verifies under either list, which bridges the rotation.
func TestKeyRotation(t *testing.T) {
	pubA, privA := testKey(1)
	pubB, privB := testKey(2)
	pemA, err := EncodePublicKeyPEM(pubA)
	require.NoError(t, err)
	pemB, err := EncodePublicKeyPEM(pubB)
	require.NoError(t, err)

	onlyA, err := ParseTrustedKeys(pemA)
	require.NoError(t, err)
	byB := mustSign(t, testManifest(), privB)
	_, err = Verify(byB, onlyA, "gw-1", "1.1.0", t0)
	require.ErrorIs(t, err, ErrUnknownKey)

	// The new list, as a file with a comment between the blocks.
	list := append(append(bytes.Clone(pemA), []byte("# rotated in 2026-12\n")...), pemB...)
	aAndB, err := ParseTrustedKeys(list)
	require.NoError(t, err)
	require.Equal(t, 2, aAndB.Len())
	_, err = Verify(byB, aAndB, "gw-1", "1.1.0", t0)
	require.NoError(t, err)

	onlyB, err := ParseTrustedKeys(pemB)
	require.NoError(t, err)
	byA := mustSign(t, testManifest(), privA)
	_, err = Verify(byA, onlyB, "gw-1", "1.1.0", t0)
	require.ErrorIs(t, err, ErrUnknownKey, "A is retired")

	both := must(AddSignature(byA, privB))
	for _, tk := range []TrustedKeys{onlyA, aAndB, onlyB} {
		_, err = Verify(both, tk, "gw-1", "1.1.0", t0)
		require.NoError(t, err, "trusted %v", tk.IDs())
	}
}

func TestKeyID(t *testing.T) {
	pub, _ := testKey(1)
	sum := sha256.Sum256(pub)
	require.Equal(t, hex.EncodeToString(sum[:8]), KeyID(pub))
	require.Len(t, KeyID(pub), KeyIDLen)
}

func TestPEMRoundTrip(t *testing.T) {
	pub, priv, err := GenerateKey()
	require.NoError(t, err)

	privPEM, err := EncodePrivateKeyPEM(priv)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(privPEM, []byte("-----BEGIN PRIVATE KEY-----\n")))
	gotPriv, err := DecodePrivateKeyPEM(privPEM)
	require.NoError(t, err)
	require.True(t, priv.Equal(gotPriv))

	pubPEM, err := EncodePublicKeyPEM(pub)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(pubPEM, []byte("-----BEGIN PUBLIC KEY-----\n")))
	gotPub, err := DecodePublicKeyPEM(pubPEM)
	require.NoError(t, err)
	require.True(t, pub.Equal(gotPub))

	// A key read back signs what the original verifies.
	sm := mustSign(t, testManifest(), gotPriv)
	_, err = Verify(sm, mustTrust(t, pub), "gw-1", "1.1.0", t0)
	require.NoError(t, err)
}

func TestPEMRefusesOtherKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, edPriv := testKey(1)
	edPubPEM, err := EncodePublicKeyPEM(edPriv.Public().(ed25519.PublicKey))
	require.NoError(t, err)
	edPrivPEM, err := EncodePrivateKeyPEM(edPriv)
	require.NoError(t, err)

	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	pkix := func(k any) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		require.NoError(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}

	for name, in := range map[string][]byte{
		"rsa":        pkcs8(rsaKey),
		"ecdsa":      pkcs8(ecKey),
		"public pem": edPubPEM,
		"not pem":    []byte("hello"),
		"pkcs1":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}),
	} {
		_, err := DecodePrivateKeyPEM(in)
		require.Error(t, err, name)
		if name == "rsa" || name == "ecdsa" {
			require.Contains(t, err.Error(), "not an ed25519 key")
		}
	}
	for name, in := range map[string][]byte{
		"rsa":         pkix(&rsaKey.PublicKey),
		"ecdsa":       pkix(&ecKey.PublicKey),
		"private pem": edPrivPEM,
		"not pem":     []byte("hello"),
	} {
		_, err := DecodePublicKeyPEM(in)
		require.Error(t, err, name)
		if name == "rsa" || name == "ecdsa" {
			require.Contains(t, err.Error(), "not an ed25519 key")
		}
		_, err = ParseTrustedKeys(append(bytes.Clone(edPubPEM), in...))
		if name == "not pem" {
			require.NoError(t, err, "text between blocks is ignored")
		} else {
			require.Error(t, err, name)
			require.Contains(t, err.Error(), "block 2")
		}
	}
	_, err = ParseTrustedKeys([]byte("no keys here"))
	require.Error(t, err)
}

func TestVerifyArtifact(t *testing.T) {
	m := testManifest()
	require.NoError(t, VerifyArtifact(bytes.NewReader(testImage), m))

	flipped := bytes.Clone(testImage)
	flipped[len(flipped)/2] ^= 1
	cases := map[string][]byte{
		"flipped byte": flipped,
		"truncated":    testImage[:len(testImage)-1],
		"empty":        nil,
		"one more":     append(bytes.Clone(testImage), '!'),
	}
	for name, in := range cases {
		err := VerifyArtifact(bytes.NewReader(in), m)
		require.ErrorIs(t, err, ErrArtifactMismatch, name)
		require.Contains(t, err.Error(), m.Artifact.Name, name)
	}

	// Never reads past Size+1 bytes, however long the stream.
	cr := &countingReader{r: io.MultiReader(bytes.NewReader(testImage), endless{})}
	require.ErrorIs(t, VerifyArtifact(cr, m), ErrArtifactMismatch)
	require.LessOrEqual(t, cr.n, m.Artifact.Size+1)

	// A read error is not a mismatch.
	readErr := errors.New("connection reset")
	err := VerifyArtifact(io.MultiReader(bytes.NewReader(testImage[:5]), errReader{readErr}), m)
	require.ErrorIs(t, err, readErr)
	require.NotErrorIs(t, err, ErrArtifactMismatch)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestSignRefusesInvalidManifest(t *testing.T) {
	_, priv := testKey(1)
	for name, f := range map[string]func(*Manifest){
		"bad version":   func(m *Manifest) { m.Version = "1.2" },
		"no model":      func(m *Manifest) { m.Model = "" },
		"no name":       func(m *Manifest) { m.Artifact.Name = "" },
		"short sha":     func(m *Manifest) { m.Artifact.SHA256 = "abcd" },
		"upper sha":     func(m *Manifest) { m.Artifact.SHA256 = strings.ToUpper(m.Artifact.SHA256) },
		"negative":      func(m *Manifest) { m.Artifact.Size = -1 },
		"bad min_from":  func(m *Manifest) { m.MinFrom = "x" },
		"no expiry":     func(m *Manifest) { m.Expires = time.Time{} },
		"no created":    func(m *Manifest) { m.Created = time.Time{} },
		"expires first": func(m *Manifest) { m.Expires = m.Created },
	} {
		m := testManifest()
		f(&m)
		_, err := Sign(m, priv)
		require.ErrorIs(t, err, ErrMalformed, name)
	}
	_, err := Sign(testManifest(), ed25519.PrivateKey("short"))
	require.Error(t, err)
}

func TestNewTrustedKeys(t *testing.T) {
	pubA, _ := testKey(1)
	pubB, _ := testKey(2)
	tk, err := NewTrustedKeys(pubA, pubB, pubA)
	require.NoError(t, err)
	require.Equal(t, 2, tk.Len(), "the same key twice is one key")
	ids := tk.IDs()
	require.ElementsMatch(t, []string{KeyID(pubA), KeyID(pubB)}, ids)
	require.IsNonDecreasing(t, ids)

	_, err = NewTrustedKeys(ed25519.PublicKey("short"))
	require.Error(t, err)
	require.Equal(t, 0, TrustedKeys{}.Len())
	_, ok := TrustedKeys{}.Key(KeyID(pubA))
	require.False(t, ok)
}
