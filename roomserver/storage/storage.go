// Package storage holds the roomserver's tables: rooms, events, state
// snapshots, current memberships, redactions and aliases.
//
// State is stored as snapshots that share what they have in common: a
// snapshot is its parent plus a small delta of (type, state_key) → event,
// and every so often a full "checkpoint" snapshot so that reading one never
// walks far. Snapshots are numbered per room (room_nid, snapshot), so a
// room's rows never depend on another room's and a room can move to
// another process on its own. See docs/ARCHITECTURE.md, "Roomserver".
package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

var migrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE roomserver_rooms (
	room_nid BIGSERIAL PRIMARY KEY,
	room_id TEXT NOT NULL UNIQUE,
	room_version TEXT NOT NULL,
	-- JSON list of the event IDs of the forward extremities.
	forward_extremities TEXT NOT NULL DEFAULT '[]',
	-- The current state snapshot, and the highest snapshot number used.
	state_snapshot BIGINT NOT NULL DEFAULT 0,
	last_snapshot BIGINT NOT NULL DEFAULT 0,
	-- Room positions: of the newest stored event, and (lazily, see
	-- docs/ARCHITECTURE.md) of the newest one known to be on the bus.
	last_position BIGINT NOT NULL DEFAULT 0,
	published_position BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX roomserver_rooms_unpublished ON roomserver_rooms (room_nid) WHERE published_position < last_position;

CREATE TABLE roomserver_events (
	event_nid BIGSERIAL PRIMARY KEY,
	room_nid BIGINT NOT NULL,
	event_id TEXT NOT NULL UNIQUE,
	event_type TEXT NOT NULL,
	state_key TEXT,
	sender TEXT NOT NULL,
	depth BIGINT NOT NULL,
	-- NULL for rejected events, which are never published.
	room_position BIGINT,
	-- State snapshots before and after the event in the DAG, and the
	-- room's current state once the event was processed.
	state_before BIGINT NOT NULL,
	state_after BIGINT NOT NULL,
	current_state BIGINT NOT NULL,
	rejected BOOLEAN NOT NULL DEFAULT FALSE,
	soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
	redacted BOOLEAN NOT NULL DEFAULT FALSE,
	-- A local client's transaction ID, for idempotent sends.
	txn_device TEXT,
	txn_id TEXT,
	event_json BYTEA NOT NULL
);
CREATE UNIQUE INDEX roomserver_events_position ON roomserver_events (room_nid, room_position);
CREATE UNIQUE INDEX roomserver_events_txn ON roomserver_events (room_nid, sender, txn_device, txn_id) WHERE txn_id IS NOT NULL;

CREATE TABLE roomserver_state_snapshots (
	room_nid BIGINT NOT NULL,
	snapshot BIGINT NOT NULL,
	-- 0 for a checkpoint, which holds the whole state.
	parent BIGINT NOT NULL,
	-- Deltas between this snapshot and its checkpoint, and the number of
	-- entries in the whole state.
	chain_len INTEGER NOT NULL,
	size INTEGER NOT NULL,
	entries BYTEA NOT NULL,
	PRIMARY KEY (room_nid, snapshot)
);

CREATE TABLE roomserver_memberships (
	room_nid BIGINT NOT NULL,
	user_id TEXT NOT NULL,
	membership TEXT NOT NULL,
	event_nid BIGINT NOT NULL,
	PRIMARY KEY (room_nid, user_id)
);
CREATE INDEX roomserver_memberships_user ON roomserver_memberships (user_id, membership);

CREATE TABLE roomserver_redactions (
	redaction_event_id TEXT PRIMARY KEY,
	redacts_event_id TEXT NOT NULL,
	applied BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX roomserver_redactions_target ON roomserver_redactions (redacts_event_id);

CREATE TABLE roomserver_aliases (
	alias TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL
);
CREATE INDEX roomserver_aliases_room ON roomserver_aliases (room_id);
`},
	// Outliers: events stored without being placed in the room's DAG here
	// (the state and auth chain of a room joined over federation, an invite
	// to a room this server is not in). They have no state of their own
	// until an event that follows them gives it (state_after stays 0).
	{Version: 2, SQL: `ALTER TABLE roomserver_events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;`},
}

// Errors returned by the storage layer.
var (
	ErrRoomExists  = errors.New("room exists")
	ErrAliasExists = errors.New("alias exists")
)

// Querier is what both *sql.DB and *sql.Tx offer, so a query can run
// inside or outside a transaction.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Database is the roomserver's store.
type Database struct {
	DB *sqlutil.DB
}

// Open runs the roomserver's migrations on db.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := db.Migrate(ctx, "roomserver", migrations); err != nil {
		return nil, err
	}
	return &Database{DB: db}, nil
}

// Room is one row of roomserver_rooms.
type Room struct {
	NID               int64
	RoomID            string
	Version           string
	Extremities       []string
	Snapshot          int64
	LastSnapshot      int64
	LastPosition      int64
	PublishedPosition int64
}

const roomColumns = `room_nid, room_id, room_version, forward_extremities, state_snapshot, last_snapshot, last_position, published_position`

func scanRoom(row interface{ Scan(...any) error }) (*Room, error) {
	var r Room
	var ext string
	if err := row.Scan(&r.NID, &r.RoomID, &r.Version, &ext, &r.Snapshot, &r.LastSnapshot, &r.LastPosition, &r.PublishedPosition); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(ext), &r.Extremities); err != nil {
		return nil, fmt.Errorf("room %s: bad forward extremities: %w", r.RoomID, err)
	}
	return &r, nil
}

// SelectRoom returns the room, or nil if it is not known.
func (d *Database) SelectRoom(ctx context.Context, q Querier, roomID string) (*Room, error) {
	r, err := scanRoom(q.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM roomserver_rooms WHERE room_id = $1`, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return r, err
}

// InsertRoom adds a room with no events; ErrRoomExists if it is known.
func (d *Database) InsertRoom(ctx context.Context, q Querier, roomID, version string) (int64, error) {
	var nid int64
	err := q.QueryRowContext(ctx,
		`INSERT INTO roomserver_rooms (room_id, room_version) VALUES ($1, $2) RETURNING room_nid`,
		roomID, version).Scan(&nid)
	if sqlutil.IsUniqueViolation(err) {
		return 0, ErrRoomExists
	}
	return nid, err
}

// UpdateRoom writes a room's extremities, current state and positions.
func (d *Database) UpdateRoom(ctx context.Context, q Querier, r *Room) error {
	ext, err := json.Marshal(r.Extremities)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `UPDATE roomserver_rooms SET forward_extremities = $2, state_snapshot = $3,
		last_snapshot = $4, last_position = $5, published_position = $6 WHERE room_nid = $1`,
		r.NID, string(ext), r.Snapshot, r.LastSnapshot, r.LastPosition, r.PublishedPosition)
	return err
}

// UpdatePublishedPosition raises a room's published position to pos.
func (d *Database) UpdatePublishedPosition(ctx context.Context, roomNID, pos int64) error {
	_, err := d.DB.ExecContext(ctx,
		`UPDATE roomserver_rooms SET published_position = $2 WHERE room_nid = $1 AND published_position < $2`, roomNID, pos)
	return err
}

// SelectUnpublishedRooms lists rooms with events that may not be on the bus yet.
func (d *Database) SelectUnpublishedRooms(ctx context.Context) ([]*Room, error) {
	rows, err := d.DB.QueryContext(ctx, `SELECT `+roomColumns+` FROM roomserver_rooms WHERE published_position < last_position`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Room
	for rows.Next() {
		r, err := scanRoom(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// SelectRoomsByNID returns the rooms among nids.
func (d *Database) SelectRoomsByNID(ctx context.Context, nids []int64) (map[int64]*Room, error) {
	out := make(map[int64]*Room, len(nids))
	if len(nids) == 0 {
		return out, nil
	}
	args := make([]any, len(nids))
	for i, n := range nids {
		args[i] = n
	}
	rows, err := d.DB.QueryContext(ctx, `SELECT `+roomColumns+` FROM roomserver_rooms WHERE room_nid IN (`+sqlutil.InList(1, len(args))+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		r, err := scanRoom(rows)
		if err != nil {
			return nil, err
		}
		out[r.NID] = r
	}
	return out, rows.Err()
}
