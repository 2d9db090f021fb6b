package sqlutil

import "testing"

func TestIsRead(t *testing.T) {
	for q, want := range map[string]bool{
		"SELECT 1":             true,
		"  select x FROM t":    true,
		"PRAGMA table_info(t)": true,
		"WITH RECURSIVE c(n) AS (SELECT 1) SELECT n FROM c":  true,
		"WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x": false,
		"WITH x AS (SELECT 1) DELETE FROM t WHERE v IN x":    false,
		"INSERT INTO t VALUES (1) RETURNING id":              false,
		"UPDATE t SET v = 1":                                 false,
		"CREATE TABLE t (v INTEGER)":                         false,
		"":                                                   false,
	} {
		if got := isRead(q); got != want {
			t.Errorf("isRead(%q) = %v, want %v", q, got, want)
		}
	}
}
