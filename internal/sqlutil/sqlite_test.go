package sqlutil_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

// TestSQLiteConcurrentWriters: many goroutines writing at once, in and out
// of transactions, all succeed (writers queue instead of failing busy) and
// nothing is lost.
func TestSQLiteConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	db, err := sqlutil.Open(testdb.URL(t, "sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE n (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER NOT NULL); CREATE TABLE m (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				var err error
				switch i % 3 {
				case 0:
					_, err = db.ExecContext(ctx, `INSERT INTO n (v) VALUES ($1)`, w)
				case 1:
					var id int64
					err = db.QueryRowContext(ctx, `INSERT INTO n (v) VALUES ($1) RETURNING id`, w).Scan(&id)
				default:
					err = db.WithTx(ctx, func(tx *sql.Tx) error {
						var c int
						if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM n WHERE v = $1`, w).Scan(&c); err != nil {
							return err
						}
						_, err := tx.ExecContext(ctx, `INSERT INTO n (v) VALUES ($1)`, w)
						return err
					})
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d op %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM n`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != workers*each {
		t.Fatalf("%d rows, want %d", n, workers*each)
	}
}

// TestSQLiteNestedQueriesOfOneStatement: the same query text open twice on
// one connection (a transaction's) must not share a prepared statement.
func TestSQLiteNestedQueriesOfOneStatement(t *testing.T) {
	ctx := context.Background()
	db, err := sqlutil.Open(testdb.URL(t, "sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (1), (2), (3)`); err != nil {
		t.Fatal(err)
	}
	err = db.WithTx(ctx, func(tx *sql.Tx) error {
		const q = `SELECT v FROM t WHERE v >= $1 ORDER BY v`
		outer, err := tx.QueryContext(ctx, q, 1)
		if err != nil {
			return err
		}
		defer outer.Close()
		var pairs []string
		for outer.Next() {
			var a int
			if err := outer.Scan(&a); err != nil {
				return err
			}
			inner, err := tx.QueryContext(ctx, q, a)
			if err != nil {
				return err
			}
			for inner.Next() {
				var b int
				if err := inner.Scan(&b); err != nil {
					return err
				}
				pairs = append(pairs, fmt.Sprint(a, b))
			}
			inner.Close()
		}
		if got := fmt.Sprint(pairs); got != "[1 1 1 2 1 3 2 2 2 3 3 3]" {
			return fmt.Errorf("pairs %s", got)
		}
		return outer.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSQLiteWriterQueueDoesNotStarveTheHolder: many goroutines wait for the
// write slot while the holder of a transaction also reads through the pool.
// Waiting writers must not hold pooled connections, or the holder's read
// would wait for them and they for it.
func TestSQLiteWriterQueueDoesNotStarveTheHolder(t *testing.T) {
	ctx := context.Background()
	db, err := sqlutil.Open(testdb.URL(t, "sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE w (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	holderDone := make(chan error, 1)
	go func() {
		holderDone <- db.WithTx(ctx, func(tx *sql.Tx) error {
			close(started)
			time.Sleep(200 * time.Millisecond) // let the writers pile up
			var n int
			// A read through the pool, not the transaction.
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM w`).Scan(&n); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO w VALUES (0)`)
			return err
		})
	}()
	<-started
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ { // more than the pool's connections
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				_ = db.WithTx(ctx, func(tx *sql.Tx) error {
					_, err := tx.ExecContext(ctx, `INSERT INTO w VALUES ($1)`, i)
					return err
				})
			} else {
				_, _ = db.ExecContext(ctx, `INSERT INTO w VALUES ($1)`, i)
			}
		}()
	}
	select {
	case err := <-holderDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the transaction's holder could not get a connection for a read")
	}
	wg.Wait()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM w`).Scan(&n); err != nil || n != 33 {
		t.Fatalf("%d rows, %v; want 33", n, err)
	}
}
