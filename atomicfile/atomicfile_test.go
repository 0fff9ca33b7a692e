package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key.pem")
	require.NoError(t, Write(path, []byte("old"), 0o600))
	require.NoError(t, Write(path, []byte("new"), 0o644))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new", string(b))
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")
}

// TestWriteFailsCleanly: a failed write names the file, keeps the old content and leaves no
// temporary file.
func TestWriteFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cert.pem")
	require.NoError(t, Write(path, []byte("old"), 0o644))
	// A directory where the file should be: the rename fails.
	target := filepath.Join(dir, "sub")
	require.NoError(t, os.Mkdir(target, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(target, "x"), nil, 0o644))
	err := Write(target, []byte("new"), 0o644)
	require.ErrorContains(t, err, target)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "old", string(b))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "cert.pem and sub only")

	require.ErrorContains(t, Write(filepath.Join(dir, "missing", "f"), nil, 0o644), "missing")
}
