package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Queries that fill the sync API's in-memory caches (syncapi/synccache.go).

// hasChildren says whether any stored event has an aggregated relation
// (the rel_types ChildSummaries counts) to eventID.
func hasChildren(ctx context.Context, tx *sql.Tx, eventID string) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM syncapi_relations
		WHERE parent_event_id = $1 AND rel_type IN ('m.replace', 'm.thread', 'm.reference') LIMIT 1`, eventID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("children of %s: %w", eventID, err)
	}
	return true, nil
}

// AllRoomLastPositions calls fn with the position of the newest stored
// event of every known room.
func (d *DB) AllRoomLastPositions(ctx context.Context, fn func(roomID string, pos int64)) error {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, last_position FROM syncapi_rooms`)
	if err != nil {
		return fmt.Errorf("room positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var pos int64
		if err := rows.Scan(&id, &pos); err != nil {
			return err
		}
		fn(id, pos)
	}
	return rows.Err()
}

// MemberAt is a joined or invited member and the position at which their
// membership last changed.
type MemberAt struct {
	UserID     string
	Membership string
	ChangedAt  int64
}

// JoinedOrInvited lists a room's joined and invited members, oldest
// change first: what RoomSummary counts and picks heroes from.
func (d *DB) JoinedOrInvited(ctx context.Context, roomID string) ([]MemberAt, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT state_key, membership, changed_at FROM syncapi_current_state
		WHERE room_id = $1 AND type = 'm.room.member' AND membership IN ('join', 'invite') ORDER BY changed_at`, roomID)
	if err != nil {
		return nil, fmt.Errorf("room members: %w", err)
	}
	defer rows.Close()
	var out []MemberAt
	for rows.Next() {
		var m MemberAt
		if err := rows.Scan(&m.UserID, &m.Membership, &m.ChangedAt); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// StateEntry is one current state event and the position at which its
// (type, state_key) last changed.
type StateEntry struct {
	Event
	ChangedAt int64
}

// CurrentStateEntries returns a room's whole current state, ordered by
// event position as CurrentState orders it.
func (d *DB) CurrentStateEntries(ctx context.Context, roomID string) ([]StateEntry, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+`, s.changed_at FROM syncapi_current_state s
		JOIN syncapi_events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 ORDER BY e.position`, roomID)
	if err != nil {
		return nil, fmt.Errorf("current state: %w", err)
	}
	defer rows.Close()
	var out []StateEntry
	for rows.Next() {
		var e StateEntry
		var sk, prev, because, txnDev, txnID sql.NullString
		var js string
		if err := rows.Scan(&e.Position, &e.RoomID, &e.EventID, &e.Sender, &e.Type, &sk, &js, &prev, &because, &e.HistoryVisibility,
			&txnDev, &txnID, &e.OriginServerTS, &e.ChangedAt); err != nil {
			return nil, err
		}
		fillEvent(&e.Event, js, sk, prev, because, txnDev, txnID)
		out = append(out, e)
	}
	return out, rows.Err()
}

// maxRecentPresence bounds the in-memory log of presence changes.
const maxRecentPresence = 4096

// presenceLog holds the newest presence changes, so that the /syncs a
// burst of presence changes wakes (every member of the changed users'
// rooms) read them from memory. Like syncapi_presence it has at most one
// entry per user, the latest; it holds every change with a position above
// from.
type presenceLog struct {
	mu      sync.Mutex // held by PutPresences across its transaction
	logMu   sync.Mutex // guards from and entries
	from    int64
	entries []Presence
}

// appendLocked adds committed changes, in position order; the caller holds mu.
func (l *presenceLog) appendLocked(ps []Presence) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	for _, p := range ps {
		l.entries = slices.DeleteFunc(l.entries, func(e Presence) bool { return e.UserID == p.UserID })
		l.entries = append(l.entries, p)
	}
	if n := len(l.entries) - maxRecentPresence; n > 0 {
		l.from = l.entries[n-1].Position
		l.entries = slices.Delete(l.entries, 0, n)
	}
}

// since answers PresenceSince if the log reaches back to after.
func (l *presenceLog) since(after, upto int64, skipOffline bool, limit int) ([]Presence, bool) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if after < l.from {
		return nil, false
	}
	var out []Presence
	for _, p := range l.entries {
		if len(out) == limit {
			break
		}
		if p.Position > after && p.Position <= upto && !(skipOffline && p.Presence == "offline") {
			out = append(out, p)
		}
	}
	return out, true
}

// touch mirrors TouchPresence.
func (l *presenceLog) touch(users []string, ts int64) {
	set := make(map[string]bool, len(users))
	for _, u := range users {
		set[u] = true
	}
	l.logMu.Lock()
	defer l.logMu.Unlock()
	for i := range l.entries {
		if set[l.entries[i].UserID] {
			l.entries[i].LastActiveTS = ts
		}
	}
}

// AllUnreadCounts returns a user's non-zero counts in every room.
func (d *DB) AllUnreadCounts(ctx context.Context, userID string) ([]ThreadCount, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, thread_id, notifications, highlights FROM syncapi_push_counts
		WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("unread counts: %w", err)
	}
	defer rows.Close()
	var out []ThreadCount
	for rows.Next() {
		var c ThreadCount
		if err := rows.Scan(&c.RoomID, &c.ThreadID, &c.Notifications, &c.Highlights); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
