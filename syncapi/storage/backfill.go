package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Backfilled history (syncapi/backfill.go): events from before the
// earliest event this server has of a room, fetched from other servers
// when a client pages back that far. They are ordered by depth, not by
// stream position (their positions would come after newer events), and
// carry the history visibility in force at each, worked out walking
// backwards from the earliest stored event.
var backfillMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE syncapi_backfill_events (
	id BIGSERIAL PRIMARY KEY,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL UNIQUE,
	depth BIGINT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT,
	membership TEXT,
	new_visibility TEXT,
	event_json TEXT NOT NULL,
	history_visibility TEXT NOT NULL,
	origin_server_ts BIGINT NOT NULL
);
CREATE INDEX syncapi_backfill_events_room_depth ON syncapi_backfill_events (room_id, depth, id);
CREATE INDEX syncapi_backfill_events_member ON syncapi_backfill_events (room_id, state_key, type);
CREATE TABLE syncapi_backfill_rooms (
	room_id TEXT PRIMARY KEY,
	oldest_visibility TEXT NOT NULL,
	complete BOOLEAN NOT NULL,
	retry_after_ts BIGINT NOT NULL
);
`},
}

// MigrateBackfill creates the backfill tables; it runs after Open.
func (d *DB) MigrateBackfill(ctx context.Context) error {
	return d.db.Migrate(ctx, "syncapi_backfill", backfillMigrations)
}

// VisibilityUnknown marks a backfilled event whose history visibility is
// not known yet: it is between an m.room.history_visibility change and the
// older event that set the previous value, which a later page will reach.
// Readers treat it as "joined".
const VisibilityUnknown = ""

// BackfillState is what is known of a room's backfilled history.
type BackfillState struct {
	// Started: some history was stored (or the room was found complete).
	Started bool
	// Complete: the room's creation was reached, or the servers had
	// nothing older.
	Complete bool
	// RetryAfterMS: a failed fetch is not retried before this time.
	RetryAfterMS int64
	// Oldest are the event IDs at the lowest stored depth (at most 10).
	Oldest []string
}

// BackfillRoomState returns the room's backfill state.
func (d *DB) BackfillRoomState(ctx context.Context, roomID string) (BackfillState, error) {
	var st BackfillState
	var oldestVis string
	err := d.db.QueryRowContext(ctx, `SELECT oldest_visibility, complete, retry_after_ts FROM syncapi_backfill_rooms WHERE room_id = $1`, roomID).
		Scan(&oldestVis, &st.Complete, &st.RetryAfterMS)
	if errors.Is(err, sql.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("backfill room: %w", err)
	}
	st.Started = true
	rows, err := d.db.QueryContext(ctx, `SELECT event_id FROM syncapi_backfill_events WHERE room_id = $1
		AND depth = (SELECT MIN(depth) FROM syncapi_backfill_events WHERE room_id = $1) LIMIT 10`, roomID)
	if err != nil {
		return st, fmt.Errorf("oldest backfilled: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return st, err
		}
		st.Oldest = append(st.Oldest, id)
	}
	return st, rows.Err()
}

// EarliestEvent returns the room's oldest timeline event (by stream
// position) that is shown to clients, and whether the room's creation event
// is one (then there is nothing to backfill). Nil if there is none.
func (d *DB) EarliestEvent(ctx context.Context, roomID string) (*Event, bool, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM syncapi_events e
		WHERE e.room_id = $1 AND e.soft_failed = FALSE ORDER BY e.position ASC LIMIT 1`, roomID)
	if err != nil {
		return nil, false, fmt.Errorf("earliest event: %w", err)
	}
	evs, err := scanEvents(rows)
	if err != nil || len(evs) == 0 {
		return nil, false, err
	}
	var createShown bool
	err = d.db.QueryRowContext(ctx, `SELECT NOT e.soft_failed FROM syncapi_current_state s
		JOIN syncapi_events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type = 'm.room.create' AND s.state_key = ''`, roomID).Scan(&createShown)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("create event: %w", err)
	}
	return &evs[0], createShown, nil
}

// VisibilityBefore is the history visibility in force just before the
// event at position pos: the previous value of the first visibility change
// stored after it, else the room's current value, else the default.
func (d *DB) VisibilityBefore(ctx context.Context, roomID string, pos int64) (string, error) {
	var prev sql.NullString
	err := d.db.QueryRowContext(ctx, `SELECT e.prev_content FROM syncapi_events e
		WHERE e.room_id = $1 AND e.position >= $2 AND e.type = 'm.room.history_visibility' AND e.state_key = ''
		AND e.soft_failed = FALSE ORDER BY e.position ASC LIMIT 1`, roomID, pos).Scan(&prev)
	switch {
	case err == nil:
		if !prev.Valid {
			return DefaultHistoryVisibility, nil
		}
		return normaliseVisibility(historyVisibilityOf([]byte(prev.String))), nil
	case !errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("visibility change: %w", err)
	}
	var js string
	err = d.db.QueryRowContext(ctx, `SELECT e.event_json FROM syncapi_current_state s
		JOIN syncapi_events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type = 'm.room.history_visibility' AND s.state_key = ''`, roomID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return DefaultHistoryVisibility, nil
	}
	if err != nil {
		return "", fmt.Errorf("history visibility: %w", err)
	}
	return normaliseVisibility(historyVisibilityOf(contentOf([]byte(js)))), nil
}

func historyVisibilityOf(content []byte) string {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(content, &c)
	return c.HistoryVisibility
}

// BackfilledEvent is one event to store as backfilled history.
type BackfilledEvent struct {
	EventID        string
	Depth          int64
	Sender         string
	Type           string
	StateKey       *string
	JSON           []byte
	OriginServerTS int64
	// Membership of an m.room.member event; HistoryVisibility of an
	// m.room.history_visibility event.
	Membership        string
	HistoryVisibility string
	// Create is true for the room's m.room.create event: nothing is older.
	Create bool
}

// StoreBackfill adds fetched history of a room, in one transaction.
// Events already shown in the room's timeline, or already backfilled, are
// skipped. startVisibility is the visibility before the room's earliest
// timeline event, used when the room has no backfilled history yet. With
// complete (or when the batch holds the creation event) the room is marked
// as having nothing older. It returns how many events were new.
func (d *DB) StoreBackfill(ctx context.Context, roomID, startVisibility string, evs []BackfilledEvent, complete bool) (int, error) {
	evs = append([]BackfilledEvent(nil), evs...)
	sort.SliceStable(evs, func(i, j int) bool {
		if evs[i].Depth != evs[j].Depth {
			return evs[i].Depth > evs[j].Depth
		}
		return evs[i].EventID > evs[j].EventID
	})
	stored := 0
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		stored = 0
		vis := startVisibility
		err := tx.QueryRowContext(ctx, `SELECT oldest_visibility FROM syncapi_backfill_rooms WHERE room_id = $1`, roomID).Scan(&vis)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("backfill room: %w", err)
		}
		var minDepth sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MIN(depth) FROM syncapi_backfill_events WHERE room_id = $1`, roomID).Scan(&minDepth); err != nil {
			return fmt.Errorf("oldest backfilled: %w", err)
		}
		for _, ev := range evs {
			if ev.Create {
				complete = true
			}
			// Only history older than what is stored extends the walk;
			// anything else was fetched before or is already shown.
			if minDepth.Valid && ev.Depth >= minDepth.Int64 {
				continue
			}
			var shown bool
			err := tx.QueryRowContext(ctx, `SELECT NOT soft_failed FROM syncapi_events WHERE event_id = $1`, ev.EventID).Scan(&shown)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("known event: %w", err)
			}
			if shown {
				continue
			}
			own := vis
			isVisibilityChange := ev.Type == "m.room.history_visibility" && ev.StateKey != nil && *ev.StateKey == ""
			if isVisibilityChange {
				// This change set the visibility of everything after it
				// that is still unknown; what was in force before it is
				// unknown until an older change (or the creation) is found.
				if err := resolveVisibility(ctx, tx, roomID, normaliseVisibility(ev.HistoryVisibility)); err != nil {
					return err
				}
				own = VisibilityUnknown
				vis = VisibilityUnknown
			}
			var stateKey, membership, newVis sql.NullString
			if ev.StateKey != nil {
				stateKey = sql.NullString{String: *ev.StateKey, Valid: true}
			}
			if ev.Membership != "" {
				membership = sql.NullString{String: ev.Membership, Valid: true}
			}
			if isVisibilityChange {
				newVis = sql.NullString{String: normaliseVisibility(ev.HistoryVisibility), Valid: true}
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO syncapi_backfill_events
				(room_id, event_id, depth, sender, type, state_key, membership, new_visibility, event_json, history_visibility, origin_server_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (event_id) DO NOTHING`,
				roomID, ev.EventID, ev.Depth, ev.Sender, ev.Type, stateKey, membership, newVis, string(ev.JSON), own, ev.OriginServerTS)
			if err != nil {
				return fmt.Errorf("store backfilled %s: %w", ev.EventID, err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				stored++
			}
		}
		if complete {
			// Before the first visibility event the spec's default applies.
			if err := resolveVisibility(ctx, tx, roomID, DefaultHistoryVisibility); err != nil {
				return err
			}
			vis = DefaultHistoryVisibility
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO syncapi_backfill_rooms (room_id, oldest_visibility, complete, retry_after_ts)
			VALUES ($1, $2, $3, 0) ON CONFLICT (room_id) DO UPDATE SET oldest_visibility = excluded.oldest_visibility,
			complete = excluded.complete, retry_after_ts = 0`, roomID, vis, complete)
		return err
	})
	return stored, err
}

// resolveVisibility gives the still unknown backfilled events of a room
// the visibility value that was in force for them; the visibility change
// among them (at most one: the newest change older than them all) gets the
// more permissive of that and its own new value, so those who could see
// either side can see the change itself.
func resolveVisibility(ctx context.Context, tx *sql.Tx, roomID, value string) error {
	var changeID string
	var changeNew sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT event_id, new_visibility FROM syncapi_backfill_events
		WHERE room_id = $1 AND history_visibility = '' AND new_visibility IS NOT NULL`, roomID).Scan(&changeID, &changeNew)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("pending visibility change: %w", err)
	}
	if changeID != "" {
		own := value
		if visibilityRank(changeNew.String) < visibilityRank(value) {
			own = normaliseVisibility(changeNew.String)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE syncapi_backfill_events SET history_visibility = $2 WHERE event_id = $1`, changeID, own); err != nil {
			return fmt.Errorf("resolve visibility change: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE syncapi_backfill_events SET history_visibility = $2
		WHERE room_id = $1 AND history_visibility = ''`, roomID, value); err != nil {
		return fmt.Errorf("resolve visibility: %w", err)
	}
	return nil
}

// MarkBackfillFailed records a failed fetch: none is tried again before
// retryAfterMS.
func (d *DB) MarkBackfillFailed(ctx context.Context, roomID, startVisibility string, retryAfterMS int64) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO syncapi_backfill_rooms (room_id, oldest_visibility, complete, retry_after_ts)
		VALUES ($1, $2, FALSE, $3) ON CONFLICT (room_id) DO UPDATE SET retry_after_ts = excluded.retry_after_ts`,
		roomID, startVisibility, retryAfterMS)
	if err != nil {
		return fmt.Errorf("mark backfill failed: %w", err)
	}
	return nil
}

// BackfillCursor is a place in a room's backfilled history: events are
// ordered by (depth, id).
type BackfillCursor struct {
	Depth int64
	ID    int64
}

// BackfillRow is a backfilled event with its place.
type BackfillRow struct {
	Event
	Cursor     BackfillCursor
	Membership string
}

// BackfillEvents returns up to limit backfilled events of a room strictly
// before (backwards, newest first) or after (oldest first) the cursor; a
// nil cursor starts at the newest (backwards) or oldest (forwards) end.
func (d *DB) BackfillEvents(ctx context.Context, roomID string, from *BackfillCursor, backwards bool, limit int) ([]BackfillRow, error) {
	args := []any{roomID}
	where := []string{"room_id = $1"}
	op, order := ">", "ASC"
	if backwards {
		op, order = "<", "DESC"
	}
	if from != nil {
		args = append(args, from.Depth, from.ID)
		where = append(where, "(depth "+op+" $2 OR (depth = $2 AND id "+op+" $3))")
	}
	args = append(args, limit)
	rows, err := d.db.QueryContext(ctx, `SELECT id, depth, event_id, sender, type, state_key, membership, event_json, history_visibility, origin_server_ts
		FROM syncapi_backfill_events WHERE `+strings.Join(where, " AND ")+
		` ORDER BY depth `+order+`, id `+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("backfilled events: %w", err)
	}
	defer rows.Close()
	var out []BackfillRow
	for rows.Next() {
		r := BackfillRow{Event: Event{RoomID: roomID}}
		var sk, membership sql.NullString
		var js string
		if err := rows.Scan(&r.Cursor.ID, &r.Cursor.Depth, &r.EventID, &r.Sender, &r.Type, &sk, &membership, &js, &r.HistoryVisibility, &r.OriginServerTS); err != nil {
			return nil, err
		}
		r.JSON = []byte(js)
		if sk.Valid {
			s := sk.String
			r.StateKey = &s
		}
		r.Membership = membership.String
		out = append(out, r)
	}
	return out, rows.Err()
}

// BackfilledMemberships returns a user's member events in a room's
// backfilled history, newest first.
func (d *DB) BackfilledMemberships(ctx context.Context, roomID, userID string) ([]BackfillRow, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT id, depth, event_id, COALESCE(membership, '') FROM syncapi_backfill_events
		WHERE room_id = $1 AND state_key = $2 AND type = 'm.room.member' ORDER BY depth DESC, id DESC`, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("backfilled memberships: %w", err)
	}
	defer rows.Close()
	var out []BackfillRow
	for rows.Next() {
		var r BackfillRow
		if err := rows.Scan(&r.Cursor.ID, &r.Cursor.Depth, &r.EventID, &r.Membership); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
