// Package storage holds the sync API's tables: its own copy of room
// timelines, current state and memberships (fed only by the roomserver's
// output stream), account data, receipts, to-device inboxes and filters.
//
// Every stored timeline event gets one global stream position; the other
// streams (account data, receipts, to-device) take positions from counters
// in syncapi_stream_positions. A counter is bumped in the same transaction
// as the row it numbers, so a reader that sees position N also sees every
// row up to N: no row can commit "behind" a position a client has already
// been given.
package storage

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Stream names in syncapi_stream_positions.
const (
	StreamAccountData = "account_data"
	StreamReceipts    = "receipts"
	StreamToDevice    = "to_device"
)

var migrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE syncapi_rooms (
	room_id TEXT PRIMARY KEY,
	room_version TEXT NOT NULL,
	last_room_position BIGINT NOT NULL,
	last_position BIGINT NOT NULL
);
CREATE TABLE syncapi_events (
	position BIGSERIAL PRIMARY KEY,
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL UNIQUE,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT,
	event_json TEXT NOT NULL,
	prev_content TEXT,
	redacted_because TEXT,
	history_visibility TEXT NOT NULL,
	soft_failed BOOLEAN NOT NULL,
	txn_device_id TEXT,
	txn_id TEXT,
	origin_server_ts BIGINT NOT NULL
);
CREATE INDEX syncapi_events_room_position ON syncapi_events (room_id, position);
CREATE INDEX syncapi_events_room_ts ON syncapi_events (room_id, origin_server_ts);
CREATE TABLE syncapi_current_state (
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_id TEXT NOT NULL,
	changed_at BIGINT NOT NULL,
	membership TEXT,
	PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX syncapi_current_state_user ON syncapi_current_state (state_key, type);
CREATE INDEX syncapi_current_state_changed ON syncapi_current_state (room_id, changed_at);
CREATE TABLE syncapi_membership_changes (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	position BIGINT NOT NULL,
	membership TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id, position)
);
CREATE TABLE syncapi_stream_positions (
	stream TEXT PRIMARY KEY,
	position BIGINT NOT NULL
);
INSERT INTO syncapi_stream_positions (stream, position) VALUES ('account_data', 0), ('receipts', 0), ('to_device', 0);
CREATE TABLE syncapi_account_data (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	position BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX syncapi_account_data_position ON syncapi_account_data (user_id, position);
CREATE TABLE syncapi_receipts (
	room_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	user_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	ts BIGINT NOT NULL,
	position BIGINT NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX syncapi_receipts_position ON syncapi_receipts (room_id, position);
CREATE TABLE syncapi_send_to_device (
	position BIGINT PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL
);
CREATE INDEX syncapi_send_to_device_inbox ON syncapi_send_to_device (user_id, device_id, position);
CREATE TABLE syncapi_send_to_device_txns (
	sender TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	PRIMARY KEY (sender, device_id, txn_id)
);
CREATE TABLE syncapi_filters (
	filter_id BIGSERIAL PRIMARY KEY,
	user_id TEXT NOT NULL,
	filter TEXT NOT NULL
);
`},
}

// DB is the sync API's database.
type DB struct {
	db       *sqlutil.DB
	pos      streamPositions
	presence presenceLatest
}

// Open runs the sync API's migrations on db and returns its storage.
func Open(ctx context.Context, db *sqlutil.DB) (*DB, error) {
	if err := db.Migrate(ctx, "syncapi", migrations); err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, "syncapi_relations", relationsMigrations(db.Dialect)); err != nil {
		return nil, err
	}
	if err := migratePush(ctx, db); err != nil {
		return nil, err
	}
	d := &DB{db: db}
	if err := d.loadPositions(ctx); err != nil {
		return nil, err
	}
	if err := d.presence.load(ctx, d); err != nil {
		return nil, err
	}
	return d, nil
}

// Positions are the newest position of every stored stream.
type Positions struct {
	Events      int64
	AccountData int64
	Receipts    int64
	ToDevice    int64
}

// CurrentPositions reads the newest committed position of each stream,
// in one round trip: every long-poll wake-up starts here.
func (d *DB) CurrentPositions(ctx context.Context) (Positions, error) {
	var p Positions
	err := d.db.QueryRowContext(ctx, `SELECT
		(SELECT COALESCE(MAX(position), 0) FROM syncapi_events),
		(SELECT position FROM syncapi_stream_positions WHERE stream = 'account_data'),
		(SELECT position FROM syncapi_stream_positions WHERE stream = 'receipts'),
		(SELECT position FROM syncapi_stream_positions WHERE stream = 'to_device')`).
		Scan(&p.Events, &p.AccountData, &p.Receipts, &p.ToDevice)
	if err != nil {
		return p, fmt.Errorf("stream positions: %w", err)
	}
	return p, nil
}

// nextPosition takes the next position of a counter stream inside tx; the
// row lock it takes is held until tx ends, so positions commit in order.
func nextPosition(ctx context.Context, tx *sql.Tx, stream string) (int64, error) {
	var pos int64
	err := tx.QueryRowContext(ctx,
		`UPDATE syncapi_stream_positions SET position = position + 1 WHERE stream = $1 RETURNING position`, stream).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("next %s position: %w", stream, err)
	}
	return pos, nil
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func stringArgs(start []any, list []string) []any {
	for _, s := range list {
		start = append(start, s)
	}
	return start
}
