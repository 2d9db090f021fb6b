package sqlutil

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// Migration is one numbered schema step of a component. Versions start at 1
// and never change once released; a new schema change is a new version.
//
// DDL is written in PostgreSQL's spelling; for SQLite, BIGSERIAL PRIMARY KEY
// becomes INTEGER PRIMARY KEY AUTOINCREMENT and BYTEA becomes BLOB.
type Migration struct {
	Version int
	SQL     string
}

// Migrate brings component's tables up to the newest version, each step in
// its own transaction, recording progress in parley_schema_versions.
func (db *DB) Migrate(ctx context.Context, component string, migrations []Migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS parley_schema_versions (
		component TEXT NOT NULL,
		version INTEGER NOT NULL,
		PRIMARY KEY (component, version)
	)`); err != nil {
		return fmt.Errorf("create schema version table: %w", err)
	}
	if db.Dialect == Postgres {
		// Several processes may start at once against one database; the
		// advisory lock makes them migrate one after another.
		conn, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(7301)`); err != nil {
			return fmt.Errorf("lock migrations: %w", err)
		}
		defer conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(7301)`) //nolint:errcheck
	}
	for i, m := range migrations {
		if m.Version != i+1 {
			return fmt.Errorf("%s migration %d has version %d: versions must run 1, 2, 3, ...", component, i+1, m.Version)
		}
		err := db.WithTx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx,
				`SELECT COUNT(*) FROM parley_schema_versions WHERE component = $1 AND version = $2`,
				component, m.Version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, db.DDL(m.SQL)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx,
				`INSERT INTO parley_schema_versions (component, version) VALUES ($1, $2)`, component, m.Version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s to version %d: %w", component, m.Version, err)
		}
	}
	return nil
}

// DDL rewrites PostgreSQL-spelled DDL for this database's dialect.
func (db *DB) DDL(ddl string) string {
	if db.Dialect == Postgres {
		return ddl
	}
	return strings.NewReplacer(
		"BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT",
		"BYTEA", "BLOB",
	).Replace(ddl)
}
