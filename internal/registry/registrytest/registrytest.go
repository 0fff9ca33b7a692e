// Package registrytest gives tests a registry database of their own on the test PostgreSQL
// server.
package registrytest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// PostgresURL is the PostgreSQL server the tests use: $MILLWRIGHT_TEST_POSTGRES, else the
// machine's own on 127.0.0.1:5432, database test, which scripts/test makes sure answers.
func PostgresURL() string {
	if u := os.Getenv("MILLWRIGHT_TEST_POSTGRES"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// SchemaURL creates a schema mwtest_<random> on the test PostgreSQL server, drops it when the
// test ends, and returns a URL whose search_path is that schema. PostgreSQL not answering
// fails the test: tests never skip it.
func SchemaURL(tb testing.TB) string {
	tb.Helper()
	base := PostgresURL()
	db, err := sql.Open("pgx", base)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		tb.Fatalf("this test needs PostgreSQL at %s (set MILLWRIGHT_TEST_POSTGRES to another URL): %v", redact(base), err)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	schema := "mwtest_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		_ = db.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_, err := db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		_ = db.Close()
		if err != nil {
			tb.Error(err)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

// redact hides a URL's password.
func redact(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return u
	}
	if user, _, ok := strings.Cut(rest[:at], ":"); ok {
		return scheme + "://" + user + ":xxxxx" + rest[at:]
	}
	return u
}
