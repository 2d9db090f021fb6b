package sqlutil

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
)

// The SQLite connections Parley opens are wrapped for two reasons the
// profiles showed:
//
//   - Parsing SQL was a quarter of the CPU of a busy server: database/sql
//     hands every Query/Exec to the driver as text, and modernc.org/sqlite
//     prepares it anew each time. Each connection keeps its prepared
//     statements, least recently used dropped past stmtCacheSize.
//   - SQLite allows one writer. When several goroutines write at once the
//     losers sleep in SQLite's busy handler with growing back-off (tens of
//     milliseconds each), which set the tail latency of sends. Writers
//     instead queue on one Go semaphore per database, first come first
//     served, and SQLite's busy timeout is left for other processes (the
//     create-account command).
//
// Every transaction takes the write semaphore (transactions BEGIN
// IMMEDIATE); so does a statement outside a transaction unless it is a
// plain read.

const (
	stmtCacheSize = 256
	// writeWait bounds how long a writer queues before failing like a busy
	// database would, so a caller that holds a transaction and then writes
	// through another connection gets an error instead of hanging.
	writeWait = 30 * time.Second
)

var errWriteLockTimeout = errors.New("sqlite: timed out waiting for the write lock")

// writeTicket is the write slot taken before a connection is checked out of
// the pool (by DB.BeginTx, DB.ExecContext, DB.QueryContext). Taking it
// first matters: a goroutine that holds a pooled connection while it waits
// for the slot can starve the slot's holder of the connection it needs for
// a read, and then both wait. release is idempotent.
type writeTicket struct {
	sem  chan struct{}
	once sync.Once
}

func (t *writeTicket) release() { t.once.Do(func() { <-t.sem }) }

type writeTicketKey struct{}

func ticketFrom(ctx context.Context) *writeTicket {
	t, _ := ctx.Value(writeTicketKey{}).(*writeTicket)
	return t
}

// acquireWrite takes the write slot of sem, waiting at most writeWait.
func acquireWrite(ctx context.Context, sem chan struct{}) error {
	t := time.NewTimer(writeWait)
	defer t.Stop()
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errWriteLockTimeout
	}
}

type sqliteConnector struct {
	dsn   string
	drv   *sqlite.Driver
	write chan struct{} // capacity 1: the database's single writer slot
}

func newSQLiteConnector(dsn string) *sqliteConnector {
	return &sqliteConnector{dsn: dsn, drv: &sqlite.Driver{}, write: make(chan struct{}, 1)}
}

func (c *sqliteConnector) Connect(ctx context.Context) (driver.Conn, error) {
	raw, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &sqliteConn{raw: raw, write: c.write, stmts: map[string]*list.Element{}, lru: list.New()}, nil
}

func (c *sqliteConnector) Driver() driver.Driver { return c.drv }

// The interfaces modernc.org/sqlite's connection implements and the wrapper
// passes on.
type rawSQLiteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
}

type sqliteConn struct {
	raw   driver.Conn
	write chan struct{}
	inTx  bool
	stmts map[string]*list.Element // query → element holding *cachedStmt
	lru   *list.List
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
	busy  bool // rows from it are still open
}

func (c *sqliteConn) rawConn() rawSQLiteConn { return c.raw.(rawSQLiteConn) }

// lockWrite takes the write slot for one operation on this connection and
// returns the function that gives it back. When the caller took the slot
// before checking out the connection (a ticket in ctx), the ticket is used
// and giving back is the ticket's release.
func (c *sqliteConn) lockWrite(ctx context.Context) (unlock func(), err error) {
	if t := ticketFrom(ctx); t != nil {
		return t.release, nil
	}
	if err := acquireWrite(ctx, c.write); err != nil {
		return nil, err
	}
	return func() { <-c.write }, nil
}

// cacheable reports whether query is one statement, which is all a
// prepared statement can hold; migrations run several at once.
func cacheable(query string) bool {
	q := strings.TrimRight(strings.TrimSpace(query), ";")
	return !strings.Contains(q, ";")
}

// isRead reports whether a statement outside a transaction only reads: a
// SELECT, a PRAGMA, or a WITH (common table expression) whose statement
// names no INSERT, UPDATE or DELETE.
func isRead(query string) bool {
	q := strings.TrimSpace(query)
	if len(q) < 6 {
		return false
	}
	switch strings.ToUpper(q[:6]) {
	case "SELECT", "PRAGMA":
		return true
	}
	if strings.EqualFold(q[:4], "WITH") {
		u := strings.ToUpper(q)
		return !strings.Contains(u, "INSERT") && !strings.Contains(u, "UPDATE") && !strings.Contains(u, "DELETE")
	}
	return false
}

// stmt returns a cached prepared statement that is not in use, or nil when
// the query should run unprepared.
func (c *sqliteConn) stmt(ctx context.Context, query string) (*cachedStmt, error) {
	if !cacheable(query) {
		return nil, nil
	}
	if el, ok := c.stmts[query]; ok {
		cs := el.Value.(*cachedStmt)
		if cs.busy {
			return nil, nil
		}
		c.lru.MoveToFront(el)
		return cs, nil
	}
	st, err := c.rawConn().PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	cs := &cachedStmt{query: query, stmt: st}
	c.stmts[query] = c.lru.PushFront(cs)
	for c.lru.Len() > stmtCacheSize {
		old := c.lru.Back()
		ocs := old.Value.(*cachedStmt)
		if ocs.busy {
			break
		}
		c.lru.Remove(old)
		delete(c.stmts, ocs.query)
		_ = ocs.stmt.Close()
	}
	return cs, nil
}

func (c *sqliteConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if !c.inTx && !isRead(query) {
		unlock, err := c.lockWrite(ctx)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	cs, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	if cs == nil {
		return c.rawConn().ExecContext(ctx, query, args)
	}
	return cs.stmt.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (c *sqliteConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	release := func() {}
	if !c.inTx && !isRead(query) { // e.g. INSERT ... RETURNING
		unlock, err := c.lockWrite(ctx)
		if err != nil {
			return nil, err
		}
		release = unlock
	}
	cs, err := c.stmt(ctx, query)
	if err != nil {
		release()
		return nil, err
	}
	var rows driver.Rows
	if cs == nil {
		rows, err = c.rawConn().QueryContext(ctx, query, args)
	} else {
		rows, err = cs.stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	}
	if err != nil {
		release()
		return nil, err
	}
	if cs != nil {
		cs.busy = true
	}
	return &sqliteRows{Rows: rows, done: func() {
		if cs != nil {
			cs.busy = false
		}
		release()
	}}, nil
}

func (c *sqliteConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	unlock, err := c.lockWrite(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := c.rawConn().BeginTx(ctx, opts)
	if err != nil {
		unlock()
		return nil, err
	}
	c.inTx = true
	return &sqliteTx{Tx: tx, conn: c, unlock: unlock}, nil
}

func (c *sqliteConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *sqliteConn) Prepare(query string) (driver.Stmt, error) {
	return c.rawConn().PrepareContext(context.Background(), query)
}

func (c *sqliteConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.rawConn().PrepareContext(ctx, query)
}

func (c *sqliteConn) Close() error {
	for _, el := range c.stmts {
		_ = el.Value.(*cachedStmt).stmt.Close()
	}
	c.stmts, c.lru = nil, nil
	return c.raw.Close()
}

func (c *sqliteConn) Ping(ctx context.Context) error {
	if p, ok := c.raw.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *sqliteConn) ResetSession(ctx context.Context) error {
	if r, ok := c.raw.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *sqliteConn) IsValid() bool {
	if v, ok := c.raw.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

type sqliteTx struct {
	driver.Tx
	conn   *sqliteConn
	unlock func()
}

func (t *sqliteTx) Commit() error {
	defer t.end()
	return t.Tx.Commit()
}

func (t *sqliteTx) Rollback() error {
	defer t.end()
	return t.Tx.Rollback()
}

func (t *sqliteTx) end() {
	t.conn.inTx = false
	t.unlock()
}

type sqliteRows struct {
	driver.Rows
	done func()
}

func (r *sqliteRows) Close() error {
	err := r.Rows.Close()
	if r.done != nil {
		r.done()
		r.done = nil
	}
	return err
}
