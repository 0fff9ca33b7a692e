package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/millwright/millwright/internal/httplimit"
)

// BackupFunc writes the server's backup archive to w, on behalf of actor calling from
// remote (for the audit log).
type BackupFunc func(ctx context.Context, actor, remote string, w io.Writer) error

// DefaultBackupTimeout is how long sending a backup may take when Config.BackupTimeout is
// zero: an hour, 10 GiB at 3 MiB/s.
const DefaultBackupTimeout = time.Hour

// backup answers POST /api/v1/backup with the archive, application/gzip. An error once the
// archive has begun aborts the connection: the client sees an archive cut short, without the
// manifest that ends a whole one.
func backup(f BackupFunc, timeout time.Duration, log *slog.Logger) func(*http.Request) (any, *apiError) {
	if timeout <= 0 {
		timeout = DefaultBackupTimeout
	}
	return func(r *http.Request) (any, *apiError) {
		if f == nil {
			return nil, &apiError{errUnavailable, errors.New("this server makes no backups"), http.StatusServiceUnavailable}
		}
		return rawAnswer(func(w http.ResponseWriter) {
			httplimit.Deadlines(w, 0, timeout)
			w.Header().Set("Content-Type", "application/gzip")
			w.Header().Set("Content-Disposition", `attachment; filename="millwright-backup.tar.gz"`)
			w.WriteHeader(http.StatusOK)
			if err := f(r.Context(), actor(r), r.RemoteAddr, w); err != nil {
				log.Error("backup failed", "error", err)
				panic(http.ErrAbortHandler)
			}
		}), nil
	}
}
