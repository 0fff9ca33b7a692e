package firmware

import (
	"errors"
	"testing"
	"time"
)

// FuzzDecodeSignedManifest: decoding and verifying any input never panics,
// and every refusal is one of the package's sentinel errors.
func FuzzDecodeSignedManifest(f *testing.F) {
	pub, priv := testKey(1)
	trusted, err := NewTrustedKeys(pub)
	if err != nil {
		f.Fatal(err)
	}
	sm, err := Sign(testManifest(), priv)
	if err != nil {
		f.Fatal(err)
	}
	good, err := sm.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"manifest":"e30=","signatures":[{"key_id":"0123456789abcdef","sig":"AAAA"}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The input as manifest bytes: signatures cannot be forged by a
		// fuzzer, so reach the parser and the policy directly too.
		if m, err := ParseManifest(b); err == nil {
			_ = m.Allows("gw-1", "1.1.0", t0)
		} else if !errors.Is(err, ErrMalformed) {
			t.Fatalf("parse error does not wrap ErrMalformed: %v", err)
		}
		sm, err := DecodeSignedManifest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("decode error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if _, err := sm.Encode(); err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		for _, running := range []string{"1.1.0", "1.2.0", "2.0.0", "bad"} {
			m, err := Verify(sm, trusted, "gw-1", running, t0)
			if err == nil {
				if m.Validate() != nil {
					t.Fatalf("verified an invalid manifest %+v", m)
				}
				continue
			}
			known := false
			for _, e := range allErrs {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("verify error is no sentinel: %v", err)
			}
		}
		// Also against an empty trust list and a far-future clock.
		_, _ = Verify(sm, TrustedKeys{}, "gw-1", "1.1.0", time.Unix(1<<40, 0))
	})
}
