package registry

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect holds the few places where SQLite and PostgreSQL need different SQL. Everything else
// is shared: both accept $1-style placeholders, ON CONFLICT, partial indexes and BIGINT.
type dialect struct {
	name string
	// forUpdate follows a SELECT that reads a row the transaction will change. PostgreSQL
	// locks the row; SQLite needs nothing, its write transactions are serialised.
	forUpdate string
	// identity is the column definition of an auto-increment BIGINT primary key.
	identity string
	// tagsJSON and groupsJSON are scalar subqueries giving a device's tags as a JSON object and
	// its groups as a sorted JSON array, for the device row aliased d.
	tagsJSON, groupsJSON string
	// withoutRowID ends CREATE TABLE for tables keyed by text: SQLite then stores the rows in
	// the primary-key B-tree itself, so a lookup by ID is one tree walk instead of two.
	withoutRowID string
	// migrationLock is run first in each migration transaction so that two servers starting
	// at once migrate one after the other; "" when the transaction itself is enough.
	migrationLock string
}

var sqliteDialect = &dialect{
	name:         BackendSQLite,
	forUpdate:    "",
	identity:     "INTEGER PRIMARY KEY AUTOINCREMENT",
	withoutRowID: " WITHOUT ROWID",
	tagsJSON:     "COALESCE((SELECT json_group_object(t.key, t.value) FROM device_tags t WHERE t.device_id = d.id), '{}')",
	// The primary key (device_id, name) yields the names in order; scanDevice sorts anyway.
	groupsJSON: "COALESCE((SELECT json_group_array(g.name) FROM device_groups g WHERE g.device_id = d.id), '[]')",
}

var postgresDialect = &dialect{
	name:          BackendPostgres,
	forUpdate:     " FOR UPDATE",
	identity:      "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
	tagsJSON:      "COALESCE((SELECT json_object_agg(t.key, t.value)::text FROM device_tags t WHERE t.device_id = d.id), '{}')",
	groupsJSON:    "COALESCE((SELECT json_agg(g.name ORDER BY g.name)::text FROM device_groups g WHERE g.device_id = d.id), '[]')",
	migrationLock: "SELECT pg_advisory_xact_lock(7238204551939405133)", // an arbitrary key, fixed forever
}

// isUniqueViolation reports whether err is a primary-key or unique-constraint violation.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code()
		return c == sqlite3.SQLITE_CONSTRAINT_UNIQUE || c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
}

// isBusy reports whether err is SQLite's SQLITE_BUSY, plain or extended.
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}
