// Package backup is the archive of a server's data directory: a gzip-compressed tar whose
// paths are those of the data directory (ca.pem, registry.db, tsdb/<block>/…,
// events/<seq>.jsonl, …), so that restoring is unpacking into an empty directory. The server
// writes it from consistent copies while it runs (internal/server Backup: a TSDB snapshot, a
// SQLite online copy, the event log's flushed lines); `millwright backup` fetches it and
// `millwright restore` unpacks it. The manifest, backup.json, is the archive's last entry, so
// an archive cut short anywhere lacks it and is refused.
package backup

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// ManifestFile is the manifest's path in the archive, its last entry.
const ManifestFile = "backup.json"

// Manifest describes a backup.
type Manifest struct {
	// Created is when the server began the backup.
	Created time.Time `json:"created"`
	// Version is the Millwright version that made it.
	Version string `json:"version"`
	// Format is the data directory format of the archive's files (internal/datadir).
	Format int `json:"format"`
	// Registry is "sqlite" when registry.db is in the archive, "postgres" when the registry
	// lives in PostgreSQL and must be backed up with pg_dump.
	Registry string `json:"registry"`
	// Files is how many files the archive holds, the manifest aside; Bytes their size.
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

// MaxEntryBytes bounds one file's size when restoring: 64 GiB, far above any TSDB chunk
// segment (512 MiB) or firmware image the server keeps. A bigger entry means the archive is
// not one of ours.
const MaxEntryBytes = 64 << 30

// Errors of reading an archive.
var (
	// ErrNotEmpty means the directory to restore into holds files.
	ErrNotEmpty = errors.New("restore directory not empty")
	// ErrIncomplete means the archive ends without its manifest: it was cut short.
	ErrIncomplete = errors.New("backup archive incomplete: no manifest at its end")
	// ErrUnsafe means an entry's path or type has no place in a data directory.
	ErrUnsafe = errors.New("backup archive entry refused")
)

// Writer writes an archive.
type Writer struct {
	gz *gzip.Writer
	tw *tar.Writer
	m  Manifest
}

// NewWriter starts an archive on w.
func NewWriter(w io.Writer) *Writer {
	gz := gzip.NewWriter(w)
	return &Writer{gz: gz, tw: tar.NewWriter(gz)}
}

// Add writes one file of size bytes, read from r, at name (slash-separated, relative).
func (w *Writer) Add(name string, mode fs.FileMode, size int64, mtime time.Time, r io.Reader) error {
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(mode.Perm()), Size: size, ModTime: mtime}); err != nil {
		return fmt.Errorf("write backup entry %s: %w", name, err)
	}
	n, err := io.Copy(w.tw, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("%d bytes of %d", n, size)
	}
	if err != nil {
		return fmt.Errorf("write backup entry %s: %w", name, err)
	}
	w.m.Files++
	w.m.Bytes += size
	return nil
}

// AddFile writes the file at src as name.
func (w *Writer) AddFile(name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("back up %s: %w", src, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("back up %s: %w", src, err)
	}
	return w.Add(name, st.Mode(), st.Size(), st.ModTime(), f)
}

// AddTree writes every regular file under the directory src, below the archive directory
// name, skipping the subdirectories skip returns true for (nil: none).
func (w *Writer) AddTree(name, src string, skip func(rel string) bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("back up %s: %w", p, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel != "." && skip != nil && skip(filepath.ToSlash(rel)) {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return w.AddFile(path.Join(name, filepath.ToSlash(rel)), p)
	})
}

// Close writes the manifest, m with the count of files and bytes filled in, and ends the
// archive. An archive not closed has no manifest and is refused when restored.
func (w *Writer) Close(m Manifest) (Manifest, error) {
	m.Files, m.Bytes = w.m.Files, w.m.Bytes
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	b = append(b, '\n')
	if err := w.Add(ManifestFile, 0o644, int64(len(b)), m.Created, strings.NewReader(string(b))); err != nil {
		return m, err
	}
	return m, errors.Join(w.tw.Close(), w.gz.Close())
}

// Read checks the archive in r from start to end without writing anything: every entry's
// path and type, and the manifest at the end. It returns the manifest.
func Read(r io.Reader) (Manifest, error) {
	return walk(r, func(string, *tar.Header, io.Reader) error { return nil })
}

// Restore unpacks the archive in r into dir, which must be empty or absent, and returns its
// manifest. Directories are made with mode 0700 and files get the archive's modes. On
// failure, what was unpacked stays: the caller removes dir.
func Restore(r io.Reader, dir string) (Manifest, error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return Manifest{}, fmt.Errorf("%w: %s holds %d entries; restore into a new or empty directory", ErrNotEmpty, dir, len(entries))
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("restore into %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Manifest{}, fmt.Errorf("restore into %s: %w", dir, err)
	}
	return walk(r, func(name string, h *tar.Header, body io.Reader) error {
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(h.Mode).Perm()|0o600)
		if err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		_, err = io.Copy(f, body)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", name, err)
		}
		return os.Chtimes(dst, h.ModTime, h.ModTime)
	})
}

// walk calls fn for each file of the archive but the manifest, after checking its name and
// type, and returns the manifest, which must be the last entry.
func walk(r io.Reader, fn func(name string, h *tar.Header, body io.Reader) error) (Manifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return Manifest{}, fmt.Errorf("read backup archive: %w", err)
	}
	tr := tar.NewReader(gz)
	var m *Manifest
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return Manifest{}, fmt.Errorf("%w: %w", ErrIncomplete, err)
			}
			return Manifest{}, fmt.Errorf("read backup archive: %w", err)
		}
		if m != nil {
			return Manifest{}, fmt.Errorf("%w: %s after the manifest", ErrUnsafe, h.Name)
		}
		name, err := checkEntry(h)
		if err != nil {
			return Manifest{}, err
		}
		if name == ManifestFile {
			var mm Manifest
			if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&mm); err != nil {
				return Manifest{}, fmt.Errorf("read backup manifest: %w", err)
			}
			m = &mm
			continue
		}
		if err := fn(name, h, tr); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return Manifest{}, fmt.Errorf("%w: %w", ErrIncomplete, err)
			}
			return Manifest{}, err
		}
	}
	if err := gz.Close(); err != nil {
		return Manifest{}, fmt.Errorf("read backup archive: %w", err)
	}
	if m == nil {
		return Manifest{}, ErrIncomplete
	}
	return *m, nil
}

// checkEntry admits regular files at clean relative paths inside the directory, of a bounded
// size, and returns the path.
func checkEntry(h *tar.Header) (string, error) {
	name := h.Name
	if h.Typeflag != tar.TypeReg {
		return "", fmt.Errorf("%w: %s is not a regular file (type %q)", ErrUnsafe, name, h.Typeflag)
	}
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, `\`) {
		return "", fmt.Errorf("%w: path %q is not a clean path inside the data directory", ErrUnsafe, name)
	}
	if h.Size < 0 || h.Size > MaxEntryBytes {
		return "", fmt.Errorf("%w: %s is %d bytes, more than %d", ErrUnsafe, name, h.Size, int64(MaxEntryBytes))
	}
	return name, nil
}
