package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Relations (client-server spec §"Forming relationships between events")
// and search are indexed as events are stored, in the same transaction, so
// a redelivered event (a no-op for StoreEvent) is never indexed twice and a
// 200 for /sync implies the indexes are up to date. Soft-failed events are
// not indexed; a redaction removes the redacted event from both indexes.
//
// Tables:
//   - syncapi_relations: one row per child event (an event has at most one
//     m.relates_to), keyed by the child's event ID.
//   - syncapi_threads: one row per thread root with the position of its
//     newest reply, so /threads lists threads by latest activity from an
//     index instead of grouping every reply of the room.
//   - syncapi_search_docs: the searchable text of m.room.message,
//     m.room.name and m.room.topic events, with a full-text index whose
//     form depends on the database (search.go).

// relationsMigrations is the "syncapi_relations" component's schema. Only
// version 2 (the full-text index) differs between the dialects.
func relationsMigrations(d sqlutil.Dialect) []sqlutil.Migration {
	return []sqlutil.Migration{
		{Version: 1, SQL: `
CREATE TABLE syncapi_relations (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	parent_event_id TEXT NOT NULL,
	rel_type TEXT NOT NULL,
	annotation_key TEXT,
	type TEXT NOT NULL,
	sender TEXT NOT NULL,
	replacement_ok BOOLEAN NOT NULL,
	origin_server_ts BIGINT NOT NULL,
	position BIGINT NOT NULL
);
CREATE INDEX syncapi_relations_parent ON syncapi_relations (parent_event_id, position);
CREATE INDEX syncapi_relations_parent_type ON syncapi_relations (parent_event_id, rel_type, position);
CREATE TABLE syncapi_threads (
	root_event_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	latest_position BIGINT NOT NULL,
	PRIMARY KEY (root_event_id, room_id)
);
CREATE INDEX syncapi_threads_latest ON syncapi_threads (room_id, latest_position);
CREATE TABLE syncapi_search_docs (
	position BIGINT PRIMARY KEY,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	search_key TEXT NOT NULL,
	body TEXT NOT NULL
);
CREATE INDEX syncapi_search_docs_room ON syncapi_search_docs (room_id, position);
CREATE INDEX syncapi_membership_changes_user ON syncapi_membership_changes (user_id, room_id, position);
CREATE INDEX syncapi_events_member_history ON syncapi_events (room_id, type, state_key, position);
`},
		{Version: 2, SQL: searchIndexDDL(d)},
	}
}

// Relationship types with server-side aggregations (client-server spec
// §"Aggregations of child events").
const (
	RelReplace   = "m.replace"
	RelThread    = "m.thread"
	RelReference = "m.reference"
)

// indexedContent is what the indexes read of an event: how it relates to
// another event, and its searchable text.
type indexedContent struct {
	Content struct {
		RelatesTo *struct {
			RelType string `json:"rel_type"`
			EventID string `json:"event_id"`
			Key     string `json:"key"`
		} `json:"m.relates_to"`
		NewContent json.RawMessage `json:"m.new_content"`
		Body       json.RawMessage `json:"body"`
		Name       json.RawMessage `json:"name"`
		Topic      json.RawMessage `json:"topic"`
	} `json:"content"`
}

// Relation is an event's m.relates_to, as far as the index needs it.
type Relation struct {
	RelType string
	// Parent is the event ID the relation points at.
	Parent string
	// Key is an annotation's key (m.annotation), else "".
	Key string
}

// RelationOf reads the relation of an event's JSON. Malformed or absent
// relations give ok false; m.in_reply_to without a rel_type is not a
// relation in this sense (client-server spec §"Rich replies").
func RelationOf(eventJSON []byte) (Relation, bool) {
	var c indexedContent
	if json.Unmarshal(eventJSON, &c) != nil || c.Content.RelatesTo == nil {
		return Relation{}, false
	}
	rt := c.Content.RelatesTo
	if rt.RelType == "" || len(rt.RelType) > 255 || !strings.HasPrefix(rt.EventID, "$") || len(rt.EventID) > 255 {
		return Relation{}, false
	}
	return Relation{RelType: rt.RelType, Parent: rt.EventID, Key: rt.Key}, true
}

// indexEvent records the relation and the searchable text of a newly
// stored event. It runs inside StoreEvent's transaction.
func indexEvent(ctx context.Context, tx *sql.Tx, ev *NewEvent, position int64) error {
	var c indexedContent
	if json.Unmarshal(ev.JSON, &c) != nil {
		return nil
	}
	if rel, ok := RelationOf(ev.JSON); ok {
		// Client-server spec §"Validity of replacement events": what can be
		// judged from the replacement alone. The comparison with the
		// original happens when aggregating.
		replacementOK := ev.StateKey == nil && (ev.Type == "m.room.encrypted" || isObject(c.Content.NewContent))
		_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_relations
			(event_id, room_id, parent_event_id, rel_type, annotation_key, type, sender, replacement_ok, origin_server_ts, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING`,
			ev.EventID, ev.RoomID, rel.Parent, rel.RelType, nullString(rel.Key), ev.Type, ev.Sender, replacementOK, ev.OriginServerTS, position)
		if err != nil {
			return fmt.Errorf("index relation: %w", err)
		}
		if rel.RelType == RelThread {
			_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_threads (root_event_id, room_id, latest_position) VALUES ($1, $2, $3)
				ON CONFLICT (root_event_id, room_id) DO UPDATE SET latest_position = excluded.latest_position`,
				rel.Parent, ev.RoomID, position)
			if err != nil {
				return fmt.Errorf("index thread: %w", err)
			}
		}
	}
	key, text := searchText(ev, &c)
	if key == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_search_docs (position, event_id, room_id, sender, type, search_key, body)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING`,
		position, ev.EventID, ev.RoomID, ev.Sender, ev.Type, key, text)
	if err != nil {
		return fmt.Errorf("index search text: %w", err)
	}
	return nil
}

// Search keys (client-server spec §"Server Side Search").
const (
	SearchKeyBody  = "content.body"
	SearchKeyName  = "content.name"
	SearchKeyTopic = "content.topic"
)

// searchText picks the key and text an event is searchable by.
func searchText(ev *NewEvent, c *indexedContent) (key, text string) {
	var raw json.RawMessage
	switch {
	case ev.Type == "m.room.message" && ev.StateKey == nil:
		key, raw = SearchKeyBody, c.Content.Body
	case ev.Type == "m.room.name" && ev.StateKey != nil && *ev.StateKey == "":
		key, raw = SearchKeyName, c.Content.Name
	case ev.Type == "m.room.topic" && ev.StateKey != nil && *ev.StateKey == "":
		key, raw = SearchKeyTopic, c.Content.Topic
	default:
		return "", ""
	}
	if json.Unmarshal(raw, &text) != nil || strings.TrimSpace(text) == "" {
		return "", ""
	}
	return key, text
}

func isObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && m != nil
}

// unindexEvent removes a redacted event from the relation and search
// indexes (client-server spec §"Redactions": a redacted relation no longer
// counts towards its parent's aggregations). A thread that loses its
// newest reply moves back to the previous one's position; one that loses
// its last reply is no longer a thread.
func unindexEvent(ctx context.Context, tx *sql.Tx, eventID string) error {
	var parent, roomID, relType string
	err := tx.QueryRowContext(ctx, `DELETE FROM syncapi_relations WHERE event_id = $1 RETURNING parent_event_id, room_id, rel_type`, eventID).
		Scan(&parent, &roomID, &relType)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("unindex relation: %w", err)
	case relType == RelThread:
		var latest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(position) FROM syncapi_relations
			WHERE parent_event_id = $1 AND room_id = $2 AND rel_type = 'm.thread'`, parent, roomID).Scan(&latest); err != nil {
			return fmt.Errorf("thread after redaction: %w", err)
		}
		if latest.Valid {
			_, err = tx.ExecContext(ctx, `UPDATE syncapi_threads SET latest_position = $3 WHERE root_event_id = $1 AND room_id = $2`, parent, roomID, latest.Int64)
		} else {
			_, err = tx.ExecContext(ctx, `DELETE FROM syncapi_threads WHERE root_event_id = $1 AND room_id = $2`, parent, roomID)
		}
		if err != nil {
			return fmt.Errorf("update thread after redaction: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM syncapi_search_docs WHERE event_id = $1`, eventID); err != nil {
		return fmt.Errorf("unindex search text: %w", err)
	}
	return nil
}

// RelationsQuery selects the children of one event for
// GET /relations: those with After < position <= Before.
type RelationsQuery struct {
	RoomID    string
	Parent    string
	RelType   string // "" for any
	EventType string // "" for any
	After     int64
	Before    int64
	Backwards bool
	Limit     int
	// Depth > 1 also returns children of children, up to that many levels
	// (client-server spec: the recurse parameter). RelType restricts every
	// level; EventType only the events returned.
	Depth int
}

// RelatedEvents returns the non-soft-failed children selected by q, in
// position order.
func (d *DB) RelatedEvents(ctx context.Context, q RelationsQuery) ([]Event, error) {
	args := []any{q.RoomID, q.Parent, q.After, q.Before}
	relCond := ""
	if q.RelType != "" {
		args = append(args, q.RelType)
		relCond = fmt.Sprintf(" AND r.rel_type = $%d", len(args))
	}
	typeCond := ""
	if q.EventType != "" {
		args = append(args, q.EventType)
		typeCond = fmt.Sprintf(" AND e.type = $%d", len(args))
	}
	order := "ASC"
	if q.Backwards {
		order = "DESC"
	}
	var query string
	if q.Depth > 1 {
		args = append(args, q.Depth)
		depthParam := len(args)
		args = append(args, q.Limit)
		query = `WITH RECURSIVE tree (event_id, depth) AS (
				SELECT r.event_id, 1 FROM syncapi_relations r WHERE r.parent_event_id = $2 AND r.room_id = $1` + relCond + `
				UNION
				SELECT r.event_id, t.depth + 1 FROM syncapi_relations r JOIN tree t ON r.parent_event_id = t.event_id
				WHERE t.depth < $` + fmt.Sprint(depthParam) + ` AND r.room_id = $1` + relCond + `
			)
			SELECT ` + eventColumns + ` FROM tree JOIN syncapi_events e ON e.event_id = tree.event_id
			WHERE e.position > $3 AND e.position <= $4 AND e.soft_failed = FALSE` + typeCond + `
			ORDER BY e.position ` + order + fmt.Sprintf(` LIMIT $%d`, len(args))
	} else {
		args = append(args, q.Limit)
		query = `SELECT ` + eventColumns + ` FROM syncapi_relations r JOIN syncapi_events e ON e.event_id = r.event_id
			WHERE r.parent_event_id = $2 AND r.room_id = $1 AND r.position > $3 AND r.position <= $4 AND e.soft_failed = FALSE` + relCond + typeCond + `
			ORDER BY r.position ` + order + fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("related events: %w", err)
	}
	return scanEvents(rows)
}

// ChildSummary aggregates one parent's children of one relationship type.
type ChildSummary struct {
	Parent  string
	RoomID  string
	RelType string
	Count   int
	// Latest is the position of the newest child.
	Latest int64
	// ByUser says whether the asking user sent one of the children.
	ByUser bool
}

// ChildSummaries probes, in one query, which of parents have children of
// the aggregated relationship types, how many, the newest, and whether
// userID sent one. Most pages of events have none, and then this is the
// only query bundled aggregations cost.
func (d *DB) ChildSummaries(ctx context.Context, parents []string, userID string) ([]ChildSummary, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := stringArgs([]any{userID}, parents)
	rows, err := d.db.QueryContext(ctx, `SELECT parent_event_id, room_id, rel_type, COUNT(*), MAX(position),
			SUM(CASE WHEN sender = $1 THEN 1 ELSE 0 END)
		FROM syncapi_relations
		WHERE parent_event_id IN (`+sqlutil.InList(2, len(parents))+`) AND rel_type IN ('m.replace', 'm.thread', 'm.reference')
		GROUP BY parent_event_id, room_id, rel_type`, args...)
	if err != nil {
		return nil, fmt.Errorf("child summaries: %w", err)
	}
	defer rows.Close()
	var out []ChildSummary
	for rows.Next() {
		var s ChildSummary
		var byUser int64
		if err := rows.Scan(&s.Parent, &s.RoomID, &s.RelType, &s.Count, &s.Latest, &byUser); err != nil {
			return nil, err
		}
		s.ByUser = byUser > 0
		out = append(out, s)
	}
	return out, rows.Err()
}

// EditCandidate is a replacement that may be the newest valid edit of
// Parent.
type EditCandidate struct {
	Parent  string
	EventID string
}

// LatestEdits returns, per parent, the replacements with the newest
// origin_server_ts among those valid against the original (same room,
// sender and type; client-server spec §"Validity of replacement events").
// Several may share that timestamp; the caller breaks the tie by event ID
// ("lexicographically largest"), which is done in Go because the
// databases' string collations differ.
func (d *DB) LatestEdits(ctx context.Context, parents []string) ([]EditCandidate, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	rows, err := d.db.QueryContext(ctx, `SELECT parent, event_id FROM (
			SELECT r.parent_event_id AS parent, r.event_id,
				RANK() OVER (PARTITION BY r.parent_event_id ORDER BY r.origin_server_ts DESC) AS n
			FROM syncapi_relations r JOIN syncapi_events p ON p.event_id = r.parent_event_id
			WHERE r.parent_event_id IN (`+sqlutil.InList(1, len(parents))+`) AND r.rel_type = 'm.replace'
				AND r.replacement_ok = TRUE AND r.room_id = p.room_id AND r.sender = p.sender AND r.type = p.type
		) ranked WHERE n = 1`, stringArgs(nil, parents)...)
	if err != nil {
		return nil, fmt.Errorf("latest edits: %w", err)
	}
	defer rows.Close()
	var out []EditCandidate
	for rows.Next() {
		var c EditCandidate
		if err := rows.Scan(&c.Parent, &c.EventID); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ChildRef is one child event, with what a visibility check needs.
type ChildRef struct {
	Parent string
	Event
}

// ChildrenOf returns up to perParent children of each parent with the given
// relationship type, oldest first.
func (d *DB) ChildrenOf(ctx context.Context, parents []string, relType string, perParent int) ([]ChildRef, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := stringArgs([]any{relType, perParent}, parents)
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+`, x.parent FROM (
			SELECT r.parent_event_id AS parent, r.event_id, ROW_NUMBER() OVER (PARTITION BY r.parent_event_id ORDER BY r.position) AS n
			FROM syncapi_relations r
			WHERE r.parent_event_id IN (`+sqlutil.InList(3, len(parents))+`) AND r.rel_type = $1
		) x JOIN syncapi_events e ON e.event_id = x.event_id
		WHERE x.n <= $2 AND e.soft_failed = FALSE ORDER BY e.position`, args...)
	if err != nil {
		return nil, fmt.Errorf("children: %w", err)
	}
	defer rows.Close()
	var out []ChildRef
	for rows.Next() {
		var c ChildRef
		if c.Event, err = scanEventWith(rows, &c.Parent); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// scanEventWith scans a row of eventColumns followed by extra columns.
func scanEventWith(rows *sql.Rows, extra ...any) (Event, error) {
	var e Event
	var sk, prev, because, txnDev, txnID sql.NullString
	var js string
	dest := append([]any{&e.Position, &e.RoomID, &e.EventID, &e.Sender, &e.Type, &sk, &js, &prev, &because,
		&e.HistoryVisibility, &txnDev, &txnID, &e.OriginServerTS}, extra...)
	if err := rows.Scan(dest...); err != nil {
		return e, err
	}
	e.JSON = []byte(js)
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	if prev.Valid {
		e.PrevContent = []byte(prev.String)
	}
	if because.Valid {
		e.RedactedBecause = []byte(because.String)
	}
	e.TxnDeviceID, e.TxnID = txnDev.String, txnID.String
	return e, nil
}

// EventsByIDOrPosition loads non-soft-failed events named by ID or by
// stream position, in one query.
func (d *DB) EventsByIDOrPosition(ctx context.Context, ids []string, positions []int64) ([]Event, error) {
	if len(ids) == 0 && len(positions) == 0 {
		return nil, nil
	}
	var conds []string
	var args []any
	if len(ids) > 0 {
		conds = append(conds, "e.event_id IN ("+sqlutil.InList(1, len(ids))+")")
		args = stringArgs(args, ids)
	}
	if len(positions) > 0 {
		conds = append(conds, "e.position IN ("+sqlutil.InList(len(args)+1, len(positions))+")")
		for _, p := range positions {
			args = append(args, p)
		}
	}
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM syncapi_events e
		WHERE (`+strings.Join(conds, " OR ")+`) AND e.soft_failed = FALSE`, args...)
	if err != nil {
		return nil, fmt.Errorf("events by id: %w", err)
	}
	return scanEvents(rows)
}

// ThreadRoot is a thread root event with the position of its newest reply.
type ThreadRoot struct {
	Event
	LatestPosition int64
}

// ThreadsQuery selects a room's threads whose newest reply is at or before
// Before, newest activity first.
type ThreadsQuery struct {
	RoomID string
	Before int64
	Limit  int
	// Participant, when set, keeps only threads whose root or a reply was
	// sent by this user (client-server spec: include=participated).
	Participant string
}

// Threads returns the thread roots of q. Roots this server has not stored
// (or that soft-failed) are left out.
func (d *DB) Threads(ctx context.Context, q ThreadsQuery) ([]ThreadRoot, error) {
	args := []any{q.RoomID, q.Before, q.Limit}
	cond := ""
	if q.Participant != "" {
		args = append(args, q.Participant)
		cond = ` AND (e.sender = $4 OR EXISTS (SELECT 1 FROM syncapi_relations r
			WHERE r.parent_event_id = t.root_event_id AND r.room_id = t.room_id AND r.rel_type = 'm.thread' AND r.sender = $4))`
	}
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+`, t.latest_position FROM syncapi_threads t
		JOIN syncapi_events e ON e.event_id = t.root_event_id AND e.room_id = t.room_id
		WHERE t.room_id = $1 AND t.latest_position <= $2 AND e.soft_failed = FALSE`+cond+`
		ORDER BY t.latest_position DESC LIMIT $3`, args...)
	if err != nil {
		return nil, fmt.Errorf("threads: %w", err)
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var t ThreadRoot
		if t.Event, err = scanEventWith(rows, &t.LatestPosition); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
