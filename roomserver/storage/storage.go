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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

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
	// Event and room NIDs are handed out in blocks from here rather than by
	// the tables' own sequences, so a batch knows the NIDs of its rows
	// before it writes them and its writes can wait for a commit shared
	// with other rooms (see Writes). Inserts give the NID explicitly from
	// now on.
	{Version: 3, SQL: `
CREATE TABLE roomserver_counters (
	name TEXT PRIMARY KEY,
	next_value BIGINT NOT NULL
);
INSERT INTO roomserver_counters (name, next_value) SELECT 'event_nid', COALESCE(MAX(event_nid), 0) + 1 FROM roomserver_events;
INSERT INTO roomserver_counters (name, next_value) SELECT 'room_nid', COALESCE(MAX(room_nid), 0) + 1 FROM roomserver_rooms;
`},
}

// Counters handed out by AllocateNIDs.
const (
	EventNIDs = "event_nid"
	RoomNIDs  = "room_nid"
)

// ErrAliasExists is returned when an alias is taken.
var ErrAliasExists = errors.New("alias exists")

// Querier is what both *sql.DB and *sql.Tx offer, so a query can run
// inside or outside a transaction.
type Querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Writer takes a batch's writes. They do not run when made: the batch hands
// them to a transaction later (Writes.Apply), so nothing written through a
// Writer can be read back from the database before that, and a write's
// errors surface when it is applied.
type Writer interface {
	Exec(query string, args ...any)
}

// Writes records statements, in order, to apply in one transaction later.
type Writes struct {
	stmts []statement
}

type statement struct {
	query string
	args  []any
}

// Exec implements Writer.
func (w *Writes) Exec(query string, args ...any) {
	w.stmts = append(w.stmts, statement{query: query, args: args})
}

// Len is the number of statements recorded.
func (w *Writes) Len() int { return len(w.stmts) }

// ApplyWrites runs the statements of several Writes, in order, in one
// transaction. On PostgreSQL they go to the server as one pipeline and run
// in the implicit transaction that ends at the pipeline's sync, so a whole
// group costs one round trip and one commit; any failing statement rolls
// all of them back.
func (d *Database) ApplyWrites(ctx context.Context, writes []*Writes) error {
	if d.DB.Dialect == sqlutil.Postgres {
		conn, err := d.DB.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		pipelined := false
		err = conn.Raw(func(dc any) error {
			pc, ok := dc.(*stdlib.Conn)
			if !ok {
				return nil
			}
			pipelined = true
			batch := &pgx.Batch{}
			for _, w := range writes {
				for _, st := range w.stmts {
					batch.Queue(st.query, st.args...)
				}
			}
			return pc.Conn().SendBatch(ctx, batch).Close()
		})
		if pipelined || err != nil {
			return err
		}
	}
	return d.DB.WithTx(ctx, func(tx *sql.Tx) error {
		for _, w := range writes {
			for _, st := range w.stmts {
				if _, err := tx.ExecContext(ctx, st.query, st.args...); err != nil {
					return err
				}
			}
		}
		return nil
	})
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

// AllocateNIDs reserves n consecutive NIDs of a counter (EventNIDs,
// RoomNIDs) and returns the first. It commits on its own, so NIDs of a
// batch that fails later are skipped, never reused.
func (d *Database) AllocateNIDs(ctx context.Context, counter string, n int64) (int64, error) {
	var next int64
	err := d.DB.QueryRowContext(ctx, `UPDATE roomserver_counters SET next_value = next_value + $2 WHERE name = $1 RETURNING next_value`,
		counter, n).Scan(&next)
	if err != nil {
		return 0, fmt.Errorf("allocate %s: %w", counter, err)
	}
	return next - n, nil
}

// InsertRoom adds a room with no events under a NID from AllocateNIDs.
// The caller knows the room is new (a room ID taken meanwhile fails the
// transaction).
func (d *Database) InsertRoom(w Writer, nid int64, roomID, version string) {
	w.Exec(`INSERT INTO roomserver_rooms (room_nid, room_id, room_version) VALUES ($1, $2, $3)`, nid, roomID, version)
}

// UpdateRoom writes a room's extremities, current state and positions.
func (d *Database) UpdateRoom(w Writer, r *Room) {
	// A list of strings always marshals.
	ext, _ := json.Marshal(r.Extremities)
	w.Exec(`UPDATE roomserver_rooms SET forward_extremities = $2, state_snapshot = $3,
		last_snapshot = $4, last_position = $5, published_position = $6 WHERE room_nid = $1`,
		r.NID, string(ext), r.Snapshot, r.LastSnapshot, r.LastPosition, r.PublishedPosition)
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
