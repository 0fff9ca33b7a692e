// Package firmware keeps the firmware archive's artifacts: content-addressed files on disk,
// named by their SHA-256, written once, served with HTTP ranges so that a download cut
// halfway resumes.
package firmware

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/millwright/millwright/internal/optcheck"
)

// ErrTooLarge is returned by Put for an artifact over the store's bound.
var ErrTooLarge = errors.New("artifact larger than the bound")

// ErrNotFound is returned for an artifact the store does not hold.
var ErrNotFound = errors.New("no such artifact")

// DefaultMaxArtifactBytes bounds one artifact: 2 GiB, a whole root file system image.
const DefaultMaxArtifactBytes = 2 << 30

// Store is a directory of artifacts, each at <dir>/<first two hex digits>/<sha256>, and of the
// deltas between them made so far, at <dir>/delta/<target>/<base>.<sha256 of the delta>.
type Store struct {
	dir    string
	max    int64
	deltas deltas
}

// Open opens (or creates) the store in dir; artifacts of more than max bytes are refused (0:
// DefaultMaxArtifactBytes). Files a crash left half-written are removed.
func Open(dir string, max int64) (*Store, error) {
	if max <= 0 {
		max = DefaultMaxArtifactBytes
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("firmware store: %w", err)
	}
	tmp, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		return nil, fmt.Errorf("firmware store: %w", err)
	}
	for _, e := range tmp {
		_ = os.Remove(filepath.Join(dir, "tmp", e.Name()))
	}
	return &Store{dir: dir, max: max}, nil
}

var hexSHA = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSHA256 reports whether s is a SHA-256 in lowercase hex.
func ValidSHA256(s string) bool { return hexSHA.MatchString(s) }

func (s *Store) path(sum string) string { return filepath.Join(s.dir, sum[:2], sum) }

// Put stores what r holds and returns its SHA-256 (lowercase hex) and size. The file is
// written under a temporary name, synced, and renamed into place, so a crash leaves either the
// whole artifact or none; putting an artifact the store holds already keeps the one it has.
func (s *Store) Put(r io.Reader) (sum string, size int64, err error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("store artifact: %w", err)
	}
	defer func() {
		if f != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(r, s.max+1))
	if err != nil {
		return "", 0, fmt.Errorf("store artifact: %w", err)
	}
	if size > s.max {
		return "", 0, fmt.Errorf("%w (%d bytes)", ErrTooLarge, s.max)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("store artifact: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", 0, fmt.Errorf("store artifact: %w", err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	dst := s.path(sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", 0, fmt.Errorf("store artifact: %w", err)
	}
	if _, err := os.Stat(dst); err == nil {
		_ = os.Remove(f.Name())
		f = nil
		return sum, size, nil
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return "", 0, fmt.Errorf("store artifact: %w", err)
	}
	f = nil
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return sum, size, nil
}

// Open opens the artifact sum for reading.
func (s *Store) Open(sum string) (*os.File, error) {
	if !ValidSHA256(sum) {
		return nil, fmt.Errorf("artifact %q: %w", sum, ErrNotFound)
	}
	f, err := os.Open(s.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("artifact %s: %w", sum, ErrNotFound)
	}
	return f, err
}

// Delete removes the artifact sum and the deltas to and from it; removing one the store does
// not hold is no error.
func (s *Store) Delete(sum string) error {
	if !ValidSHA256(sum) {
		return fmt.Errorf("artifact %q: %w", sum, ErrNotFound)
	}
	if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete artifact %s: %w", sum, err)
	}
	if err := s.deleteDeltas(sum); err != nil {
		return fmt.Errorf("delete the deltas of artifact %s: %w", sum, err)
	}
	return nil
}

// Serve writes the artifact sum to w as the answer to r: with Range, If-Range and
// If-None-Match (the ETag is the SHA-256), so a download cut halfway resumes where it stopped
// and a device that has the artifact already gets 304.
func (s *Store) Serve(w http.ResponseWriter, r *http.Request, sum string) {
	f, err := s.Open(sum)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, ErrNotFound) {
			status = http.StatusNotFound
		}
		http.Error(w, err.Error(), status)
		return
	}
	defer f.Close()
	w.Header().Set("ETag", `"`+sum+`"`)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	// Content-addressed: the content never changes, so its modification time says nothing.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// Options bound the firmware archive.
type Options struct {
	// MaxArtifactBytes bounds one uploaded artifact. Default 2 GiB.
	MaxArtifactBytes int64 `yaml:"max_artifact_bytes"`
	// UploadTimeout bounds one upload's body, counted once the operator is authorized.
	// Default 30 min: 2 GiB at 1.2 MB/s.
	UploadTimeout time.Duration `yaml:"upload_timeout"`
	// DownloadTimeout bounds one download of an image, by a device or an operator, counted
	// once it is authorized; a download cut by it resumes with Range. Default 30 min.
	DownloadTimeout time.Duration `yaml:"download_timeout"`
	// MaxDownloads bounds the artifact downloads served to devices at once; beyond, a device
	// is answered 503 with Retry-After and resumes later. Default 256.
	MaxDownloads int `yaml:"max_downloads"`
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options {
	return Options{MaxArtifactBytes: DefaultMaxArtifactBytes, UploadTimeout: 30 * time.Minute, DownloadTimeout: 30 * time.Minute,
		MaxDownloads: DefaultMaxDownloads}
}

// Validate refuses a bound or a timeout of zero or less. The error is an *optcheck.Error keyed
// by the option's YAML key.
func (o Options) Validate() error {
	return optcheck.First(
		optcheck.Positive("max_artifact_bytes", o.MaxArtifactBytes),
		optcheck.Positive("upload_timeout", o.UploadTimeout),
		optcheck.Positive("download_timeout", o.DownloadTimeout),
		optcheck.Positive("max_downloads", o.MaxDownloads),
	)
}
