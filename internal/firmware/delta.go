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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/millwright/millwright/protocol"
)

// Delta artifacts (issue 15, scope 7): a device that runs an artifact the archive holds asks
// for the target as a delta from it — the target compressed with zstd, the artifact it runs
// being the raw dictionary (the encoder's initial history), so what both have in common
// costs a few bytes. Deltas are made on first request, one at a time, and kept on disk,
// content-addressed by the pair, so that later devices and resumed downloads (Range,
// If-Range) get the same bytes.

// MaxDeltaBytes bounds a delta's base and target together: both are read into memory to make
// it, with a zstd window of the next power of two above their sum. Larger pairs get no delta
// (the device downloads the whole artifact).
const MaxDeltaBytes = 256 << 20

// DeltaLevel is the zstd level deltas are made at: "best", whose match finder reaches across
// a dictionary of many megabytes ("better" saved 64 % of a synthetic 8 MiB pair that "best"
// saves 99.7 % of; docs/benchmarks.md, "Delta artifacts").
const DeltaLevel = zstd.SpeedBestCompression

// ErrNoDelta is returned when no delta is made for a pair: the base is not in the archive, the
// pair is too large, or the delta would be no smaller than the target compressed alone.
var ErrNoDelta = errors.New("no delta")

// deltas makes and keeps deltas: at <dir>/delta/<target>/<base>.<sha256 of the delta>.
type deltas struct {
	make sync.Mutex // one delta is made at a time (CPU and memory)
	// made counts deltas made; served, device requests answered with a delta; none, those
	// answered 404 for want of one.
	made, served, none atomic.Uint64
}

// DeltaStats counts deltas made, device requests answered with a delta, and those answered
// that there is none (the device then downloads the whole artifact).
func (s *Store) DeltaStats() (made, served, none uint64) {
	return s.deltas.made.Load(), s.deltas.served.Load(), s.deltas.none.Load()
}

func (s *Store) deltaDir(target string) string { return filepath.Join(s.dir, "delta", target) }

// cachedDelta is the kept delta of target from base, if there is one.
func (s *Store) cachedDelta(target, base string) (path, sum string, ok bool) {
	files, _ := filepath.Glob(filepath.Join(s.deltaDir(target), base+".*"))
	for _, f := range files {
		name := strings.TrimPrefix(filepath.Base(f), base+".")
		if ValidSHA256(name) {
			return f, name, true
		}
	}
	return "", "", false
}

// Delta returns the file of the delta of target from base, making it if it is not kept yet,
// and the delta's SHA-256. ErrNotFound: the store does not hold target; ErrNoDelta: no delta
// for the pair (base not held, too large, not worth it).
func (s *Store) Delta(target, base string) (path, sum string, err error) {
	if !ValidSHA256(target) || !ValidSHA256(base) {
		return "", "", fmt.Errorf("delta %q from %q: %w", target, base, ErrNotFound)
	}
	if path, sum, ok := s.cachedDelta(target, base); ok {
		return path, sum, nil
	}
	s.deltas.make.Lock()
	defer s.deltas.make.Unlock()
	if path, sum, ok := s.cachedDelta(target, base); ok {
		return path, sum, nil
	}
	tfi, err := os.Stat(s.path(target))
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("artifact %s: %w", target, ErrNotFound)
	}
	if err != nil {
		return "", "", err
	}
	bfi, err := os.Stat(s.path(base))
	if errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("%w from %s: the archive does not hold it", ErrNoDelta, base)
	}
	if err != nil {
		return "", "", err
	}
	if n := tfi.Size() + bfi.Size(); n > MaxDeltaBytes {
		return "", "", fmt.Errorf("%w from %s: base and target are %d bytes together, more than %d", ErrNoDelta, base, n, MaxDeltaBytes)
	}
	baseB, err := os.ReadFile(s.path(base))
	if err != nil {
		return "", "", err
	}
	targetB, err := os.ReadFile(s.path(target))
	if err != nil {
		return "", "", err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "delta-*")
	if err != nil {
		return "", "", err
	}
	defer func() {
		if f != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := protocol.EncodeDelta(cw, baseB, targetB, base, DeltaLevel); err != nil {
		return "", "", err
	}
	if cw.n >= int64(len(targetB)) {
		return "", "", fmt.Errorf("%w from %s: the delta (%d bytes) is no smaller than the target (%d bytes)", ErrNoDelta, base, cw.n, len(targetB))
	}
	if err := f.Sync(); err != nil {
		return "", "", err
	}
	if err := f.Close(); err != nil {
		return "", "", err
	}
	sum = hex.EncodeToString(h.Sum(nil))
	dst := filepath.Join(s.deltaDir(target), base+"."+sum)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", "", err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return "", "", err
	}
	f = nil
	s.deltas.made.Add(1)
	return dst, sum, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// deleteDeltas removes the deltas to and from sum.
func (s *Store) deleteDeltas(sum string) error {
	errs := []error{os.RemoveAll(s.deltaDir(sum))}
	from, _ := filepath.Glob(filepath.Join(s.dir, "delta", "*", sum+".*"))
	for _, f := range from {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ServeDevice serves a device's artifact request: the artifact sum (Serve), or, with
// protocol.DeltaQuery, its delta from the artifact the device runs — 404 when there is none, and the
// device downloads the artifact. A delta is served like an artifact: Range, If-Range, its
// own ETag ("<target>.<base>.<sha256 of the delta>").
func (s *Store) ServeDevice(w http.ResponseWriter, r *http.Request, sum string) {
	base := r.URL.Query().Get(protocol.DeltaQuery)
	if base == "" {
		s.Serve(w, r, sum)
		return
	}
	path, dsum, err := s.Delta(sum, base)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoDelta) {
			status = http.StatusNotFound
			s.deltas.none.Add(1)
		}
		http.Error(w, err.Error(), status)
		return
	}
	f, err := os.Open(path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	if r.Method != http.MethodHead {
		s.deltas.served.Add(1)
	}
	w.Header().Set("ETag", `"`+sum+"."+base+"."+dsum+`"`)
	w.Header().Set("Content-Type", "application/zstd")
	w.Header().Set("Cache-Control", "private, max-age=31536000, immutable")
	http.ServeContent(w, r, "", time.Time{}, f)
}
