package sqlutil_test

import (
	"context"
	"testing"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

var testMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `CREATE TABLE things (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE, blob BYTEA)`},
	{Version: 2, SQL: `ALTER TABLE things ADD COLUMN n BIGINT NOT NULL DEFAULT 0`},
}

func TestMigrateAndQueryBothDialects(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		db, err := sqlutil.Open(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for i := 0; i < 2; i++ { // a second run is a no-op
			if err := db.Migrate(ctx, "test", testMigrations); err != nil {
				t.Fatalf("migrate run %d: %v", i, err)
			}
		}
		var id int64
		if err := db.QueryRowContext(ctx,
			`INSERT INTO things (name, blob, n) VALUES ($1, $2, $3) RETURNING id`, "a", []byte{0, 1, 2}, 7).Scan(&id); err != nil {
			t.Fatal(err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO things (name) VALUES ($1)`, "a")
		if !sqlutil.IsUniqueViolation(err) {
			t.Fatalf("want unique violation, got %v", err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO things (name, n) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET n = excluded.n`, "a", 9)
		if err != nil {
			t.Fatal(err)
		}
		// Parameters used out of order bind by number on both dialects.
		var name string
		var blob []byte
		var n int64
		if err := db.QueryRowContext(ctx, `SELECT name, blob, n FROM things WHERE n = $2 AND id = $1`, id, 9).Scan(&name, &blob, &n); err != nil {
			t.Fatal(err)
		}
		if name != "a" || string(blob) != "\x00\x01\x02" || n != 9 {
			t.Fatalf("got %q %v %d", name, blob, n)
		}
	})
}

func TestMigrateRejectsGaps(t *testing.T) {
	db, err := sqlutil.Open(testdb.URL(t, "sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Migrate(context.Background(), "gap", []sqlutil.Migration{{Version: 2, SQL: "SELECT 1"}})
	if err == nil {
		t.Fatal("want error for a migration list that skips version 1")
	}
}

func TestOpenRejectsUnknownScheme(t *testing.T) {
	for _, u := range []string{"mysql://x", "", "sqlite:"} {
		if _, err := sqlutil.Open(u); err == nil {
			t.Errorf("Open(%q): want error", u)
		}
	}
}
