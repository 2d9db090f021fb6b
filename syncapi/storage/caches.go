package storage

import (
	"cmp"
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

// maxPresenceEntries bounds the in-memory copy of the presence table.
const maxPresenceEntries = 200_000

// presenceLatest is the newest rows of syncapi_presence (one per user, its
// latest change) in memory: every row with a position above from is here.
// A /sync asks it for the presence of the users it shares rooms with,
// which costs a lookup per room-mate, where the table can only be asked
// for every user's changes and filtered.
type presenceLatest struct {
	mu     sync.Mutex // held by PutPresences across its transaction
	logMu  sync.Mutex // guards from and byUser
	from   int64
	byUser map[string]Presence
}

// load fills the copy with the newest rows of the table.
func (l *presenceLatest) load(ctx context.Context, d *DB) error {
	rows, err := d.db.QueryContext(ctx, `SELECT `+presenceColumns+` FROM syncapi_presence ORDER BY position DESC LIMIT $1`, maxPresenceEntries)
	if err != nil {
		return fmt.Errorf("load presence: %w", err)
	}
	ps, err := scanPresences(rows)
	if err != nil {
		return err
	}
	l.byUser = make(map[string]Presence, len(ps))
	for _, p := range ps {
		l.byUser[p.UserID] = p
	}
	if len(ps) == maxPresenceEntries {
		l.from = ps[len(ps)-1].Position
	}
	return nil
}

// appendLocked records committed rows, in position order; the caller
// holds mu. Past the bound the oldest tenth is dropped.
func (l *presenceLatest) appendLocked(ps []Presence) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	for _, p := range ps {
		l.byUser[p.UserID] = p
	}
	if len(l.byUser) <= maxPresenceEntries {
		return
	}
	positions := make([]int64, 0, len(l.byUser))
	for _, p := range l.byUser {
		positions = append(positions, p.Position)
	}
	slices.Sort(positions)
	l.from = positions[len(positions)/10]
	for u, p := range l.byUser {
		if p.Position <= l.from {
			delete(l.byUser, u)
		}
	}
}

// touch mirrors TouchPresence.
func (l *presenceLatest) touch(users []string, ts int64) {
	l.logMu.Lock()
	defer l.logMu.Unlock()
	for _, u := range users {
		if p, ok := l.byUser[u]; ok {
			p.LastActiveTS = ts
			l.byUser[u] = p
		}
	}
}

// PresenceOf returns the presence rows of users whose position is in
// (after, upto], oldest first (without offline users when skipOffline),
// or false if the in-memory copy does not reach back to after.
func (d *DB) PresenceOf(users []string, after, upto int64, skipOffline bool) ([]Presence, bool) {
	l := &d.presence
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if after < l.from {
		return nil, false
	}
	var out []Presence
	for _, u := range users {
		if p, ok := l.byUser[u]; ok && p.Position > after && p.Position <= upto && !(skipOffline && p.Presence == "offline") {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Presence) int { return cmp.Compare(a.Position, b.Position) })
	return out, true
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
