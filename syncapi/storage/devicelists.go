package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Device lists (client-server spec §"Tracking the device list for a
// user"): the sync API records, per user, the position at which the
// user's device or cross-signing keys last changed, numbered on its own
// counter stream "device_lists". One row per user keeps the table as
// large as the set of users with keys: a change after a client's "to"
// position is reported at its next sync instead.

// StreamDeviceLists is the counter stream of device-list changes.
const StreamDeviceLists = "device_lists"

var deviceListMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE syncapi_device_list_changes (
	user_id TEXT PRIMARY KEY,
	position BIGINT NOT NULL,
	stream_id BIGINT NOT NULL
);
CREATE INDEX syncapi_device_list_changes_position ON syncapi_device_list_changes (position);
INSERT INTO syncapi_stream_positions (stream, position) VALUES ('device_lists', 0);
`},
}

// MigrateDeviceLists creates the device-list tables; it runs after Open.
func (d *DB) MigrateDeviceLists(ctx context.Context) error {
	return d.db.Migrate(ctx, "syncapi_device_lists", deviceListMigrations)
}

// RecordDeviceListChange notes that userID's keys changed with the user's
// update number streamID. A redelivered or older update (streamID not
// above the stored one) changes nothing and returns applied false.
func (d *DB) RecordDeviceListChange(ctx context.Context, userID string, streamID int64) (applied bool, err error) {
	var pos int64
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var stored int64
		err := tx.QueryRowContext(ctx, `SELECT stream_id FROM syncapi_device_list_changes WHERE user_id = $1`, userID).Scan(&stored)
		if err == nil && stored >= streamID {
			return nil
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read device-list change: %w", err)
		}
		if pos, err = nextPosition(ctx, tx, StreamDeviceLists); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `
INSERT INTO syncapi_device_list_changes (user_id, position, stream_id) VALUES ($1, $2, $3)
ON CONFLICT (user_id) DO UPDATE SET position = excluded.position, stream_id = excluded.stream_id`, userID, pos, streamID); err != nil {
			return fmt.Errorf("record device-list change: %w", err)
		}
		applied = true
		return nil
	})
	if err == nil && applied {
		advance(&d.pos.deviceLists, pos)
	}
	return applied, err
}

// DeviceListPosition is the newest position of the device-list stream.
func (d *DB) DeviceListPosition(ctx context.Context) (int64, error) {
	var pos int64
	err := d.db.QueryRowContext(ctx, `SELECT position FROM syncapi_stream_positions WHERE stream = $1`, StreamDeviceLists).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("device-list position: %w", err)
	}
	return pos, nil
}

// DeviceListChangesSharing returns the users whose keys changed in
// (after, upto] and who are userID or share a joined room with userID.
func (d *DB) DeviceListChangesSharing(ctx context.Context, userID string, after, upto int64) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `
SELECT c.user_id FROM syncapi_device_list_changes c
WHERE c.position > $2 AND c.position <= $3 AND (c.user_id = $1 OR EXISTS (
	SELECT 1 FROM syncapi_current_state a JOIN syncapi_current_state b ON b.room_id = a.room_id
	WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'
		AND b.type = 'm.room.member' AND b.state_key = c.user_id AND b.membership = 'join'))
ORDER BY c.user_id`, userID, after, upto)
	if err != nil {
		return nil, fmt.Errorf("device-list changes for %s: %w", userID, err)
	}
	return scanStrings(rows)
}

// inListChunk bounds the parameters of one IN (...) list.
const inListChunk = 500

// UsersSharingRoom returns those of candidates who share a joined room
// with userID now.
func (d *DB) UsersSharingRoom(ctx context.Context, userID string, candidates []string) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(candidates); start += inListChunk {
		chunk := candidates[start:min(start+inListChunk, len(candidates))]
		rows, err := d.db.QueryContext(ctx, `
SELECT DISTINCT b.state_key FROM syncapi_current_state a JOIN syncapi_current_state b ON b.room_id = a.room_id
WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'
	AND b.type = 'm.room.member' AND b.membership = 'join' AND b.state_key IN (`+sqlutil.InList(2, len(chunk))+`)`,
			stringArgs([]any{userID}, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("users sharing a room with %s: %w", userID, err)
		}
		users, err := scanStrings(rows)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			out[u] = true
		}
	}
	return out, nil
}

// RoomMembershipChange is a membership of a user in a room as of a position.
type RoomMembershipChange struct {
	RoomID     string
	UserID     string
	Membership string
	Position   int64
}

// MembershipChangesIn returns the membership changes in (after, upto] in
// the given rooms, oldest first.
func (d *DB) MembershipChangesIn(ctx context.Context, roomIDs []string, after, upto int64) ([]RoomMembershipChange, error) {
	var out []RoomMembershipChange
	for start := 0; start < len(roomIDs); start += inListChunk {
		chunk := roomIDs[start:min(start+inListChunk, len(roomIDs))]
		rows, err := d.db.QueryContext(ctx, `
SELECT room_id, user_id, membership, position FROM syncapi_membership_changes
WHERE position > $1 AND position <= $2 AND room_id IN (`+sqlutil.InList(3, len(chunk))+`)
ORDER BY position`, stringArgs([]any{after, upto}, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("membership changes: %w", err)
		}
		for rows.Next() {
			var c RoomMembershipChange
			if err := rows.Scan(&c.RoomID, &c.UserID, &c.Membership, &c.Position); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// JoinedUsers returns the users joined to a room now.
func (d *DB) JoinedUsers(ctx context.Context, roomID string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `
SELECT state_key FROM syncapi_current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'
ORDER BY state_key`, roomID)
	if err != nil {
		return nil, fmt.Errorf("joined users of %s: %w", roomID, err)
	}
	return scanStrings(rows)
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
