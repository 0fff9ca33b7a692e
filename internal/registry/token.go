package registry

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// Token prefixes. A token is the prefix and 32 random bytes in unpadded base64url (43
// characters). The prefix makes a leaked token recognisable to secret scanners and tells the
// two kinds apart.
const (
	EnrollmentTokenPrefix = "mwe_"
	OperatorTokenPrefix   = "mwo_"
	tokenRandomBytes      = 32
	// tokenIDLen is the length of a token ID: the first hex digits of the token's SHA-256.
	tokenIDLen = 12
)

var tokenBodyLen = base64.RawURLEncoding.EncodedLen(tokenRandomBytes)

// newToken returns a fresh token with the given prefix.
func newToken(prefix string) string {
	b := make([]byte, tokenRandomBytes)
	_, _ = rand.Read(b) // never fails; on failure crypto/rand crashes the program
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// wellFormed reports whether tok looks like a token with prefix, before any database look-up.
func wellFormed(tok, prefix string) bool {
	body, ok := strings.CutPrefix(tok, prefix)
	if !ok || len(body) != tokenBodyLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(body)
	return err == nil
}

// hashToken is what is stored for a token: the hex SHA-256 of the whole token string. The
// token carries 256 random bits, so a fast unsalted hash is enough: there is nothing to
// brute-force.
func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// EnrollmentTokenID returns the public ID of an enrollment token: the first 12 hex digits of
// its SHA-256. The ID names the token in listings and in the audit log ("enroll:<ID>") without
// revealing it.
func EnrollmentTokenID(token string) string { return hashToken(token)[:tokenIDLen] }

// randomHex returns n random lowercase hex digits (n even).
func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
