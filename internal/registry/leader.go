package registry

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
)

// Leadership is a named lock that at most one of the servers sharing a registry holds, for work
// only one of them may do (the rollout engine offers firmware; two would offer twice).
//
// On PostgreSQL it is a session advisory lock, keyed by the name and the registry's schema, on
// a connection of its own: held as long as that connection lives, released by Close or by the
// server's end (PostgreSQL drops a dead session's locks), so another server takes it over at its
// next Leading. On SQLite one server owns the database file, and it always leads.
type Leadership struct {
	r    *Registry
	name string

	mu   sync.Mutex
	conn *sql.Conn // PostgreSQL: the connection holding the lock; nil when not held
}

// Leadership returns the named lock, not yet taken.
func (r *Registry) Leadership(name string) *Leadership { return &Leadership{r: r, name: name} }

// Leading reports whether this server holds the lock, taking it when it is free. A lock whose
// connection has failed is given up (another server may hold it by now) and taken again only
// if free.
func (l *Leadership) Leading(ctx context.Context) (bool, error) {
	if l.r.d != postgresDialect {
		return true, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		if err := l.conn.PingContext(ctx); err == nil {
			return true, nil
		}
		_ = l.conn.Close()
		l.conn = nil
	}
	conn, err := l.r.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("leadership %s: %w", l.name, err)
	}
	var got bool
	err = conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1 || '/' || current_schema(), 0))`, l.name).Scan(&got)
	if err != nil || !got {
		_ = conn.Close()
		if err != nil {
			return false, fmt.Errorf("leadership %s: %w", l.name, err)
		}
		return false, nil
	}
	l.conn = conn
	return true, nil
}

// Close gives the lock up, if held.
func (l *Leadership) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil {
		return nil
	}
	_, err := l.conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(hashtextextended($1 || '/' || current_schema(), 0))`, l.name)
	if cerr := l.conn.Close(); err == nil {
		err = cerr
	}
	l.conn = nil
	if err != nil {
		return fmt.Errorf("leadership %s: give up: %w", l.name, err)
	}
	return nil
}
