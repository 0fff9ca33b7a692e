package millwrightcli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/millwright/millwright/internal/api"
	"github.com/millwright/millwright/internal/backup"
	"github.com/millwright/millwright/internal/registry"
)

// newBackupCmd is millwright backup: the running server's backup archive, fetched through
// the API and checked whole before it is written in place.
func newBackupCmd() *cobra.Command {
	var (
		cf  clientFlags
		out string
	)
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Back up a running server's data into a tar.gz (restore it with millwright restore)",
		Long: `Back up a running server's data into FILE, a tar.gz: the CA and server keys, the
admin token, the registry (SQLite online copy), a snapshot of the telemetry store, the event
log, the firmware archive, the operator CA files and the configuration file. The server keeps
serving meanwhile. Needs an admin token.

With a PostgreSQL registry the registry is not in the archive: back it up with pg_dump.

The archive is checked from start to end before it is renamed to FILE; FILE must not exist.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("give --out FILE")}
			}
			if _, err := os.Lstat(out); err == nil {
				return usageError{fmt.Errorf("--out %s exists: give a new file", out)}
			}
			c, err := newAPIClient(cf.server, cf.dataDir, cf.caFile, cf.tokenFile, "--token-file")
			if err != nil {
				return err
			}
			m, err := fetchBackup(cmd, c, out)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup written to %s: %d files, %d bytes, by Millwright %s at %s\n",
				out, m.Files, m.Bytes, m.Version, m.Created.Format(time.RFC3339))
			if m.Registry == registry.BackendPostgres {
				fmt.Fprintln(cmd.ErrOrStderr(), "note: the registry is in PostgreSQL and is not in this backup: back it up with pg_dump (docs/operations.md \"Backing up and restoring\")")
			}
			return nil
		},
	}
	cf.addConnection(cmd, "")
	cmd.Flags().StringVar(&out, "out", "", "file to write the backup to (tar.gz; must not exist)")
	return cmd
}

// fetchBackup streams POST /api/v1/backup into a temporary file beside out, checking the
// archive as it arrives, and renames it to out once whole.
func fetchBackup(cmd *cobra.Command, c *apiClient, out string) (_ backup.Manifest, err error) {
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, c.base+"/api/v1/backup", nil)
	if err != nil {
		return backup.Manifest{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	hc := *c.http
	hc.Timeout = api.DefaultBackupTimeout + time.Minute
	resp, err := hc.Do(req)
	if err != nil {
		return backup.Manifest{}, fmt.Errorf("POST /api/v1/backup: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// An error answer is the API's JSON envelope.
		return backup.Manifest{}, c.do(&http.Client{Transport: responseTransport{resp}}, req, nil)
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".partial-")
	if err != nil {
		return backup.Manifest{}, fmt.Errorf("write backup: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	m, err := backup.Read(io.TeeReader(resp.Body, f))
	if err != nil {
		return m, fmt.Errorf("backup from the server: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		return m, fmt.Errorf("backup from the server: %w", err)
	}
	if err := f.Sync(); err != nil {
		return m, fmt.Errorf("write backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return m, fmt.Errorf("write backup: %w", err)
	}
	if err := os.Link(f.Name(), out); err != nil { // never replaces a file made meanwhile
		return m, fmt.Errorf("write backup: %w", err)
	}
	return m, os.Remove(f.Name())
}

// responseTransport answers any request with a response already received.
type responseTransport struct{ resp *http.Response }

func (t responseTransport) RoundTrip(*http.Request) (*http.Response, error) { return t.resp, nil }
