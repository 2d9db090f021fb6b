package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// StateEntry is one (type, state_key) → event entry of a snapshot delta.
// EventNID 0 removes the key.
type StateEntry struct {
	Type     string `json:"t"`
	StateKey string `json:"k"`
	EventNID int64  `json:"e"`
}

// Snapshot is one row of roomserver_state_snapshots.
type Snapshot struct {
	Snapshot int64
	// Parent is 0 for a checkpoint, whose Entries are the whole state.
	Parent   int64
	ChainLen int
	Size     int
	Entries  []StateEntry
}

// InsertSnapshot stores a room's snapshot.
func (d *Database) InsertSnapshot(w Writer, roomNID int64, s *Snapshot) {
	// Entries of strings and integers always marshal.
	entries, _ := json.Marshal(s.Entries)
	w.Exec(`INSERT INTO roomserver_state_snapshots (room_nid, snapshot, parent, chain_len, size, entries)
		VALUES ($1, $2, $3, $4, $5, $6)`, roomNID, s.Snapshot, s.Parent, s.ChainLen, s.Size, entries)
}

// SelectSnapshotChain returns a snapshot and its ancestors up to and
// including the nearest checkpoint, oldest (the checkpoint) first, in one
// round trip.
func (d *Database) SelectSnapshotChain(ctx context.Context, q Querier, roomNID, snapshot int64) ([]*Snapshot, error) {
	rows, err := q.QueryContext(ctx, `WITH RECURSIVE chain(snapshot, parent, chain_len, size, entries) AS (
			SELECT snapshot, parent, chain_len, size, entries FROM roomserver_state_snapshots WHERE room_nid = $1 AND snapshot = $2
			UNION ALL
			SELECT s.snapshot, s.parent, s.chain_len, s.size, s.entries FROM roomserver_state_snapshots s
				JOIN chain c ON s.room_nid = $1 AND s.snapshot = c.parent
		)
		SELECT snapshot, parent, chain_len, size, entries FROM chain ORDER BY chain_len`, roomNID, snapshot)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Snapshot
	for rows.Next() {
		var s Snapshot
		var entries []byte
		if err := rows.Scan(&s.Snapshot, &s.Parent, &s.ChainLen, &s.Size, &entries); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(entries, &s.Entries); err != nil {
			return nil, fmt.Errorf("snapshot %d of room %d: %w", s.Snapshot, roomNID, err)
		}
		out = append(out, &s)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("snapshot %d of room %d not found", snapshot, roomNID)
	}
	if out[0].Parent != 0 {
		return nil, fmt.Errorf("snapshot %d of room %d: chain does not end at a checkpoint", snapshot, roomNID)
	}
	return out, nil
}

// UpsertMembership sets a user's current membership in a room.
func (d *Database) UpsertMembership(w Writer, roomNID int64, userID, membership string, eventNID int64) {
	w.Exec(`INSERT INTO roomserver_memberships (room_nid, user_id, membership, event_nid)
		VALUES ($1, $2, $3, $4) ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = excluded.membership, event_nid = excluded.event_nid`,
		roomNID, userID, membership, eventNID)
}

// SelectMembership returns a user's current membership in a room and the
// ID of the event that set it ("", "" if none).
func (d *Database) SelectMembership(ctx context.Context, roomNID int64, userID string) (membership, eventID string, err error) {
	rows, err := d.DB.QueryContext(ctx, `SELECT m.membership, e.event_id FROM roomserver_memberships m
		JOIN roomserver_events e ON e.event_nid = m.event_nid WHERE m.room_nid = $1 AND m.user_id = $2`, roomNID, userID)
	if err != nil {
		return "", "", err
	}
	defer rows.Close()
	if rows.Next() {
		err = rows.Scan(&membership, &eventID)
	}
	if err == nil {
		err = rows.Err()
	}
	return membership, eventID, err
}

// SelectRoomsForUser lists the rooms where a user's membership is one of memberships.
func (d *Database) SelectRoomsForUser(ctx context.Context, userID string, memberships []string) ([]string, error) {
	args := []any{userID}
	for _, m := range memberships {
		args = append(args, m)
	}
	query := `SELECT r.room_id FROM roomserver_memberships m JOIN roomserver_rooms r ON r.room_nid = m.room_nid WHERE m.user_id = $1`
	if len(memberships) > 0 {
		query += ` AND m.membership IN (` + inList(2, len(memberships)) + `)`
	}
	rows, err := d.DB.QueryContext(ctx, query+` ORDER BY r.room_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// SelectServerMembership counts a server's users whose current
// membership in the room is join, and says whether it has any user who
// was in the room once (now left or banned).
func (d *Database) SelectServerMembership(ctx context.Context, roomNID int64, serverName string) (joined int, wasJoined bool, err error) {
	// User IDs end in ":" + server name; LIKE wildcards in the name are escaped.
	pattern := "%:" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(serverName)
	rows, err := d.DB.QueryContext(ctx, `SELECT membership, COUNT(*) FROM roomserver_memberships
		WHERE room_nid = $1 AND user_id LIKE $2 ESCAPE '\' GROUP BY membership`, roomNID, pattern)
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var m string
		var n int
		if err := rows.Scan(&m, &n); err != nil {
			return 0, false, err
		}
		switch m {
		case "join":
			joined = n
		case "leave", "ban":
			wasJoined = true
		}
	}
	return joined, wasJoined, rows.Err()
}
