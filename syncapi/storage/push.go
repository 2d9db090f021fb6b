package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// StreamPresence is the presence counter in syncapi_stream_positions.
const StreamPresence = "presence"

// pushMigrations are the tables of push rules, notifications, pushers,
// presence and the user directory. They are a separate migration list
// (component "syncapi_push") so that they evolve independently of the core
// sync tables.
var pushMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE syncapi_push_rules (
	user_id TEXT PRIMARY KEY,
	rules TEXT NOT NULL,
	version BIGINT NOT NULL
);
CREATE TABLE syncapi_push_notifications (
	id BIGSERIAL PRIMARY KEY,
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	position BIGINT NOT NULL,
	thread_id TEXT NOT NULL,
	highlight BOOLEAN NOT NULL,
	actions TEXT NOT NULL,
	ts BIGINT NOT NULL
);
CREATE INDEX syncapi_push_notifications_user ON syncapi_push_notifications (user_id, id);
CREATE INDEX syncapi_push_notifications_room ON syncapi_push_notifications (user_id, room_id, position);
CREATE INDEX syncapi_push_notifications_position ON syncapi_push_notifications (position);
CREATE INDEX syncapi_push_notifications_ts ON syncapi_push_notifications (ts);
CREATE TABLE syncapi_push_counts (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	notifications BIGINT NOT NULL,
	highlights BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, thread_id)
);
CREATE TABLE syncapi_pushers (
	user_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	kind TEXT NOT NULL,
	app_display_name TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag TEXT NOT NULL,
	lang TEXT NOT NULL,
	data TEXT NOT NULL,
	url TEXT NOT NULL,
	pushkey_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX syncapi_pushers_key ON syncapi_pushers (app_id, pushkey);
CREATE TABLE syncapi_push_outbox (
	id BIGSERIAL PRIMARY KEY,
	notification_id BIGINT NOT NULL,
	user_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	attempts INTEGER NOT NULL,
	next_attempt_ms BIGINT NOT NULL
);
CREATE INDEX syncapi_push_outbox_due ON syncapi_push_outbox (next_attempt_ms, id);
CREATE TABLE syncapi_presence (
	user_id TEXT PRIMARY KEY,
	presence TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts BIGINT NOT NULL,
	currently_active BOOLEAN NOT NULL,
	position BIGINT NOT NULL
);
CREATE INDEX syncapi_presence_position ON syncapi_presence (position);
INSERT INTO syncapi_stream_positions (stream, position) VALUES ('presence', 0) ON CONFLICT (stream) DO NOTHING;
CREATE TABLE syncapi_user_directory (
	user_id TEXT PRIMARY KEY,
	display_name TEXT NOT NULL,
	avatar_url TEXT NOT NULL,
	search_text TEXT NOT NULL
);
CREATE TABLE syncapi_public_rooms (
	room_id TEXT PRIMARY KEY
);
`},
}

// migratePush runs the push/presence/directory migrations.
func migratePush(ctx context.Context, db *sqlutil.DB) error {
	return db.Migrate(ctx, "syncapi_push", pushMigrations)
}

// ErrConflict says a read-modify-write lost a race; the caller retries.
var ErrConflict = errors.New("concurrent update")

// PushRules returns a user's stored push rule customisations (JSON) and
// their version; nil and 0 when the user has none.
func (d *DB) PushRules(ctx context.Context, userID string) ([]byte, int64, error) {
	var rules string
	var version int64
	err := d.db.QueryRowContext(ctx, `SELECT rules, version FROM syncapi_push_rules WHERE user_id = $1`, userID).Scan(&rules, &version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("push rules: %w", err)
	}
	return []byte(rules), version, nil
}

// PushRulesFor returns the stored customisations of several users, keyed by
// user; users without any are absent.
func (d *DB) PushRulesFor(ctx context.Context, userIDs []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(userIDs))
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		rows, err := d.db.QueryContext(ctx, `SELECT user_id, rules FROM syncapi_push_rules WHERE user_id IN (`+sqlutil.InList(1, len(chunk))+`)`,
			stringArgs(nil, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("push rules: %w", err)
		}
		for rows.Next() {
			var u, r string
			if err := rows.Scan(&u, &r); err != nil {
				rows.Close()
				return nil, err
			}
			out[u] = []byte(r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PutPushRules replaces a user's customisations if their version is still
// oldVersion (ErrConflict otherwise) and, in the same transaction, stores
// the merged ruleset as the m.push_rules account data the client sees in
// /sync (client-server spec §"Push Rules: Events").
func (d *DB) PutPushRules(ctx context.Context, userID string, oldVersion int64, rules, accountData []byte) error {
	var pos int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var res sql.Result
		var err error
		if oldVersion == 0 {
			res, err = tx.ExecContext(ctx, `INSERT INTO syncapi_push_rules (user_id, rules, version) VALUES ($1, $2, 1)
				ON CONFLICT (user_id) DO NOTHING`, userID, string(rules))
		} else {
			res, err = tx.ExecContext(ctx, `UPDATE syncapi_push_rules SET rules = $2, version = version + 1
				WHERE user_id = $1 AND version = $3`, userID, string(rules), oldVersion)
		}
		if err != nil {
			return fmt.Errorf("put push rules: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrConflict
		}
		if pos, err = nextPosition(ctx, tx, StreamAccountData); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO syncapi_account_data (user_id, room_id, type, content, position)
			VALUES ($1, '', 'm.push_rules', $2, $3)
			ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, position = excluded.position`,
			userID, string(accountData), pos)
		return err
	})
	if err == nil {
		advance(&d.pos.accountData, pos)
	}
	return err
}

// Notification is one event a user was notified about.
type Notification struct {
	ID        int64
	UserID    string
	RoomID    string
	EventID   string
	Position  int64
	ThreadID  string
	Highlight bool
	Actions   []byte
	TS        int64
}

// InsertNotifications stores the notifications of one event inside the
// event's own transaction, adds them to the per-(user, room, thread)
// counts, and queues a push for every pusher of the notified users.
// Because it runs in StoreEvent's transaction, the counts commit with the
// event (client-server spec §"Push Notifications", server behaviour: "the
// updated notification count ... MUST appear in the same /sync response as
// the event itself").
func InsertNotifications(ctx context.Context, tx *sql.Tx, position int64, ns []Notification, nowMS int64) error {
	if len(ns) == 0 {
		return nil
	}
	// SQLite resolves each numbered parameter with a linear search of the
	// statement's parameters, so binding costs grow with the square of
	// their number: 50 rows (400 parameters) a statement keeps that below
	// the cost of the rows themselves (a 200-row chunk spent a quarter of
	// the server's CPU there with 1,000 members notified per message).
	const cols, rowsPerInsert = 8, 50
	for start := 0; start < len(ns); start += rowsPerInsert {
		chunk := ns[start:min(start+rowsPerInsert, len(ns))]
		var vals, countVals []string
		args := make([]any, 0, len(chunk)*cols)
		countArgs := make([]any, 0, len(chunk)*5)
		for i, n := range chunk {
			vals = append(vals, "("+sqlutil.InList(i*cols+1, cols)+")")
			args = append(args, n.UserID, n.RoomID, n.EventID, position, n.ThreadID, n.Highlight, string(n.Actions), n.TS)
			countVals = append(countVals, "("+sqlutil.InList(i*5+1, 5)+")")
			h := 0
			if n.Highlight {
				h = 1
			}
			countArgs = append(countArgs, n.UserID, n.RoomID, n.ThreadID, 1, h)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_push_notifications
			(user_id, room_id, event_id, position, thread_id, highlight, actions, ts) VALUES `+strings.Join(vals, ", "), args...); err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_push_counts (user_id, room_id, thread_id, notifications, highlights)
			VALUES `+strings.Join(countVals, ", ")+`
			ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET
				notifications = syncapi_push_counts.notifications + excluded.notifications,
				highlights = syncapi_push_counts.highlights + excluded.highlights`, countArgs...); err != nil {
			return fmt.Errorf("count notifications: %w", err)
		}
	}
	// One statement queues every pusher of every notified user: no
	// per-member round trip, and only users with pushers cost anything.
	if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_push_outbox (notification_id, user_id, app_id, pushkey, attempts, next_attempt_ms)
		SELECT n.id, p.user_id, p.app_id, p.pushkey, 0, $2
		FROM syncapi_push_notifications n JOIN syncapi_pushers p ON p.user_id = n.user_id
		WHERE n.position = $1 AND p.kind = 'http'`, position, nowMS); err != nil {
		return fmt.Errorf("queue pushes: %w", err)
	}
	return nil
}

// ClearCounts resets a user's counts in a room: they sent an event there,
// which reads everything before it (client-server spec §"Marking
// notifications as read").
func ClearCounts(ctx context.Context, tx *sql.Tx, userID, roomID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM syncapi_push_counts WHERE user_id = $1 AND room_id = $2`, userID, roomID)
	return err
}

// ReadPositions returns, for a user in a room, the stream position of the
// event their newest read receipt (m.read or m.read.private, whichever is
// further) points at, per receipt thread ("" for unthreaded receipts).
func (d *DB) ReadPositions(ctx context.Context, userID, roomID string) (map[string]int64, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT r.thread_id, MAX(e.position) FROM syncapi_receipts r
		JOIN syncapi_events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private')
		GROUP BY r.thread_id`, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("read positions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var t string
		var p int64
		if err := rows.Scan(&t, &p); err != nil {
			return nil, err
		}
		out[t] = p
	}
	return out, rows.Err()
}

// IsRead says whether a notification in thread at position is covered by
// the read positions of ReadPositions: an unthreaded receipt reads every
// thread, a threaded one only its own (client-server spec §"Threaded read
// receipts").
func IsRead(read map[string]int64, threadID string, position int64) bool {
	return position <= read[""] || position <= read[threadID]
}

// maxRecount bounds the rows one receipt recounts; a user with more unread
// notifications than this in one room sees the count stop there.
const maxRecount = 10000

// RecountRoom recomputes a user's counts in a room from their notifications
// and read receipts, after the user moved a receipt.
func (d *DB) RecountRoom(ctx context.Context, userID, roomID string) error {
	read, err := d.ReadPositions(ctx, userID, roomID)
	if err != nil {
		return err
	}
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		// Every thread is read at least up to the unthreaded receipt, so
		// only later rows can still count.
		rows, err := tx.QueryContext(ctx, `SELECT thread_id, position, highlight FROM syncapi_push_notifications
			WHERE user_id = $1 AND room_id = $2 AND position > $3 ORDER BY position LIMIT $4`, userID, roomID, read[""], maxRecount)
		if err != nil {
			return fmt.Errorf("recount: %w", err)
		}
		type count struct{ n, h int64 }
		counts := map[string]*count{}
		for rows.Next() {
			var t string
			var p int64
			var h bool
			if err := rows.Scan(&t, &p, &h); err != nil {
				rows.Close()
				return err
			}
			if IsRead(read, t, p) {
				continue
			}
			c := counts[t]
			if c == nil {
				c = &count{}
				counts[t] = c
			}
			c.n++
			if h {
				c.h++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM syncapi_push_counts WHERE user_id = $1 AND room_id = $2`, userID, roomID); err != nil {
			return err
		}
		for t, c := range counts {
			if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_push_counts (user_id, room_id, thread_id, notifications, highlights)
				VALUES ($1, $2, $3, $4, $5)`, userID, roomID, t, c.n, c.h); err != nil {
				return err
			}
		}
		return nil
	})
}

// ThreadCount is a user's unread counts in one thread of a room ("main"
// for the main timeline).
type ThreadCount struct {
	RoomID        string
	ThreadID      string
	Notifications int64
	Highlights    int64
}

// TotalUnread is a user's unread notification count over all rooms, for
// the counts.unread field of a push.
func (d *DB) TotalUnread(ctx context.Context, userID string) (int64, error) {
	var n int64
	err := d.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(notifications), 0) FROM syncapi_push_counts WHERE user_id = $1`, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("total unread: %w", err)
	}
	return n, nil
}

// Notifications returns up to limit of a user's notifications with ID
// below before (0: from the newest), newest first.
func (d *DB) Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	q := `SELECT id, room_id, event_id, position, thread_id, highlight, actions, ts FROM syncapi_push_notifications
		WHERE user_id = $1 AND ($2 = 0 OR id < $2)`
	if onlyHighlight {
		q += ` AND highlight = TRUE`
	}
	rows, err := d.db.QueryContext(ctx, q+` ORDER BY id DESC LIMIT $3`, userID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("notifications: %w", err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n := Notification{UserID: userID}
		var actions string
		if err := rows.Scan(&n.ID, &n.RoomID, &n.EventID, &n.Position, &n.ThreadID, &n.Highlight, &actions, &n.TS); err != nil {
			return nil, err
		}
		n.Actions = []byte(actions)
		out = append(out, n)
	}
	return out, rows.Err()
}

// PruneNotifications deletes notifications older than beforeMS (and their
// queued pushes); counts are left alone.
func (d *DB) PruneNotifications(ctx context.Context, beforeMS int64) error {
	_, err := d.db.ExecContext(ctx, `DELETE FROM syncapi_push_notifications WHERE ts < $1`, beforeMS)
	if err != nil {
		return fmt.Errorf("prune notifications: %w", err)
	}
	return nil
}
