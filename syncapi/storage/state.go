package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// RoomMembership is a user's current membership in a room.
type RoomMembership struct {
	RoomID     string
	Membership string
	EventID    string
	// ChangedAt is the stream position at which it last changed.
	ChangedAt int64
}

// RoomsForUser lists every room where userID has a current membership
// event (join, invite, leave, ban, knock).
func (d *DB) RoomsForUser(ctx context.Context, userID string) ([]RoomMembership, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, membership, event_id, changed_at FROM syncapi_current_state
		WHERE state_key = $1 AND type = 'm.room.member'`, userID)
	if err != nil {
		return nil, fmt.Errorf("rooms for user: %w", err)
	}
	defer rows.Close()
	var out []RoomMembership
	for rows.Next() {
		var m RoomMembership
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &m.ChangedAt); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// JoinedMembers returns every (room, user) pair with membership join, for
// the notifier to load at start.
func (d *DB) JoinedMembers(ctx context.Context, fn func(roomID, userID string)) error {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, state_key FROM syncapi_current_state
		WHERE type = 'm.room.member' AND membership = 'join'`)
	if err != nil {
		return fmt.Errorf("joined members: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r, u string
		if err := rows.Scan(&r, &u); err != nil {
			return err
		}
		fn(r, u)
	}
	return rows.Err()
}

// MembershipAt is one change of a user's membership in a room.
type MembershipAt struct {
	Position   int64
	Membership string
}

// MembershipHistory returns a user's membership changes in a room, oldest
// first. Visibility checks use it to know the user's membership at any
// event.
func (d *DB) MembershipHistory(ctx context.Context, roomID, userID string) ([]MembershipAt, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT position, membership FROM syncapi_membership_changes
		WHERE room_id = $1 AND user_id = $2 ORDER BY position`, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("membership history: %w", err)
	}
	defer rows.Close()
	var out []MembershipAt
	for rows.Next() {
		var m MembershipAt
		if err := rows.Scan(&m.Position, &m.Membership); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// StateQuery selects current state events of a room.
type StateQuery struct {
	RoomID string
	// ChangedAfter, when > 0, returns only entries changed after it.
	ChangedAfter int64
	// Types restricts to these exact event types (empty: all); NotTypes
	// excludes exact types. Wildcards are the caller's to apply.
	Types    []string
	NotTypes []string
	// MemberKeys, when not nil, restricts m.room.member events to these
	// state keys (lazy-loading members); other types are unaffected.
	MemberKeys []string
	// OnlyMembers restricts the answer to m.room.member events.
	OnlyMembers bool
}

// CurrentState returns the room's current state events matching q.
func (d *DB) CurrentState(ctx context.Context, q StateQuery) ([]Event, error) {
	args := []any{q.RoomID}
	where := []string{"s.room_id = $1"}
	if q.ChangedAfter > 0 {
		args = append(args, q.ChangedAfter)
		where = append(where, fmt.Sprintf("s.changed_at > $%d", len(args)))
	}
	where = inListCond(where, &args, "s.type", q.Types, false)
	where = inListCond(where, &args, "s.type", q.NotTypes, true)
	if q.OnlyMembers {
		where = append(where, "s.type = 'm.room.member'")
	}
	if q.MemberKeys != nil {
		if len(q.MemberKeys) == 0 {
			where = append(where, "s.type <> 'm.room.member'")
		} else {
			start := len(args) + 1
			args = stringArgs(args, q.MemberKeys)
			where = append(where, "(s.type <> 'm.room.member' OR s.state_key IN ("+sqlutil.InList(start, len(q.MemberKeys))+"))")
		}
	}
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM syncapi_current_state s
		JOIN syncapi_events e ON e.event_id = s.event_id
		WHERE `+strings.Join(where, " AND ")+` ORDER BY e.position`, args...)
	if err != nil {
		return nil, fmt.Errorf("current state: %w", err)
	}
	return scanEvents(rows)
}

// CurrentMembership returns a user's current membership in a room, or ""
// if they have none.
func (d *DB) CurrentMembership(ctx context.Context, roomID, userID string) (string, error) {
	var m sql.NullString
	err := d.db.QueryRowContext(ctx, `SELECT membership FROM syncapi_current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`, roomID, userID).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("current membership: %w", err)
	}
	return m.String, nil
}
