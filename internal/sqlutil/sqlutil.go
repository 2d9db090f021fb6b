// Package sqlutil opens Parley's databases (SQLite or PostgreSQL) behind one
// database/sql handle and runs each component's versioned migrations.
//
// Queries are written once, in the subset both dialects share: numbered
// parameters ($1), INSERT ... ON CONFLICT, RETURNING. The few places where the
// dialects must differ (auto-increment keys, binary columns) are rewritten
// here, in DDL only, so no component keeps two copies of its SQL.
package sqlutil

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the SQL engine behind a DB.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is a database handle that knows its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
	// writeSlot is SQLite's single writer slot (nil for PostgreSQL); see
	// sqlite.go.
	writeSlot chan struct{}
}

// BeginTx starts a transaction. On SQLite every transaction writes, so the
// write slot is taken before a connection is checked out of the pool.
func (db *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	if db.writeSlot == nil {
		return db.DB.BeginTx(ctx, opts)
	}
	t, ctx, err := db.ticket(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := db.DB.BeginTx(ctx, opts)
	if err != nil {
		t.release()
		return nil, err
	}
	return tx, nil // released when the transaction ends
}

// ExecContext runs a statement; on SQLite a write takes the write slot
// before a connection is checked out.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if db.writeSlot == nil || isRead(query) {
		return db.DB.ExecContext(ctx, query, args...)
	}
	t, ctx, err := db.ticket(ctx)
	if err != nil {
		return nil, err
	}
	defer t.release()
	return db.DB.ExecContext(ctx, query, args...)
}

// QueryContext runs a query; on SQLite a writing one (INSERT ... RETURNING)
// takes the write slot before a connection is checked out and gives it
// back when the rows are closed.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if db.writeSlot == nil || isRead(query) {
		return db.DB.QueryContext(ctx, query, args...)
	}
	t, ctx, err := db.ticket(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := db.DB.QueryContext(ctx, query, args...)
	if err != nil {
		t.release()
		return nil, err
	}
	return rows, nil
}

// QueryRowContext is QueryContext for one row.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if db.writeSlot == nil || isRead(query) {
		return db.DB.QueryRowContext(ctx, query, args...)
	}
	t, tctx, err := db.ticket(ctx)
	if err != nil {
		// Let database/sql report the failure through the Row.
		canceled, cancel := context.WithCancelCause(ctx)
		cancel(err)
		return db.DB.QueryRowContext(canceled, query, args...)
	}
	row := db.DB.QueryRowContext(tctx, query, args...)
	if row.Err() != nil {
		t.release()
	}
	return row
}

func (db *DB) ticket(ctx context.Context) (*writeTicket, context.Context, error) {
	if err := acquireWrite(ctx, db.writeSlot); err != nil {
		return nil, nil, err
	}
	t := &writeTicket{sem: db.writeSlot}
	return t, context.WithValue(ctx, writeTicketKey{}, t), nil
}

// Open connects to a database URL: postgres:// or postgresql:// for
// PostgreSQL, sqlite:PATH or file:PATH for SQLite (created if missing, WAL).
func Open(dbURL string) (*DB, error) {
	switch {
	case strings.HasPrefix(dbURL, "postgres://"), strings.HasPrefix(dbURL, "postgresql://"):
		db, err := sql.Open("pgx", dbURL)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(16)
		db.SetConnMaxIdleTime(5 * time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			return nil, fmt.Errorf("connect to postgres: %w", err)
		}
		return &DB{DB: db, Dialect: Postgres}, nil
	case strings.HasPrefix(dbURL, "sqlite:"), strings.HasPrefix(dbURL, "file:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dbURL, "sqlite:"), "file:")
		path = strings.TrimPrefix(path, "//")
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		if path == "" {
			return nil, fmt.Errorf("sqlite URL %q has no file path", dbURL)
		}
		// busy_timeout lets concurrent writers queue instead of failing;
		// _txlock=immediate takes the write lock at BEGIN so a read-then-write
		// transaction cannot deadlock against another; synchronous=FULL keeps
		// the promise that an acknowledged write survives a power cut.
		q := url.Values{}
		for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(ON)"} {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", "immediate")
		connector := newSQLiteConnector("file:" + path + "?" + q.Encode())
		db := sql.OpenDB(connector)
		db.SetMaxOpenConns(8)
		db.SetMaxIdleConns(8)
		if err := db.Ping(); err != nil {
			db.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		return &DB{DB: db, Dialect: SQLite, writeSlot: connector.write}, nil
	default:
		return nil, fmt.Errorf("database URL %q: expected postgres://, postgresql://, sqlite: or file:", dbURL)
	}
}

// WithTx runs fn in a transaction, committing when fn returns nil and
// rolling back otherwise.
func (db *DB) WithTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique or primary-key conflict.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		code := sqErr.Code()
		return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// InList returns "$start, $start+1, ..." for n parameters, for IN (...) lists.
func InList(start, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", start+i)
	}
	return b.String()
}
