// Package registry is Millwright's device registry: the devices the server knows, their
// certificates, the single-use enrollment tokens that admit new devices, the operators' API
// tokens, and an audit log of every change.
//
// One schema runs on two backends. SQLite (modernc.org/sqlite, pure Go) is embedded and is the
// default: a file registry.db in the server's data directory. PostgreSQL (pgx through its
// database/sql driver) is used when the operator passes a postgres:// URL, for installations that
// already run PostgreSQL or want the registry on another host. [Open] migrates the schema on
// start. Every mutation writes its audit entry in the same transaction as the change itself.
//
// Secrets are never stored: enrollment tokens ("mwe_…") and operator tokens ("mwo_…") are
// returned once in plaintext and kept only as SHA-256 hashes.
//
// The EST enrollment endpoint calls [Registry.Enroll]; the MQTT gateway authorises a connecting
// device with [Registry.Device] and records what it reports with [Registry.ReportFacts]; the CRL
// comes from [Registry.RevokedCertificates]; the API and CLI use the rest.
package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // registers the "sqlite" database/sql driver
)

// Clock tells the registry the time. Every timestamp the registry writes comes from it, so
// tests can expire tokens without waiting. [github.com/millwright/millwright/clock.Clock]
// satisfies it.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Errors returned by the registry. They are wrapped with detail; test with errors.Is.
var (
	// ErrNotFound means the device, certificate, operator or token named does not exist.
	ErrNotFound = errors.New("not found")
	// ErrTokenInvalid means a token is malformed, unknown, or (for operator tokens) revoked.
	ErrTokenInvalid = errors.New("invalid token")
	// ErrTokenUsed means an enrollment token has already admitted a device; tokens are single use.
	ErrTokenUsed = errors.New("token already used")
	// ErrTokenExpired means an enrollment token's lifetime has passed.
	ErrTokenExpired = errors.New("token expired")
	// ErrModelMismatch means an enrollment token is restricted to a hardware model other than
	// the one the device reported. The token stays unused.
	ErrModelMismatch = errors.New("hardware model does not match token")
	// ErrExists means the device, certificate or operator name already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid means an argument failed validation (device ID, tag, status, role, URL, …).
	ErrInvalid = errors.New("invalid argument")
)

// Backend names returned by [Registry.Backend].
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
)

// SQLiteFile is the registry's file name inside the data directory when no URL is given.
const SQLiteFile = "registry.db"

// sqliteBusyTimeout is how long a SQLite writer waits for another process's write lock.
const sqliteBusyTimeout = 5 * time.Second

// Registry is an open device registry. It is safe for concurrent use.
type Registry struct {
	db  *sql.DB
	d   *dialect
	clk Clock
	// wlock serialises write transactions inside this process on SQLite, which allows one
	// writer at a time anyway: waiting here is cheaper and fairer than SQLite's sleeping busy
	// handler. nil on PostgreSQL. Other processes sharing the file wait on the busy timeout.
	wlock chan struct{}
	// deviceByID is Device's query, prepared once: it is the connect-time path, and parsing
	// the statement would otherwise cost as much as running it.
	deviceByID *sql.Stmt
	// The device channel's connect-time queries, prepared once for the same reason.
	openMessages, openMessagesOfKind, storedConfigHash, layerRevision *sql.Stmt

	layersMu sync.Mutex
	layers   *layerSet // the configuration layers as of layersRev, parsed
	layersAt int64
}

// Open opens (creating if needed) the registry and migrates its schema to the current version.
//
// url selects the backend:
//   - "" — SQLite file dataDir/registry.db (dataDir is created with mode 0700);
//   - "sqlite:///abs/path.db", "sqlite:/abs/path.db" or "sqlite:relative.db" — that SQLite file,
//     a relative path being relative to the working directory;
//   - "postgres://…" or "postgresql://…" — PostgreSQL, with any libpq-style URL parameters
//     (sslmode, search_path, …).
//
// SQLite runs in WAL mode with synchronous=FULL, a 5 s busy timeout, foreign keys on and
// immediate (write-locking) transactions. clk nil means the real clock.
func Open(ctx context.Context, url string, dataDir string, clk Clock) (*Registry, error) {
	if clk == nil {
		clk = realClock{}
	}
	var (
		r   *Registry
		err error
	)
	switch {
	case url == "":
		if dataDir == "" {
			return nil, fmt.Errorf("open registry: %w: no database URL and no data directory", ErrInvalid)
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("open registry: %w", err)
		}
		r, err = openSQLite(ctx, filepath.Join(dataDir, SQLiteFile))
	case strings.HasPrefix(url, "sqlite:"):
		var path string
		path, err = sqlitePath(url)
		if err == nil {
			r, err = openSQLite(ctx, path)
		}
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		r, err = openPostgres(ctx, url)
	default:
		err = fmt.Errorf("%w: database URL %q: want postgres://…, postgresql://… or sqlite:PATH", ErrInvalid, redact(url))
	}
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	r.clk = clk
	if err := r.migrate(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("open registry: %w", err), r.db.Close())
	}
	for _, p := range []struct {
		stmt **sql.Stmt
		q    string
	}{
		{&r.deviceByID, r.d.deviceSelect() + ` WHERE d.id = $1`},
		{&r.openMessages, openMessagesQuery + ` ORDER BY created_at, id`},
		{&r.openMessagesOfKind, openMessagesQuery + ` AND kind = $3 ORDER BY created_at, id`},
		{&r.storedConfigHash, `SELECT desired_hash, desired_version FROM device_config WHERE device_id = $1`},
		{&r.layerRevision, `SELECT revision FROM config_revision WHERE id = 1`},
	} {
		if *p.stmt, err = r.db.PrepareContext(ctx, p.q); err != nil {
			return nil, errors.Join(fmt.Errorf("open registry: prepare %s: %w", firstLine(p.q), err), r.closeStatements(), r.db.Close())
		}
	}
	return r, nil
}

// sqlitePath returns the file a sqlite: URL names.
func sqlitePath(u string) (string, error) {
	var path string
	if rest, ok := strings.CutPrefix(u, "sqlite://"); ok {
		if !strings.HasPrefix(rest, "/") {
			return "", fmt.Errorf("%w: database URL %q: sqlite:// takes an absolute path (sqlite:///abs/path.db); use sqlite:relative.db for a relative one", ErrInvalid, u)
		}
		path = rest
	} else {
		path = strings.TrimPrefix(u, "sqlite:")
	}
	if path == "" || strings.ContainsAny(path, "?#") {
		return "", fmt.Errorf("%w: database URL %q: want sqlite:PATH with no query", ErrInvalid, u)
	}
	return filepath.Clean(path), nil
}

func openSQLite(ctx context.Context, path string) (*Registry, error) {
	if strings.Contains(path, "?") {
		return nil, fmt.Errorf("%w: sqlite path %q contains '?'", ErrInvalid, path)
	}
	if dir := filepath.Dir(path); dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("sqlite database directory: %w", err)
		}
	}
	// Create the file ourselves so it (and the -wal and -shm files SQLite derives from it) is
	// readable by the owner only.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create sqlite database: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("create sqlite database: %w", err)
	}
	// journal_mode is not in the DSN: switching a fresh file to WAL needs an exclusive lock, and
	// SQLite answers SQLITE_BUSY at once, without its busy handler, when two connections race
	// for it (it would deadlock otherwise). useWAL retries that race instead.
	dsn := fmt.Sprintf("%s?_busy_timeout=%d&_synchronous=FULL&_foreign_keys=1&_txlock=immediate",
		path, sqliteBusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("open sqlite %s: %w", path, err), db.Close())
	}
	if err := useWAL(ctx, db); err != nil {
		return nil, errors.Join(fmt.Errorf("open sqlite %s: %w", path, err), db.Close())
	}
	return &Registry{db: db, d: sqliteDialect, wlock: make(chan struct{}, 1)}, nil
}

// useWAL puts the database in WAL mode, which is persistent: every connection opened later
// finds it. Processes opening the same fresh file at once race for the exclusive lock the
// switch needs; the losers get SQLITE_BUSY without waiting, so useWAL retries for up to
// sqliteBusyTimeout, as a writer waiting on the busy handler would.
func useWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	wait := time.Millisecond
	for {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		if err == nil {
			if !strings.EqualFold(mode, "wal") {
				return fmt.Errorf("sqlite refused WAL mode: journal mode is %q", mode)
			}
			return nil
		}
		if !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("set WAL journal mode: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("set WAL journal mode: %w", ctx.Err())
		case <-time.After(wait + rand.N(wait)):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func openPostgres(ctx context.Context, u string) (*Registry, error) {
	db, err := sql.Open("pgx", u)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", redact(u), err)
	}
	db.SetMaxOpenConns(max(8, 4*runtime.GOMAXPROCS(0)))
	db.SetMaxIdleConns(max(8, 4*runtime.GOMAXPROCS(0)))
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("connect to postgres %s: %w", redact(u), err), db.Close())
	}
	return &Registry{db: db, d: postgresDialect}, nil
}

// redact hides the password in a database URL for error messages.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Close closes the database. On SQLite it first lets SQLite refresh its query-planner
// statistics (PRAGMA optimize).
func (r *Registry) Close() error {
	var errs []error
	if err := r.closeStatements(); err != nil {
		errs = append(errs, err)
	}
	if r.d == sqliteDialect {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := r.db.ExecContext(ctx, "PRAGMA optimize"); err != nil {
			errs = append(errs, fmt.Errorf("optimize sqlite: %w", err))
		}
		cancel()
	}
	if err := r.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close registry: %w", err))
	}
	return errors.Join(errs...)
}

// closeStatements closes the prepared statements made so far.
func (r *Registry) closeStatements() error {
	var errs []error
	for _, st := range []*sql.Stmt{r.deviceByID, r.openMessages, r.openMessagesOfKind, r.storedConfigHash, r.layerRevision} {
		if st != nil {
			if err := st.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close prepared statement: %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

// Ping checks that the database answers: a closed registry, an unreachable PostgreSQL or a
// SQLite file gone bad fails.
func (r *Registry) Ping(ctx context.Context) error {
	if err := r.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping registry: %w", err)
	}
	var one int
	if err := r.db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("ping registry: %w", err)
	}
	return nil
}

// ErrNotSQLite is returned by CopyTo on PostgreSQL, whose backups are pg_dump's.
var ErrNotSQLite = errors.New("registry is in PostgreSQL: back it up with pg_dump")

// CopyTo writes a consistent copy of a SQLite registry to the new file path (VACUUM INTO),
// while the registry keeps serving: readers go on, writers wait for the copy to end. On
// PostgreSQL it returns ErrNotSQLite.
func (r *Registry) CopyTo(ctx context.Context, path string) error {
	if r.d != sqliteDialect {
		return ErrNotSQLite
	}
	if _, err := r.db.ExecContext(ctx, `VACUUM INTO $1`, path); err != nil {
		return fmt.Errorf("copy registry to %s: %w", path, err)
	}
	return nil
}

// Backend reports which database the registry runs on: "sqlite" or "postgres".
func (r *Registry) Backend() string { return r.d.name }

// querier is what both *sql.DB and *sql.Tx offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var (
	_ querier = (*sql.DB)(nil)
	_ querier = (*sql.Tx)(nil)
)

// write runs fn in a write transaction, committing when fn returns nil and rolling back
// otherwise. fn must do all its database work through tx.
func (r *Registry) write(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	if r.wlock != nil {
		select {
		case r.wlock <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-r.wlock }()
	}
	tx, err := r.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
			err = errors.Join(err, fmt.Errorf("roll back: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// now is the clock's time, in UTC and truncated to the millisecond the database keeps.
func (r *Registry) now() time.Time { return r.clk.Now().UTC().Truncate(time.Millisecond) }

// toMS converts a time to the stored form: Unix milliseconds, 0 for the zero time.
func toMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMS converts a stored time back: 0 is the zero time, anything else UTC.
func fromMS(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
