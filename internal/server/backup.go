package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/millwright/millwright/buildinfo"
	"github.com/millwright/millwright/internal/backup"
	"github.com/millwright/millwright/internal/datadir"
	"github.com/millwright/millwright/internal/pki"
	"github.com/millwright/millwright/internal/registry"
)

// backupTmpPrefix names the scratch directories of backups in progress inside the data
// directory (the TSDB snapshot hard-links blocks, so it must be on the same file system). New
// removes those a crash left.
const backupTmpPrefix = ".backup-"

// Paths in a backup outside the data directory's own layout.
const (
	// BackupOperatorCADir holds copies of --ca-cert and --ca-key, when the server uses an
	// operator's CA: ca-cert.pem and ca-key.pem.
	BackupOperatorCADir = "operator-ca"
	// BackupConfigDir holds the configuration file the server was started with, if any.
	BackupConfigDir = "config"
)

// Backup writes an archive of the server's data (package backup) to w while the server runs:
// the CA and server keys, the admin token, a SQLite online copy of the registry, a snapshot of
// the telemetry store, the event log's flushed lines, the firmware archive, the operator CA
// files and the configuration file. With PostgreSQL the registry is left out (pg_dump backs
// it up) and the manifest says so. It returns the manifest, the archive's last entry.
func (s *Server) Backup(ctx context.Context, w io.Writer) (_ backup.Manifest, err error) {
	dir := s.opts.DataDir
	tmp, err := os.MkdirTemp(dir, backupTmpPrefix)
	if err != nil {
		return backup.Manifest{}, fmt.Errorf("back up: %w", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(tmp)) }()
	m := backup.Manifest{Created: s.clk.Now().UTC(), Version: buildinfo.Get().Version, Format: datadir.Format, Registry: s.registry.Backend()}
	aw := backup.NewWriter(w)

	for _, name := range []string{datadir.StampFile, pki.CAFile, pki.CAKeyFile, pki.ServerCertFile, pki.ServerKeyFile, AdminTokenFile} {
		err := aw.AddFile(name, filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) && name == pki.CAKeyFile {
			continue // an operator's CA: its key is not in the data directory
		}
		if err != nil {
			return m, err
		}
	}
	if s.opts.CACert != "" {
		for name, src := range map[string]string{"ca-cert.pem": s.opts.CACert, "ca-key.pem": s.opts.CAKey} {
			if err := aw.AddFile(BackupOperatorCADir+"/"+name, src); err != nil {
				return m, err
			}
		}
	}
	if s.opts.ConfigFile != "" {
		if err := aw.AddFile(BackupConfigDir+"/"+filepath.Base(s.opts.ConfigFile), s.opts.ConfigFile); err != nil {
			return m, err
		}
	}
	if err := ctx.Err(); err != nil {
		return m, err
	}

	switch err := s.registry.CopyTo(ctx, filepath.Join(tmp, registry.SQLiteFile)); {
	case errors.Is(err, registry.ErrNotSQLite):
	case err != nil:
		return m, err
	default:
		if err := aw.AddFile(registry.SQLiteFile, filepath.Join(tmp, registry.SQLiteFile)); err != nil {
			return m, err
		}
	}

	snap := filepath.Join(tmp, "tsdb")
	if err := s.store.Snapshot(ctx, snap); err != nil {
		return m, err
	}
	if err := aw.AddTree("tsdb", snap, nil); err != nil {
		return m, err
	}
	if err := ctx.Err(); err != nil {
		return m, err
	}

	err = s.events.Backup(func(name string, size int64, r io.Reader) error {
		return aw.Add("events/"+name, 0o600, size, m.Created, r)
	})
	if err != nil {
		return m, err
	}

	if err := aw.AddTree("firmware", filepath.Join(dir, "firmware"), func(rel string) bool { return rel == "tmp" }); err != nil && !errors.Is(err, os.ErrNotExist) {
		return m, err
	}
	return aw.Close(m)
}

// removeBackupLeftovers removes the scratch directories of backups a crash interrupted.
func removeBackupLeftovers(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read data directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), backupTmpPrefix) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// backupFor is the API's backup: the archive, then an audit entry naming who fetched it.
func (s *Server) backupFor(ctx context.Context, actor, remote string, w io.Writer) error {
	m, err := s.Backup(ctx, w)
	if err != nil {
		return err
	}
	detail := fmt.Sprintf("%d files, %d bytes, registry %s", m.Files, m.Bytes, m.Registry)
	s.log.Info("backup made", "by", actor, "files", m.Files, "bytes", m.Bytes)
	if err := s.registry.Audit(ctx, actor, registry.ActionServerBackup, "server", detail, remote); err != nil {
		// The archive is whole and sent; the audit log misses it.
		s.log.Error("audit backup", "error", err)
	}
	return nil
}
