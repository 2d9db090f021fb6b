// Package testdb gives tests a fresh, empty database of each dialect, so the
// same test runs against SQLite and PostgreSQL.
//
// PostgreSQL is found at PARLEY_TEST_POSTGRES (default: the local server as
// user postgres). When it cannot be reached the PostgreSQL half of a test
// fails, unless PARLEY_TEST_SKIP_POSTGRES=1 says to skip it on purpose.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
)

// DefaultPostgres is the server tests use when PARLEY_TEST_POSTGRES is unset.
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Dialects lists the database kinds every storage test runs on.
var Dialects = []string{"sqlite", "postgres"}

// Run calls fn once per dialect as a subtest, each with the URL of a new,
// empty database that is dropped when the subtest ends.
func Run(t *testing.T, fn func(t *testing.T, dbURL string)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(d, func(t *testing.T) { fn(t, URL(t, d)) })
	}
}

// URL returns the URL of a new, empty database of the given dialect
// ("sqlite" or "postgres"), removed at the end of the test.
func URL(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case "sqlite":
		return "sqlite:" + filepath.Join(t.TempDir(), "parley.db")
	case "postgres":
		return postgresURL(t)
	default:
		t.Fatalf("unknown dialect %q", dialect)
		return ""
	}
}

func postgresURL(t testing.TB) string {
	if os.Getenv("PARLEY_TEST_SKIP_POSTGRES") == "1" {
		t.Skip("PARLEY_TEST_SKIP_POSTGRES=1")
	}
	admin := os.Getenv("PARLEY_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultPostgres
	}
	db, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "parley_test_" + hex.EncodeToString(b[:])
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("postgres at %s is needed for this test (set PARLEY_TEST_POSTGRES, or PARLEY_TEST_SKIP_POSTGRES=1 to skip): %v", admin, err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", admin)
		if err != nil {
			return
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("PARLEY_TEST_POSTGRES: %v", err)
	}
	u.Path = "/" + name
	return fmt.Sprint(u)
}
