package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Full-text search is the one place where the two databases need different
// SQL: PostgreSQL matches to_tsvector against websearch_to_tsquery and
// ranks with ts_rank over a GIN expression index; SQLite keeps an FTS5
// index (porter stemming, like PostgreSQL's 'english' configuration)
// beside syncapi_search_docs, filled by triggers, and ranks with bm25.
// Both differences live in the two functions below; everything else about
// search (the documents, filters, visibility, paging) is shared.

// searchIndexDDL is the full-text index over syncapi_search_docs.body.
func searchIndexDDL(d sqlutil.Dialect) string {
	if d == sqlutil.Postgres {
		return `CREATE INDEX syncapi_search_docs_fts ON syncapi_search_docs USING GIN (to_tsvector('english', body));`
	}
	return `
CREATE VIRTUAL TABLE syncapi_search_fts USING fts5(body, content='syncapi_search_docs', content_rowid='position', tokenize='porter unicode61');
CREATE TRIGGER syncapi_search_docs_insert AFTER INSERT ON syncapi_search_docs BEGIN
	INSERT INTO syncapi_search_fts (rowid, body) VALUES (new.position, new.body);
END;
CREATE TRIGGER syncapi_search_docs_delete AFTER DELETE ON syncapi_search_docs BEGIN
	INSERT INTO syncapi_search_fts (syncapi_search_fts, rowid, body) VALUES ('delete', old.position, old.body);
END;`
}

// searchMatch returns the FROM clause and the rank expression of a search,
// and the search term as that database's query language wants it: $1 is
// the term. For SQLite the user's text becomes a conjunction of quoted
// words, so FTS5 operators in it are taken literally; PostgreSQL's
// websearch_to_tsquery already accepts any text safely.
func searchMatch(d sqlutil.Dialect, term string) (from, rank, arg string) {
	if d == sqlutil.Postgres {
		return `syncapi_search_docs d CROSS JOIN websearch_to_tsquery('english', $1) q`,
			`ts_rank(to_tsvector('english', d.body), q)`, term
	}
	words := SearchWords(term)
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = `"` + w + `"`
	}
	return `syncapi_search_fts JOIN syncapi_search_docs d ON d.position = syncapi_search_fts.rowid`, `-bm25(syncapi_search_fts)`, strings.Join(quoted, " ")
}

// searchCond is the match condition for the FROM clause of searchMatch.
func searchCond(d sqlutil.Dialect) string {
	if d == sqlutil.Postgres {
		return `to_tsvector('english', d.body) @@ q`
	}
	return `syncapi_search_fts MATCH $1`
}

// SearchWords splits text into lower-cased words (letters and digits), as
// both full-text indexes tokenise it.
func SearchWords(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r)
	})
}

// SearchQuery selects matching documents in the rooms where UserID has ever
// had a membership.
type SearchQuery struct {
	UserID string
	Term   string
	// Keys restricts to these search keys (empty: all).
	Keys []string
	// Rooms and NotRooms narrow the rooms (nil Rooms: no restriction).
	Rooms    *[]string
	NotRooms []string
	// Recent orders by stream position instead of rank.
	Recent bool
	Limit  int
}

// SearchHit is one matching event with what the visibility check and the
// response need.
type SearchHit struct {
	Position          int64
	RoomID            string
	EventID           string
	Sender            string
	Type              string
	StateKey          *string
	HistoryVisibility string
	Rank              float64
}

// Search returns up to q.Limit matches, best (or newest) first.
func (d *DB) Search(ctx context.Context, q SearchQuery) ([]SearchHit, error) {
	from, rank, term := searchMatch(d.db.Dialect, q.Term)
	if strings.TrimSpace(term) == "" {
		return nil, nil
	}
	args := []any{term, q.UserID}
	where := []string{searchCond(d.db.Dialect),
		"d.room_id IN (SELECT DISTINCT room_id FROM syncapi_membership_changes WHERE user_id = $2)"}
	where = inListCond(where, &args, "d.search_key", q.Keys, false)
	if q.Rooms != nil {
		if len(*q.Rooms) == 0 {
			return nil, nil
		}
		where = inListCond(where, &args, "d.room_id", *q.Rooms, false)
	}
	where = inListCond(where, &args, "d.room_id", q.NotRooms, true)
	order := "score DESC, d.position DESC"
	if q.Recent {
		order = "d.position DESC"
	}
	args = append(args, q.Limit)
	rows, err := d.db.QueryContext(ctx, `SELECT d.position, d.room_id, d.event_id, d.sender, d.type, e.state_key, e.history_visibility, `+rank+` AS score
		FROM `+from+` JOIN syncapi_events e ON e.position = d.position
		WHERE `+strings.Join(where, " AND ")+` AND e.soft_failed = FALSE
		ORDER BY `+order+fmt.Sprintf(" LIMIT $%d", len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	defer rows.Close()
	var out []SearchHit
	for rows.Next() {
		var h SearchHit
		var sk sql.NullString
		if err := rows.Scan(&h.Position, &h.RoomID, &h.EventID, &h.Sender, &h.Type, &sk, &h.HistoryVisibility, &h.Rank); err != nil {
			return nil, err
		}
		if sk.Valid {
			s := sk.String
			h.StateKey = &s
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// SearchBodies returns the indexed text of the given events, for
// highlighting.
func (d *DB) SearchBodies(ctx context.Context, eventIDs []string) (map[string]string, error) {
	out := map[string]string{}
	if len(eventIDs) == 0 {
		return out, nil
	}
	rows, err := d.db.QueryContext(ctx, `SELECT event_id, body FROM syncapi_search_docs WHERE event_id IN (`+sqlutil.InList(1, len(eventIDs))+`)`,
		stringArgs(nil, eventIDs)...)
	if err != nil {
		return nil, fmt.Errorf("search bodies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, body string
		if err := rows.Scan(&id, &body); err != nil {
			return nil, err
		}
		out[id] = body
	}
	return out, rows.Err()
}

// MembershipHistories returns every membership change of userID, per room,
// oldest first: what search needs to check visibility across rooms.
func (d *DB) MembershipHistories(ctx context.Context, userID string) (map[string][]MembershipAt, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, position, membership FROM syncapi_membership_changes
		WHERE user_id = $1 ORDER BY room_id, position`, userID)
	if err != nil {
		return nil, fmt.Errorf("membership histories: %w", err)
	}
	defer rows.Close()
	out := map[string][]MembershipAt{}
	for rows.Next() {
		var roomID string
		var m MembershipAt
		if err := rows.Scan(&roomID, &m.Position, &m.Membership); err != nil {
			return nil, err
		}
		out[roomID] = append(out[roomID], m)
	}
	return out, rows.Err()
}

// MemberEventAt returns userID's m.room.member event in force at stream
// position pos (the newest one at or before it), or nil: the "historic
// profile" of a search result's sender.
func (d *DB) MemberEventAt(ctx context.Context, roomID, userID string, pos int64) (*Event, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM syncapi_events e
		WHERE e.room_id = $1 AND e.type = 'm.room.member' AND e.state_key = $2 AND e.position <= $3 AND e.soft_failed = FALSE
		ORDER BY e.position DESC LIMIT 1`, roomID, userID, pos)
	if err != nil {
		return nil, fmt.Errorf("member event: %w", err)
	}
	evs, err := scanEvents(rows)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil
	}
	return &evs[0], nil
}
