package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Pusher is one of a user's push targets (client-server spec §"Pushers").
type Pusher struct {
	UserID            string
	AppID             string
	PushKey           string
	Kind              string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	// Data is the pusher's data object as the client gave it.
	Data []byte
	// URL is data.url, kept apart for grouping deliveries.
	URL       string
	PushKeyTS int64
}

// Pushers returns a user's pushers.
func (d *DB) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, url, pushkey_ts
		FROM syncapi_pushers WHERE user_id = $1 ORDER BY app_id, pushkey`, userID)
	if err != nil {
		return nil, fmt.Errorf("pushers: %w", err)
	}
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		p := Pusher{UserID: userID}
		var data string
		if err := rows.Scan(&p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.URL, &p.PushKeyTS); err != nil {
			return nil, err
		}
		p.Data = []byte(data)
		out = append(out, p)
	}
	return out, rows.Err()
}

// PutPusher creates or replaces a pusher. Unless appendOthers, pushers of
// other users with the same app ID and pushkey are removed (client-server
// spec §"POST /pushers/set", append).
func (d *DB) PutPusher(ctx context.Context, p Pusher, appendOthers bool) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if !appendOthers {
			if _, err := tx.ExecContext(ctx, `DELETE FROM syncapi_pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`,
				p.AppID, p.PushKey, p.UserID); err != nil {
				return fmt.Errorf("remove other pushers: %w", err)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_pushers
			(user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, url, pushkey_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
				device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang,
				data = excluded.data, url = excluded.url`,
			p.UserID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, string(p.Data), p.URL, p.PushKeyTS)
		if err != nil {
			return fmt.Errorf("put pusher: %w", err)
		}
		return nil
	})
}

// DeletePusher removes a user's pusher and its queued pushes; it reports
// whether there was one.
func (d *DB) DeletePusher(ctx context.Context, userID, appID, pushKey string) (bool, error) {
	var found bool
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM syncapi_pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		found = n > 0
		_, err = tx.ExecContext(ctx, `DELETE FROM syncapi_push_outbox WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("delete pusher: %w", err)
	}
	return found, nil
}

// QueuedPush is one notification waiting to reach one pusher.
type QueuedPush struct {
	ID       int64
	Attempts int
	Pusher   Pusher
	Notif    Notification
	// EventJSON is the notified event as stored, or nil if it is gone.
	EventJSON []byte
}

// DuePushes returns up to limit queued pushes whose next attempt is due at
// nowMS, oldest first. Pushes whose pusher or notification is gone are
// deleted on the way.
func (d *DB) DuePushes(ctx context.Context, nowMS int64, limit int) ([]QueuedPush, error) {
	if _, err := d.db.ExecContext(ctx, `DELETE FROM syncapi_push_outbox WHERE next_attempt_ms <= $1 AND (
		NOT EXISTS (SELECT 1 FROM syncapi_pushers p WHERE p.user_id = syncapi_push_outbox.user_id AND p.app_id = syncapi_push_outbox.app_id AND p.pushkey = syncapi_push_outbox.pushkey)
		OR NOT EXISTS (SELECT 1 FROM syncapi_push_notifications n WHERE n.id = syncapi_push_outbox.notification_id))`, nowMS); err != nil {
		return nil, fmt.Errorf("drop orphan pushes: %w", err)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT o.id, o.attempts,
			p.user_id, p.app_id, p.pushkey, p.kind, p.app_display_name, p.device_display_name, p.profile_tag, p.lang, p.data, p.url, p.pushkey_ts,
			n.id, n.room_id, n.event_id, n.position, n.thread_id, n.highlight, n.actions, n.ts, e.event_json
		FROM syncapi_push_outbox o
		JOIN syncapi_pushers p ON p.user_id = o.user_id AND p.app_id = o.app_id AND p.pushkey = o.pushkey
		JOIN syncapi_push_notifications n ON n.id = o.notification_id
		LEFT JOIN syncapi_events e ON e.event_id = n.event_id
		WHERE o.next_attempt_ms <= $1 ORDER BY o.id LIMIT $2`, nowMS, limit)
	if err != nil {
		return nil, fmt.Errorf("due pushes: %w", err)
	}
	defer rows.Close()
	var out []QueuedPush
	for rows.Next() {
		var q QueuedPush
		var data, actions string
		var ev sql.NullString
		p, n := &q.Pusher, &q.Notif
		if err := rows.Scan(&q.ID, &q.Attempts,
			&p.UserID, &p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &data, &p.URL, &p.PushKeyTS,
			&n.ID, &n.RoomID, &n.EventID, &n.Position, &n.ThreadID, &n.Highlight, &actions, &n.TS, &ev); err != nil {
			return nil, err
		}
		p.Data, n.Actions, n.UserID = []byte(data), []byte(actions), p.UserID
		if ev.Valid {
			q.EventJSON = []byte(ev.String)
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// NextPushDue returns when the earliest queued push is due (ms), or 0 if
// the queue is empty.
func (d *DB) NextPushDue(ctx context.Context) (int64, error) {
	var ms sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT MIN(next_attempt_ms) FROM syncapi_push_outbox`).Scan(&ms); err != nil {
		return 0, fmt.Errorf("next push: %w", err)
	}
	return ms.Int64, nil
}

// PushDone removes delivered (or abandoned) pushes.
func (d *DB) PushDone(ctx context.Context, ids ...int64) error {
	for _, id := range ids {
		if _, err := d.db.ExecContext(ctx, `DELETE FROM syncapi_push_outbox WHERE id = $1`, id); err != nil {
			return fmt.Errorf("push done: %w", err)
		}
	}
	return nil
}

// PushRetry records a failed attempt and when to try again.
func (d *DB) PushRetry(ctx context.Context, id int64, attempts int, nextMS int64) error {
	if _, err := d.db.ExecContext(ctx, `UPDATE syncapi_push_outbox SET attempts = $2, next_attempt_ms = $3 WHERE id = $1`, id, attempts, nextMS); err != nil {
		return fmt.Errorf("push retry: %w", err)
	}
	return nil
}
