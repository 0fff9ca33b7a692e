package firmware

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// VerifyArtifact streams r and checks that it holds exactly m.Artifact.Size
// bytes with SHA-256 m.Artifact.SHA256. It never reads more than Size+1
// bytes. A mismatch wraps ErrArtifactMismatch; a read error is returned
// wrapped as it is.
func VerifyArtifact(r io.Reader, m Manifest) error {
	want := m.Artifact
	if want.Size < 0 {
		return fmt.Errorf("verify artifact %s: %w: size %d is negative", want.Name, ErrMalformed, want.Size)
	}
	h := sha256.New()
	limit := want.Size + 1
	if limit < 0 { // Size is math.MaxInt64
		limit = want.Size
	}
	n, err := io.Copy(h, io.LimitReader(r, limit))
	if err != nil {
		return fmt.Errorf("verify artifact %s: read: %w", want.Name, err)
	}
	if n > want.Size {
		return fmt.Errorf("verify artifact %s: %w: longer than %d bytes", want.Name, ErrArtifactMismatch, want.Size)
	}
	if n < want.Size {
		return fmt.Errorf("verify artifact %s: %w: %d bytes, want %d", want.Name, ErrArtifactMismatch, n, want.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.SHA256 {
		return fmt.Errorf("verify artifact %s: %w: sha256 %s, want %s", want.Name, ErrArtifactMismatch, got, want.SHA256)
	}
	return nil
}
