package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Event is one row of roomserver_events.
type Event struct {
	NID      int64
	RoomNID  int64
	EventID  string
	Type     string
	StateKey *string
	Sender   string
	Depth    int64
	// Position is the room position, 0 for a rejected event.
	Position     int64
	StateBefore  int64
	StateAfter   int64
	CurrentState int64
	Rejected     bool
	SoftFailed   bool
	Redacted     bool
	// Outlier events are stored but not placed in the DAG (see migration 2).
	Outlier   bool
	TxnDevice string
	TxnID     string
	JSON      []byte
}

const eventColumns = `event_nid, room_nid, event_id, event_type, state_key, sender, depth, room_position,
	state_before, state_after, current_state, rejected, soft_failed, redacted, txn_device, txn_id, event_json, outlier`

func scanEvent(row interface{ Scan(...any) error }) (*Event, error) {
	var e Event
	var stateKey, txnDevice, txnID sql.NullString
	var pos sql.NullInt64
	if err := row.Scan(&e.NID, &e.RoomNID, &e.EventID, &e.Type, &stateKey, &e.Sender, &e.Depth, &pos,
		&e.StateBefore, &e.StateAfter, &e.CurrentState, &e.Rejected, &e.SoftFailed, &e.Redacted,
		&txnDevice, &txnID, &e.JSON, &e.Outlier); err != nil {
		return nil, err
	}
	if stateKey.Valid {
		e.StateKey = &stateKey.String
	}
	e.Position = pos.Int64
	e.TxnDevice, e.TxnID = txnDevice.String, txnID.String
	return &e, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// InsertEvent stores an event row under e.NID (from AllocateNIDs).
func (d *Database) InsertEvent(w Writer, e *Event) {
	var stateKey sql.NullString
	if e.StateKey != nil {
		stateKey = sql.NullString{String: *e.StateKey, Valid: true}
	}
	pos := sql.NullInt64{Int64: e.Position, Valid: e.Position > 0}
	w.Exec(`INSERT INTO roomserver_events (event_nid, room_nid, event_id, event_type, state_key, sender, depth,
		room_position, state_before, state_after, current_state, rejected, soft_failed, redacted, txn_device, txn_id, event_json, outlier)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
		e.NID, e.RoomNID, e.EventID, e.Type, stateKey, e.Sender, e.Depth, pos, e.StateBefore, e.StateAfter, e.CurrentState,
		e.Rejected, e.SoftFailed, e.Redacted, nullString(e.TxnDevice), nullString(e.TxnID), e.JSON, e.Outlier)
}

func (d *Database) selectEvents(ctx context.Context, q Querier, query string, args ...any) ([]*Event, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// SelectEventsByID returns the stored events among ids, in no particular order.
func (d *Database) SelectEventsByID(ctx context.Context, q Querier, ids []string) ([]*Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return d.selectEvents(ctx, q, `SELECT `+eventColumns+` FROM roomserver_events WHERE event_id IN (`+sqlutil.InList(1, len(args))+`)`, args...)
}

// SelectEventsByNID returns the stored events among nids, in no particular order.
func (d *Database) SelectEventsByNID(ctx context.Context, q Querier, nids []int64) ([]*Event, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	args := make([]any, len(nids))
	for i, n := range nids {
		args[i] = n
	}
	return d.selectEvents(ctx, q, `SELECT `+eventColumns+` FROM roomserver_events WHERE event_nid IN (`+sqlutil.InList(1, len(args))+`)`, args...)
}

// SelectEventsAfterPosition returns up to limit of a room's events with a
// room position above after, in position order.
func (d *Database) SelectEventsAfterPosition(ctx context.Context, q Querier, roomNID, after int64, limit int) ([]*Event, error) {
	return d.selectEvents(ctx, q, `SELECT `+eventColumns+` FROM roomserver_events
		WHERE room_nid = $1 AND room_position > $2 ORDER BY room_position LIMIT $3`, roomNID, after, limit)
}

// SelectEventAtPosition returns the room's event at a position, or nil.
func (d *Database) SelectEventAtPosition(ctx context.Context, q Querier, roomNID, pos int64) (*Event, error) {
	e, err := scanEvent(q.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM roomserver_events
		WHERE room_nid = $1 AND room_position = $2`, roomNID, pos))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return e, err
}

// SelectTransactionEvent returns the event ID a client's transaction
// produced in a room, or "" if there is none.
func (d *Database) SelectTransactionEvent(ctx context.Context, q Querier, roomNID int64, sender, device, txnID string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT event_id FROM roomserver_events
		WHERE room_nid = $1 AND sender = $2 AND txn_device = $3 AND txn_id = $4`, roomNID, sender, device, txnID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// TxnKey names a local client's transaction in a room.
type TxnKey struct {
	Sender, Device, TxnID string
}

// SelectTransactionEvents is SelectTransactionEvent for several
// transactions at once: it maps those that produced an event to its ID.
func (d *Database) SelectTransactionEvents(ctx context.Context, q Querier, roomNID int64, keys []TxnKey) (map[TxnKey]string, error) {
	out := make(map[TxnKey]string, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	args := []any{roomNID}
	var cond strings.Builder
	for i, k := range keys {
		if i > 0 {
			cond.WriteString(" OR ")
		}
		n := len(args)
		fmt.Fprintf(&cond, "(sender = $%d AND txn_device = $%d AND txn_id = $%d)", n+1, n+2, n+3)
		args = append(args, k.Sender, k.Device, k.TxnID)
	}
	rows, err := q.QueryContext(ctx, `SELECT sender, txn_device, txn_id, event_id FROM roomserver_events
		WHERE room_nid = $1 AND txn_id IS NOT NULL AND (`+cond.String()+`)`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var k TxnKey
		var id string
		if err := rows.Scan(&k.Sender, &k.Device, &k.TxnID, &id); err != nil {
			return nil, err
		}
		out[k] = id
	}
	return out, rows.Err()
}

// UpdateEventState gives an outlier the state before and after it, once
// an event that follows it has made that state known.
func (d *Database) UpdateEventState(w Writer, eventNID, stateBefore, stateAfter int64) {
	w.Exec(`UPDATE roomserver_events SET state_before = $2, state_after = $3 WHERE event_nid = $1`,
		eventNID, stateBefore, stateAfter)
}

// UpdateEventRedacted replaces an event's JSON with its redacted form.
func (d *Database) UpdateEventRedacted(w Writer, eventNID int64, redactedJSON []byte) {
	w.Exec(`UPDATE roomserver_events SET event_json = $2, redacted = TRUE WHERE event_nid = $1`, eventNID, redactedJSON)
}

// InsertRedaction records that a redaction event targets an event.
func (d *Database) InsertRedaction(w Writer, redactionID, redactsID string, applied bool) {
	w.Exec(`INSERT INTO roomserver_redactions (redaction_event_id, redacts_event_id, applied)
		VALUES ($1, $2, $3) ON CONFLICT (redaction_event_id) DO NOTHING`, redactionID, redactsID, applied)
}

// SelectPendingRedactions lists unapplied redactions targeting an event.
func (d *Database) SelectPendingRedactions(ctx context.Context, q Querier, redactsID string) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT redaction_event_id FROM roomserver_redactions
		WHERE redacts_event_id = $1 AND applied = FALSE`, redactsID)
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

// MarkRedactionApplied records that a redaction was applied.
func (d *Database) MarkRedactionApplied(w Writer, redactionID string) {
	w.Exec(`UPDATE roomserver_redactions SET applied = TRUE WHERE redaction_event_id = $1`, redactionID)
}
