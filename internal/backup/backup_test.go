package backup

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// archive writes the entries of hdrs (with their bodies) into a tar.gz, without a manifest.
func archive(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, h := range entries {
		body := strings.Repeat("x", int(h.Size))
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		require.NoError(t, tw.WriteHeader(&h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write([]byte(body))
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	require.NoError(t, gz.Close())
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(src, "a", "skip"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(src, "a", "one"), []byte("1"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(src, "a", "skip", "two"), []byte("22"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "key"), []byte("secret"), 0o600))

	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.AddFile("key", filepath.Join(src, "key")))
	require.NoError(t, w.AddTree("tree", filepath.Join(src, "a"), func(rel string) bool { return rel == "skip" }))
	created := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	m, err := w.Close(Manifest{Created: created, Version: "1.2.3", Format: 1, Registry: "sqlite"})
	require.NoError(t, err)
	require.Equal(t, Manifest{Created: created, Version: "1.2.3", Format: 1, Registry: "sqlite", Files: 2, Bytes: 7}, m)

	got, err := Read(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, m, got)

	dst := filepath.Join(t.TempDir(), "restored")
	got, err = Restore(bytes.NewReader(buf.Bytes()), dst)
	require.NoError(t, err)
	require.Equal(t, m, got)
	b, err := os.ReadFile(filepath.Join(dst, "key"))
	require.NoError(t, err)
	require.Equal(t, "secret", string(b))
	st, err := os.Stat(filepath.Join(dst, "key"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	b, err = os.ReadFile(filepath.Join(dst, "tree", "one"))
	require.NoError(t, err)
	require.Equal(t, "1", string(b))
	require.NoFileExists(t, filepath.Join(dst, "tree", "skip", "two"))
	require.NoFileExists(t, filepath.Join(dst, ManifestFile), "the manifest is not unpacked")

	_, err = Restore(bytes.NewReader(buf.Bytes()), dst)
	require.ErrorIs(t, err, ErrNotEmpty)
}

// TestRefused: entries that have no place in a data directory, and archives cut short.
func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    tar.Header
		want string
	}{
		{"parent", tar.Header{Name: "../escape", Size: 1}, `path "../escape" is not a clean path inside the data directory`},
		{"absolute", tar.Header{Name: "/etc/passwd", Size: 1}, `path "/etc/passwd" is not a clean path`},
		{"unclean", tar.Header{Name: "a/../../b", Size: 1}, `path "a/../../b" is not a clean path`},
		{"symlink", tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, `link is not a regular file`},
		{"directory", tar.Header{Name: "dir/", Typeflag: tar.TypeDir}, `dir/ is not a regular file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "d")
			_, err := Restore(bytes.NewReader(archive(t, tc.h)), dst)
			require.ErrorIs(t, err, ErrUnsafe)
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, err := Read(bytes.NewReader(archive(t, tar.Header{Name: "a", Size: 3})))
	require.ErrorIs(t, err, ErrIncomplete, "no manifest")

	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Add("big", 0o600, 1<<16, time.Now(), bytes.NewReader(make([]byte, 1<<16))))
	_, err = w.Close(Manifest{})
	require.NoError(t, err)
	for _, cut := range []int{10, buf.Len() / 2, buf.Len() - 10} {
		_, err := Read(bytes.NewReader(buf.Bytes()[:cut]))
		require.Error(t, err, "cut at %d of %d", cut, buf.Len())
	}
}

// TestAddShortReader: a file that yields fewer bytes than announced fails the archive.
func TestAddShortReader(t *testing.T) {
	w := NewWriter(&bytes.Buffer{})
	err := w.Add("short", 0o600, 10, time.Now(), strings.NewReader("abc"))
	require.ErrorContains(t, err, "write backup entry short")
}
