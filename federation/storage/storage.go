// Package storage holds the federation component's tables: other servers'
// signing keys and the signed key responses they came in, inbound
// transactions already answered, the servers joined to each room (kept from
// the roomserver output stream), and the outbound per-destination queues
// with each destination's backoff state. One SQL text serves both SQLite and
// PostgreSQL.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Component is the name under which the tables are migrated.
const Component = "federation"

var migrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE federation_server_keys (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	-- Unpadded base64 of the ed25519 public key.
	public_key TEXT NOT NULL,
	-- Milliseconds; valid_until_ts is 0 for a retired key, expired_ts is 0
	-- for a current one (gomatrixserverlib's PublicKeyLookupResult).
	valid_until_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);
-- The newest self-signed key response of each server, byte for byte, so a
-- notary query can be answered with the server's own signature intact.
CREATE TABLE federation_server_key_responses (
	server_name TEXT PRIMARY KEY,
	response_json TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL
);
CREATE TABLE federation_inbound_txns (
	origin TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	response_json TEXT NOT NULL,
	received_ts BIGINT NOT NULL,
	PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_received_idx ON federation_inbound_txns (received_ts);
-- One row per joined member: the join event that is current state.
CREATE TABLE federation_joined_members (
	room_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	server_name TEXT NOT NULL,
	PRIMARY KEY (room_id, event_id)
);
CREATE INDEX federation_joined_members_servers_idx ON federation_joined_members (room_id, server_name);
-- The last roomserver output position applied per room, so a redelivered
-- message changes nothing.
CREATE TABLE federation_room_positions (
	room_id TEXT PRIMARY KEY,
	position BIGINT NOT NULL
);
-- A queued PDU's JSON is stored once however many destinations it goes to.
CREATE TABLE federation_queue_json (
	json_nid BIGSERIAL PRIMARY KEY,
	json TEXT NOT NULL
);
CREATE TABLE federation_queue_pdus (
	queue_nid BIGSERIAL PRIMARY KEY,
	destination TEXT NOT NULL,
	json_nid BIGINT NOT NULL
);
CREATE INDEX federation_queue_pdus_dest_idx ON federation_queue_pdus (destination, queue_nid);
CREATE INDEX federation_queue_pdus_json_idx ON federation_queue_pdus (json_nid);
CREATE TABLE federation_queue_edus (
	queue_nid BIGSERIAL PRIMARY KEY,
	destination TEXT NOT NULL,
	edu_json TEXT NOT NULL
);
CREATE INDEX federation_queue_edus_dest_idx ON federation_queue_edus (destination, queue_nid);
CREATE TABLE federation_destinations (
	server_name TEXT PRIMARY KEY,
	failure_count INTEGER NOT NULL DEFAULT 0,
	-- Milliseconds; no attempt before this time.
	retry_at BIGINT NOT NULL DEFAULT 0,
	last_success_ts BIGINT NOT NULL DEFAULT 0
);
`},
}

// ErrNotFound is returned when the row asked for does not exist.
var ErrNotFound = errors.New("not found")

// Database is the federation component's storage.
type Database struct {
	db *sqlutil.DB
}

// Open migrates the federation tables in db and returns the storage.
func Open(ctx context.Context, db *sqlutil.DB) (*Database, error) {
	if err := db.Migrate(ctx, Component, migrations); err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, ComponentEDUs, eduMigrations); err != nil {
		return nil, err
	}
	return &Database{db: db}, nil
}

// InboundTxn returns the stored response to a transaction already
// processed from origin, or ErrNotFound.
func (d *Database) InboundTxn(ctx context.Context, origin, txnID string) ([]byte, error) {
	var resp string
	err := d.db.QueryRowContext(ctx,
		`SELECT response_json FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`,
		origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select inbound txn: %w", err)
	}
	return []byte(resp), nil
}

// StoreInboundTxn records the response to a processed transaction; a
// concurrent duplicate that finished first wins.
func (d *Database) StoreInboundTxn(ctx context.Context, origin, txnID string, response []byte, nowMS int64) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts)
		VALUES ($1, $2, $3, $4) ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), nowMS)
	if err != nil {
		return fmt.Errorf("insert inbound txn: %w", err)
	}
	return nil
}

// PruneInboundTxns forgets transactions received before beforeMS; a sender
// retries a transaction for minutes or hours, not weeks.
func (d *Database) PruneInboundTxns(ctx context.Context, beforeMS int64) error {
	_, err := d.db.ExecContext(ctx, `DELETE FROM federation_inbound_txns WHERE received_ts < $1`, beforeMS)
	return err
}
