package millwrightcli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/buildinfo"
	"github.com/millwright/millwright/internal/backup"
	"github.com/millwright/millwright/internal/datadir"
	"github.com/millwright/millwright/internal/registry"
	"github.com/millwright/millwright/internal/server"
)

// newRestoreCmd is millwright restore: a backup unpacked into a new data directory.
func newRestoreCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "restore FILE --data DIR",
		Short: "Restore a backup (millwright backup) into a new data directory",
		Long: `Restore the backup FILE into DIR, which must be absent or empty, then start a server
with --data DIR (and the --config of the backup's config/ directory, if any). Devices
reconnect with the certificates they have: the CA and the registry are those of the backup.

A server with an operator CA (--ca-cert) finds copies of its files in DIR/operator-ca/.
With a PostgreSQL registry, restore the registry with pg_restore (or psql) from its pg_dump
first; the backup does not hold it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usageError{errors.New("give --data DIR, a new or empty directory")}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("read backup: %w", err)
			}
			defer f.Close()
			_, statErr := os.Stat(dir)
			m, err := backup.Restore(f, dir)
			if err != nil {
				if !errors.Is(err, backup.ErrNotEmpty) {
					err = errors.Join(err, cleanRestore(dir, statErr == nil))
				}
				return err
			}
			if _, err := datadir.Check(dir, buildinfo.Get().Version); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "restored %d files (%d bytes) of the backup made by Millwright %s at %s into %s\n",
				m.Files, m.Bytes, m.Version, m.Created.Format("2006-01-02T15:04:05Z07:00"), dir)
			fmt.Fprintf(out, "start it with: millwright server --data %s\n", dir)
			if _, err := os.Stat(filepath.Join(dir, server.BackupOperatorCADir)); err == nil {
				fmt.Fprintf(out, "with the operator CA: --ca-cert %[1]s/%[2]s/ca-cert.pem --ca-key %[1]s/%[2]s/ca-key.pem\n", dir, server.BackupOperatorCADir)
			}
			if m.Registry == registry.BackendPostgres {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: the registry was in PostgreSQL and is not in the backup: restore it from its pg_dump and start with the same --database")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "data", "", "data directory to restore into (absent or empty)")
	return cmd
}

// cleanRestore removes what a failed restore unpacked: dir itself when the restore made it,
// else its content.
func cleanRestore(dir string, existed bool) error {
	if !existed {
		return os.RemoveAll(dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
	}
	return errors.Join(errs...)
}
