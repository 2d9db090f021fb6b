package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Presence is a user's stored presence (client-server spec §"Presence").
type Presence struct {
	UserID          string
	Presence        string
	StatusMsg       *string
	LastActiveTS    int64
	CurrentlyActive bool
	Position        int64
}

// PutPresences stores a batch of presence updates in one transaction, each
// with a new presence stream position, and returns the last position.
func (d *DB) PutPresences(ctx context.Context, ps []Presence) (int64, error) {
	// One writer at a time, so that the recent-changes log is appended to
	// in position order before the position is published.
	d.presence.mu.Lock()
	defer d.presence.mu.Unlock()
	var pos int64
	stored := make([]Presence, len(ps))
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for i, p := range ps {
			var err error
			if pos, err = nextPosition(ctx, tx, StreamPresence); err != nil {
				return err
			}
			stored[i] = p
			stored[i].Position = pos
			var msg sql.NullString
			if p.StatusMsg != nil {
				msg = sql.NullString{String: *p.StatusMsg, Valid: true}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_presence (user_id, presence, status_msg, last_active_ts, currently_active, position)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg,
					last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active, position = excluded.position`,
				p.UserID, p.Presence, msg, p.LastActiveTS, p.CurrentlyActive, pos); err != nil {
				return fmt.Errorf("put presence: %w", err)
			}
		}
		return nil
	})
	if err == nil {
		d.presence.appendLocked(stored)
		advance(&d.pos.presence, pos)
	}
	return pos, err
}

const presenceColumns = `user_id, presence, status_msg, last_active_ts, currently_active, position`

func scanPresences(rows *sql.Rows) ([]Presence, error) {
	defer rows.Close()
	var out []Presence
	for rows.Next() {
		var p Presence
		var msg sql.NullString
		if err := rows.Scan(&p.UserID, &p.Presence, &msg, &p.LastActiveTS, &p.CurrentlyActive, &p.Position); err != nil {
			return nil, err
		}
		if msg.Valid {
			s := msg.String
			p.StatusMsg = &s
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// GetPresence returns a user's presence, or nil if none was ever stored.
func (d *DB) GetPresence(ctx context.Context, userID string) (*Presence, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+presenceColumns+` FROM syncapi_presence WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("get presence: %w", err)
	}
	ps, err := scanPresences(rows)
	if err != nil || len(ps) == 0 {
		return nil, err
	}
	return &ps[0], nil
}

// PresencesFor returns the stored presence of the given users.
func (d *DB) PresencesFor(ctx context.Context, userIDs []string) ([]Presence, error) {
	var out []Presence
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		rows, err := d.db.QueryContext(ctx, `SELECT `+presenceColumns+` FROM syncapi_presence WHERE user_id IN (`+sqlutil.InList(1, len(chunk))+`)`,
			stringArgs(nil, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("presences: %w", err)
		}
		ps, err := scanPresences(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// PresenceSince returns presence changes in (after, upto], at most limit of
// them. With skipOffline, users whose presence is offline are left out (an
// initial sync need not list them: offline is what clients assume).
func (d *DB) PresenceSince(ctx context.Context, after, upto int64, skipOffline bool, limit int) ([]Presence, error) {
	q := `SELECT ` + presenceColumns + ` FROM syncapi_presence WHERE position > $1 AND position <= $2`
	if skipOffline {
		q += ` AND presence <> 'offline'`
	}
	rows, err := d.db.QueryContext(ctx, q+` ORDER BY position LIMIT $3`, after, upto, limit)
	if err != nil {
		return nil, fmt.Errorf("presence since: %w", err)
	}
	return scanPresences(rows)
}

// PresencePosition is the newest presence stream position.
func (d *DB) PresencePosition(ctx context.Context) (int64, error) {
	var pos int64
	err := d.db.QueryRowContext(ctx, `SELECT position FROM syncapi_stream_positions WHERE stream = 'presence'`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("presence position: %w", err)
	}
	return pos, nil
}

// SharesRoom says whether two users are both joined to some room.
func (d *DB) SharesRoom(ctx context.Context, a, b string) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM syncapi_current_state x
		JOIN syncapi_current_state y ON y.room_id = x.room_id AND y.type = 'm.room.member' AND y.state_key = $2 AND y.membership = 'join'
		WHERE x.type = 'm.room.member' AND x.state_key = $1 AND x.membership = 'join'`, a, b).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("shares room: %w", err)
	}
	return n > 0, nil
}

// execer is what both *sql.DB and *sql.Tx offer for writes.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// SetDirectoryEntry records a user's latest display name and avatar, as
// seen in a member event, for the user directory. It runs in the caller's
// transaction (the event's own).
func SetDirectoryEntry(ctx context.Context, tx execer, userID, displayName, avatarURL string) error {
	search := strings.ToLower(userID + " " + displayName)
	_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_user_directory (user_id, display_name, avatar_url, search_text)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url, search_text = excluded.search_text`,
		userID, displayName, avatarURL, search)
	if err != nil {
		return fmt.Errorf("user directory: %w", err)
	}
	return nil
}

// SetRoomPublic records whether a room's join rule is public, in the
// caller's transaction.
func SetRoomPublic(ctx context.Context, tx execer, roomID string, public bool) error {
	var err error
	if public {
		_, err = tx.ExecContext(ctx, `INSERT INTO syncapi_public_rooms (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING`, roomID)
	} else {
		_, err = tx.ExecContext(ctx, `DELETE FROM syncapi_public_rooms WHERE room_id = $1`, roomID)
	}
	if err != nil {
		return fmt.Errorf("public room: %w", err)
	}
	return nil
}

// JoinedRoomsOfAny lists the rooms any of users is joined to, for waking
// the users who share a room with them.
func (d *DB) JoinedRoomsOfAny(ctx context.Context, users []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		rows, err := d.db.QueryContext(ctx, `SELECT DISTINCT room_id FROM syncapi_current_state
			WHERE type = 'm.room.member' AND membership = 'join' AND state_key IN (`+sqlutil.InList(1, len(chunk))+`)`, stringArgs(nil, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("joined rooms: %w", err)
		}
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				rows.Close()
				return nil, err
			}
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TouchPresence refreshes last_active_ts of users without a new stream
// position: activity alone is not news worth waking anyone for.
func (d *DB) TouchPresence(ctx context.Context, users []string, ts int64) error {
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		if _, err := d.db.ExecContext(ctx, `UPDATE syncapi_presence SET last_active_ts = $1 WHERE user_id IN (`+sqlutil.InList(2, len(chunk))+`)`,
			stringArgs([]any{ts}, chunk)...); err != nil {
			return fmt.Errorf("touch presence: %w", err)
		}
	}
	d.presence.touch(users, ts)
	return nil
}

// DirectoryEntry is one user directory result.
type DirectoryEntry struct {
	UserID      string
	DisplayName string
	AvatarURL   string
}

// SearchDirectory finds users whose ID or display name contains term
// (case-insensitively) and who share a room with searcher or are joined to
// a public room (client-server spec §"User Directory"). It returns up to
// limit+1 entries so the caller can tell whether the result was limited.
func (d *DB) SearchDirectory(ctx context.Context, searcher, term string, limit int) ([]DirectoryEntry, error) {
	esc := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(strings.ToLower(term))
	rows, err := d.db.QueryContext(ctx, `SELECT d.user_id, d.display_name, d.avatar_url FROM syncapi_user_directory d
		WHERE d.search_text LIKE $2 ESCAPE '\' AND EXISTS (
			SELECT 1 FROM syncapi_current_state m
			WHERE m.type = 'm.room.member' AND m.state_key = d.user_id AND m.membership = 'join' AND (
				m.room_id IN (SELECT room_id FROM syncapi_public_rooms)
				OR m.room_id IN (SELECT s.room_id FROM syncapi_current_state s
					WHERE s.type = 'm.room.member' AND s.state_key = $1 AND s.membership = 'join')))
		ORDER BY d.user_id LIMIT $3`, searcher, "%"+esc+"%", limit+1)
	if err != nil {
		return nil, fmt.Errorf("search directory: %w", err)
	}
	defer rows.Close()
	var out []DirectoryEntry
	for rows.Next() {
		var e DirectoryEntry
		if err := rows.Scan(&e.UserID, &e.DisplayName, &e.AvatarURL); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
