package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// JoinedMember is a member whose current membership is "join", with the
// join event that made it so.
type JoinedMember struct {
	EventID    string
	UserID     string
	ServerName string
}

// RoomUpdate is what one roomserver output event changes here.
type RoomUpdate struct {
	RoomID   string
	Position int64
	// RemovedEventIDs left the room's current state; AddedJoins are the
	// join events among those that entered it.
	RemovedEventIDs []string
	AddedJoins      []JoinedMember
	// PDU, when set, is queued for every server joined before or after
	// the update, except LocalServer.
	PDU         []byte
	LocalServer string
}

// ApplyRoomUpdate applies u in one transaction and returns the
// destinations the PDU was queued for. A position at or below the last one
// applied for the room is a redelivery: nothing changes and applied is false.
func (d *Database) ApplyRoomUpdate(ctx context.Context, u RoomUpdate) (destinations []string, applied bool, err error) {
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var last int64
		err := tx.QueryRowContext(ctx, `SELECT position FROM federation_room_positions WHERE room_id = $1`, u.RoomID).Scan(&last)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err == nil && u.Position <= last {
			return nil
		}
		applied = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_room_positions (room_id, position) VALUES ($1, $2)
			ON CONFLICT (room_id) DO UPDATE SET position = excluded.position`, u.RoomID, u.Position); err != nil {
			return err
		}
		servers := map[string]bool{}
		if u.PDU != nil {
			// Before the change: a kicked or banned server still hears of it.
			if err := joinedServersTx(ctx, tx, u.RoomID, servers); err != nil {
				return err
			}
		}
		if len(u.RemovedEventIDs) > 0 {
			args := []any{u.RoomID}
			for _, id := range u.RemovedEventIDs {
				args = append(args, id)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM federation_joined_members WHERE room_id = $1 AND event_id IN (`+
				sqlutil.InList(2, len(u.RemovedEventIDs))+`)`, args...); err != nil {
				return err
			}
		}
		for _, m := range u.AddedJoins {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_joined_members (room_id, event_id, user_id, server_name)
				VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, event_id) DO NOTHING`, u.RoomID, m.EventID, m.UserID, m.ServerName); err != nil {
				return err
			}
		}
		if u.PDU == nil {
			return nil
		}
		if err := joinedServersTx(ctx, tx, u.RoomID, servers); err != nil {
			return err
		}
		delete(servers, u.LocalServer)
		for s := range servers {
			destinations = append(destinations, s)
		}
		sort.Strings(destinations)
		return enqueuePDUTx(ctx, tx, destinations, u.PDU)
	})
	if err != nil {
		return nil, false, fmt.Errorf("apply room update %s/%d: %w", u.RoomID, u.Position, err)
	}
	return destinations, applied, nil
}

func joinedServersTx(ctx context.Context, q querier, roomID string, into map[string]bool) error {
	rows, err := q.QueryContext(ctx, `SELECT DISTINCT server_name FROM federation_joined_members WHERE room_id = $1`, roomID)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		into[s] = true
	}
	return rows.Err()
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// JoinedServers lists the servers with at least one joined member in the
// room, sorted.
func (d *Database) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	set := map[string]bool{}
	if err := joinedServersTx(ctx, d.db, roomID, set); err != nil {
		return nil, fmt.Errorf("select joined servers: %w", err)
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

func enqueuePDUTx(ctx context.Context, tx *sql.Tx, destinations []string, pdu []byte) error {
	if len(destinations) == 0 {
		return nil
	}
	var nid int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO federation_queue_json (json) VALUES ($1) RETURNING json_nid`, string(pdu)).Scan(&nid); err != nil {
		return fmt.Errorf("queue pdu json: %w", err)
	}
	for _, dest := range destinations {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_queue_pdus (destination, json_nid) VALUES ($1, $2)`, dest, nid); err != nil {
			return fmt.Errorf("queue pdu for %s: %w", dest, err)
		}
	}
	return nil
}

// EnqueuePDU queues one PDU for each destination; it is committed when
// EnqueuePDU returns.
func (d *Database) EnqueuePDU(ctx context.Context, destinations []string, pdu []byte) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error { return enqueuePDUTx(ctx, tx, destinations, pdu) })
}

// EnqueueEDU queues one EDU (its full JSON, edu_type and content) for each
// destination.
func (d *Database) EnqueueEDU(ctx context.Context, destinations []string, edu []byte) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for _, dest := range destinations {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_queue_edus (destination, edu_json) VALUES ($1, $2)`, dest, string(edu)); err != nil {
				return fmt.Errorf("queue edu for %s: %w", dest, err)
			}
		}
		return nil
	})
}

// Queued is one queued PDU or EDU.
type Queued struct {
	NID  int64
	JSON []byte
}

// Batch is the oldest queued PDUs and EDUs of a destination.
type Batch struct {
	PDUs []Queued
	EDUs []Queued
}

// Empty says whether there is nothing to send.
func (b *Batch) Empty() bool { return len(b.PDUs) == 0 && len(b.EDUs) == 0 }

// PendingBatch returns up to maxPDUs and maxEDUs of the oldest queued items
// for destination.
func (d *Database) PendingBatch(ctx context.Context, destination string, maxPDUs, maxEDUs int) (*Batch, error) {
	b := &Batch{}
	rows, err := d.db.QueryContext(ctx, `SELECT q.queue_nid, j.json FROM federation_queue_pdus q
		JOIN federation_queue_json j ON j.json_nid = q.json_nid
		WHERE q.destination = $1 ORDER BY q.queue_nid LIMIT $2`, destination, maxPDUs)
	if err != nil {
		return nil, fmt.Errorf("select queued pdus: %w", err)
	}
	if b.PDUs, err = scanQueued(rows); err != nil {
		return nil, err
	}
	rows, err = d.db.QueryContext(ctx, `SELECT queue_nid, edu_json FROM federation_queue_edus
		WHERE destination = $1 ORDER BY queue_nid LIMIT $2`, destination, maxEDUs)
	if err != nil {
		return nil, fmt.Errorf("select queued edus: %w", err)
	}
	if b.EDUs, err = scanQueued(rows); err != nil {
		return nil, err
	}
	return b, nil
}

func scanQueued(rows *sql.Rows) ([]Queued, error) {
	defer rows.Close()
	var out []Queued
	for rows.Next() {
		var q Queued
		var s string
		if err := rows.Scan(&q.NID, &s); err != nil {
			return nil, err
		}
		q.JSON = []byte(s)
		out = append(out, q)
	}
	return out, rows.Err()
}

// DeleteBatch removes a delivered batch (by its rows, never by a range: a
// row with a lower number may commit after the batch was read) and the
// PDU JSON no destination needs any more.
func (d *Database) DeleteBatch(ctx context.Context, b *Batch) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if len(b.PDUs) > 0 {
			args := make([]any, len(b.PDUs))
			for i, q := range b.PDUs {
				args[i] = q.NID
			}
			rows, err := tx.QueryContext(ctx, `SELECT DISTINCT json_nid FROM federation_queue_pdus WHERE queue_nid IN (`+
				sqlutil.InList(1, len(args))+`)`, args...)
			if err != nil {
				return err
			}
			var jsonNIDs []any
			for rows.Next() {
				var n int64
				if err := rows.Scan(&n); err != nil {
					rows.Close()
					return err
				}
				jsonNIDs = append(jsonNIDs, n)
			}
			rows.Close()
			if _, err := tx.ExecContext(ctx, `DELETE FROM federation_queue_pdus WHERE queue_nid IN (`+
				sqlutil.InList(1, len(args))+`)`, args...); err != nil {
				return err
			}
			if len(jsonNIDs) > 0 {
				if _, err := tx.ExecContext(ctx, `DELETE FROM federation_queue_json WHERE json_nid IN (`+
					sqlutil.InList(1, len(jsonNIDs))+`) AND NOT EXISTS (SELECT 1 FROM federation_queue_pdus p
					WHERE p.json_nid = federation_queue_json.json_nid)`, jsonNIDs...); err != nil {
					return err
				}
			}
		}
		if len(b.EDUs) > 0 {
			args := make([]any, len(b.EDUs))
			for i, q := range b.EDUs {
				args[i] = q.NID
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM federation_queue_edus WHERE queue_nid IN (`+
				sqlutil.InList(1, len(args))+`)`, args...); err != nil {
				return err
			}
		}
		return nil
	})
}

// PendingDestinations lists the destinations with anything queued.
func (d *Database) PendingDestinations(ctx context.Context) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT DISTINCT destination FROM federation_queue_pdus
		UNION SELECT DISTINCT destination FROM federation_queue_edus`)
	if err != nil {
		return nil, fmt.Errorf("select pending destinations: %w", err)
	}
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

// DestinationState is a destination's delivery health.
type DestinationState struct {
	// FailureCount counts consecutive failed attempts; 0 when healthy.
	FailureCount int
	// RetryAtMS is when the next attempt may be made (milliseconds).
	RetryAtMS int64
	// LastSuccessMS is when a transaction was last delivered.
	LastSuccessMS int64
}

// Destination returns a destination's state; an unknown one is healthy.
func (d *Database) Destination(ctx context.Context, serverName string) (DestinationState, error) {
	var s DestinationState
	err := d.db.QueryRowContext(ctx, `SELECT failure_count, retry_at, last_success_ts FROM federation_destinations WHERE server_name = $1`,
		serverName).Scan(&s.FailureCount, &s.RetryAtMS, &s.LastSuccessMS)
	if errors.Is(err, sql.ErrNoRows) {
		return DestinationState{}, nil
	}
	if err != nil {
		return s, fmt.Errorf("select destination %s: %w", serverName, err)
	}
	return s, nil
}

// RecordFailure stores a failed attempt's count and next retry time.
func (d *Database) RecordFailure(ctx context.Context, serverName string, failures int, retryAtMS int64) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO federation_destinations (server_name, failure_count, retry_at) VALUES ($1, $2, $3)
		ON CONFLICT (server_name) DO UPDATE SET failure_count = excluded.failure_count, retry_at = excluded.retry_at`,
		serverName, failures, retryAtMS)
	if err != nil {
		return fmt.Errorf("record failure of %s: %w", serverName, err)
	}
	return nil
}

// RecordSuccess marks a destination healthy.
func (d *Database) RecordSuccess(ctx context.Context, serverName string, nowMS int64) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO federation_destinations (server_name, failure_count, retry_at, last_success_ts) VALUES ($1, 0, 0, $2)
		ON CONFLICT (server_name) DO UPDATE SET failure_count = 0, retry_at = 0, last_success_ts = excluded.last_success_ts`,
		serverName, nowMS)
	if err != nil {
		return fmt.Errorf("record success of %s: %w", serverName, err)
	}
	return nil
}
