package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// NewEvent is one roomserver output event, already parsed by the consumer.
type NewEvent struct {
	RoomID       string
	RoomVersion  string
	RoomPosition int64
	EventID      string
	Sender       string
	Type         string
	StateKey     *string
	JSON         []byte
	// OriginServerTS in milliseconds.
	OriginServerTS int64
	// Membership is content.membership of an m.room.member event.
	Membership string
	// HistoryVisibility is content.history_visibility of an
	// m.room.history_visibility event.
	HistoryVisibility string
	// Redacts is the event an m.room.redaction redacts.
	Redacts string
	// AddsState and RemovesState change the room's current state.
	AddsState    []string
	RemovesState []string
	SoftFailed   bool
	TxnDeviceID  string
	TxnID        string
	// AfterStore, if set, runs inside StoreEvent's transaction once the
	// event has its position, so that what it writes (notification
	// counts) commits together with the event.
	AfterStore func(ctx context.Context, tx *sql.Tx, position int64) error
}

// MembershipChange is a user's membership that changed with an event.
type MembershipChange struct {
	UserID     string
	Membership string
}

// StoreResult says what StoreEvent did.
type StoreResult struct {
	// Duplicate is true when the event was already stored (a redelivery).
	Duplicate bool
	Position  int64
	// Changes lists the current-state memberships the event changed.
	Changes []MembershipChange
	// Event is the event as stored (what RoomEvents would return for it),
	// and PrevLastPosition the position of the room's newest event before
	// it (0 for a new room): the sync API's in-memory timeline tails are
	// built from these.
	Event            Event
	PrevLastPosition int64
	// HasChildren says that events relating to this one (m.replace,
	// m.thread or m.reference) were stored before it, so its bundled
	// aggregations are not empty.
	HasChildren bool
}

// DefaultHistoryVisibility applies when a room has no
// m.room.history_visibility event (client-server spec §"Room History
// Visibility").
const DefaultHistoryVisibility = "shared"

// StoreEvent stores one output event and applies its current-state changes
// in one transaction. An event whose room position is not newer than the
// room's stored one is a redelivery and changes nothing.
func (d *DB) StoreEvent(ctx context.Context, ev *NewEvent) (StoreResult, error) {
	var res StoreResult
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = storeEvent(ctx, tx, ev)
		return err
	})
	return res, err
}

// StoreEvents stores several output events in one transaction, in order,
// each as StoreEvent would. before(i) runs just before events[i] is stored
// (to set its AfterStore from what the earlier events changed) and
// after(i, res) just after; either may be nil. If the transaction fails,
// nothing is stored, and what the callbacks did is the caller's to undo.
func (d *DB) StoreEvents(ctx context.Context, events []*NewEvent, before func(i int) error, after func(i int, res StoreResult)) ([]StoreResult, error) {
	var out []StoreResult
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		out = make([]StoreResult, 0, len(events))
		for i, ev := range events {
			if before != nil {
				if err := before(i); err != nil {
					return err
				}
			}
			res, err := storeEvent(ctx, tx, ev)
			if err != nil {
				return fmt.Errorf("store %s: %w", ev.EventID, err)
			}
			if after != nil {
				after(i, res)
			}
			out = append(out, res)
		}
		return nil
	})
	return out, err
}

func storeEvent(ctx context.Context, tx *sql.Tx, ev *NewEvent) (StoreResult, error) {
	var res StoreResult
	err := func() error {
		var lastRoomPos int64
		err := tx.QueryRowContext(ctx, `SELECT last_room_position, last_position FROM syncapi_rooms WHERE room_id = $1`, ev.RoomID).Scan(&lastRoomPos, &res.PrevLastPosition)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			lastRoomPos = -1 << 62
		case err != nil:
			return fmt.Errorf("room position: %w", err)
		}
		if ev.RoomPosition <= lastRoomPos {
			res.Duplicate = true
			return nil
		}

		// The visibility that governs an event is the one in the state
		// before it; for a change of visibility, the more permissive of the
		// old and new value, so members can see the change itself.
		visibility, err := currentHistoryVisibility(ctx, tx, ev.RoomID)
		if err != nil {
			return err
		}
		if ev.Type == "m.room.history_visibility" && ev.StateKey != nil && *ev.StateKey == "" && !ev.SoftFailed {
			if visibilityRank(ev.HistoryVisibility) < visibilityRank(visibility) {
				visibility = normaliseVisibility(ev.HistoryVisibility)
			}
		}
		var prevContent sql.NullString
		if ev.StateKey != nil && !ev.SoftFailed {
			if err := tx.QueryRowContext(ctx, `SELECT e.event_json FROM syncapi_current_state s
				JOIN syncapi_events e ON e.event_id = s.event_id
				WHERE s.room_id = $1 AND s.type = $2 AND s.state_key = $3`, ev.RoomID, ev.Type, *ev.StateKey).Scan(&prevContent); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("previous state: %w", err)
			}
			if prevContent.Valid {
				prevContent.String = string(contentOf([]byte(prevContent.String)))
			}
		}
		var stateKey sql.NullString
		if ev.StateKey != nil {
			stateKey = sql.NullString{String: *ev.StateKey, Valid: true}
		}
		err = tx.QueryRowContext(ctx, `INSERT INTO syncapi_events
			(room_id, event_id, sender, type, state_key, event_json, prev_content, history_visibility, soft_failed, txn_device_id, txn_id, origin_server_ts)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (event_id) DO NOTHING RETURNING position`,
			ev.RoomID, ev.EventID, ev.Sender, ev.Type, stateKey, string(ev.JSON), prevContent, visibility, ev.SoftFailed,
			nullString(ev.TxnDeviceID), nullString(ev.TxnID), ev.OriginServerTS).Scan(&res.Position)
		if errors.Is(err, sql.ErrNoRows) {
			// Same event under a new room position: already stored.
			res.Duplicate = true
			_, err = tx.ExecContext(ctx, `UPDATE syncapi_rooms SET last_room_position = $2 WHERE room_id = $1`, ev.RoomID, ev.RoomPosition)
			return err
		}
		if err != nil {
			return fmt.Errorf("insert event: %w", err)
		}

		if err := applyStateDelta(ctx, tx, ev, res.Position, &res); err != nil {
			return err
		}
		if !ev.SoftFailed {
			if err := indexEvent(ctx, tx, ev, res.Position); err != nil {
				return err
			}
		}
		if ev.Redacts != "" && !ev.SoftFailed {
			if err := applyRedaction(ctx, tx, ev); err != nil {
				return err
			}
		}
		if ev.AfterStore != nil {
			if err := ev.AfterStore(ctx, tx, res.Position); err != nil {
				return err
			}
		}
		if !ev.SoftFailed {
			if res.HasChildren, err = hasChildren(ctx, tx, ev.EventID); err != nil {
				return err
			}
		}
		res.Event = Event{Position: res.Position, RoomID: ev.RoomID, EventID: ev.EventID, Sender: ev.Sender, Type: ev.Type,
			StateKey: ev.StateKey, JSON: ev.JSON, HistoryVisibility: visibility, TxnDeviceID: ev.TxnDeviceID, TxnID: ev.TxnID,
			OriginServerTS: ev.OriginServerTS}
		if prevContent.Valid {
			res.Event.PrevContent = []byte(prevContent.String)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO syncapi_rooms (room_id, room_version, last_room_position, last_position)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (room_id) DO UPDATE SET last_room_position = excluded.last_room_position, last_position = excluded.last_position`,
			ev.RoomID, ev.RoomVersion, ev.RoomPosition, res.Position)
		if err != nil {
			return fmt.Errorf("update room: %w", err)
		}
		return nil
	}()
	return res, err
}

func applyStateDelta(ctx context.Context, tx *sql.Tx, ev *NewEvent, position int64, res *StoreResult) error {
	if len(ev.RemovesState) > 0 {
		args := stringArgs([]any{ev.RoomID}, ev.RemovesState)
		rows, err := tx.QueryContext(ctx, `SELECT type, state_key FROM syncapi_current_state
			WHERE room_id = $1 AND event_id IN (`+sqlutil.InList(2, len(ev.RemovesState))+`)`, args...)
		if err != nil {
			return fmt.Errorf("removed state: %w", err)
		}
		var removedMembers []string
		for rows.Next() {
			var typ, sk string
			if err := rows.Scan(&typ, &sk); err != nil {
				rows.Close()
				return err
			}
			if typ == "m.room.member" {
				removedMembers = append(removedMembers, sk)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM syncapi_current_state
			WHERE room_id = $1 AND event_id IN (`+sqlutil.InList(2, len(ev.RemovesState))+`)`, args...); err != nil {
			return fmt.Errorf("remove state: %w", err)
		}
		for _, u := range removedMembers {
			if err := recordMembership(ctx, tx, ev.RoomID, u, "leave", position, res); err != nil {
				return err
			}
		}
	}
	for _, id := range ev.AddsState {
		var typ, membership string
		var sk sql.NullString
		var js string
		if id == ev.EventID {
			typ, membership = ev.Type, ev.Membership
			if ev.StateKey != nil {
				sk = sql.NullString{String: *ev.StateKey, Valid: true}
			}
		} else {
			err := tx.QueryRowContext(ctx, `SELECT type, state_key, event_json FROM syncapi_events WHERE event_id = $1`, id).Scan(&typ, &sk, &js)
			if errors.Is(err, sql.ErrNoRows) {
				// The roomserver promises every added event was published
				// first; a missing one is a bug there, and retrying would
				// stall every room behind this message forever.
				logrus.WithFields(logrus.Fields{"room_id": ev.RoomID, "event_id": id}).Error("syncapi: added state event was never published; skipping it")
				continue
			}
			if err != nil {
				return fmt.Errorf("added state %s: %w", id, err)
			}
			if typ == "m.room.member" {
				membership = membershipOf([]byte(js))
			}
		}
		if !sk.Valid {
			logrus.WithFields(logrus.Fields{"room_id": ev.RoomID, "event_id": id}).Error("syncapi: added state event has no state key; skipping it")
			continue
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_current_state (room_id, type, state_key, event_id, changed_at, membership)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, changed_at = excluded.changed_at, membership = excluded.membership`,
			ev.RoomID, typ, sk.String, id, position, nullString(membership))
		if err != nil {
			return fmt.Errorf("add state %s: %w", id, err)
		}
		if typ == "m.room.member" {
			if err := recordMembership(ctx, tx, ev.RoomID, sk.String, membership, position, res); err != nil {
				return err
			}
		}
	}
	return nil
}

func recordMembership(ctx context.Context, tx *sql.Tx, roomID, userID, membership string, position int64, res *StoreResult) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_membership_changes (room_id, user_id, position, membership)
		VALUES ($1, $2, $3, $4) ON CONFLICT (room_id, user_id, position) DO UPDATE SET membership = excluded.membership`,
		roomID, userID, position, membership)
	if err != nil {
		return fmt.Errorf("record membership: %w", err)
	}
	res.Changes = append(res.Changes, MembershipChange{UserID: userID, Membership: membership})
	return nil
}

// applyRedaction replaces the stored JSON of the redacted event with its
// redacted form (client-server spec §"Redactions"), remembering the
// redaction for unsigned.redacted_because.
func applyRedaction(ctx context.Context, tx *sql.Tx, ev *NewEvent) error {
	var js, roomVersion string
	err := tx.QueryRowContext(ctx, `SELECT e.event_json, r.room_version FROM syncapi_events e
		JOIN syncapi_rooms r ON r.room_id = e.room_id
		WHERE e.event_id = $1 AND e.room_id = $2`, ev.Redacts, ev.RoomID).Scan(&js, &roomVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // an unknown target stays unknown; nothing to strip
	}
	if err != nil {
		return fmt.Errorf("redaction target: %w", err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(roomVersion))
	if err != nil {
		return nil
	}
	redacted, err := verImpl.RedactEventJSON([]byte(js))
	if err != nil {
		return nil
	}
	_, err = tx.ExecContext(ctx, `UPDATE syncapi_events SET event_json = $1, redacted_because = $2 WHERE event_id = $3`,
		string(redacted), string(ev.JSON), ev.Redacts)
	if err != nil {
		return fmt.Errorf("store redaction: %w", err)
	}
	return unindexEvent(ctx, tx, ev.Redacts)
}

func currentHistoryVisibility(ctx context.Context, tx *sql.Tx, roomID string) (string, error) {
	var js string
	err := tx.QueryRowContext(ctx, `SELECT e.event_json FROM syncapi_current_state s
		JOIN syncapi_events e ON e.event_id = s.event_id
		WHERE s.room_id = $1 AND s.type = 'm.room.history_visibility' AND s.state_key = ''`, roomID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return DefaultHistoryVisibility, nil
	}
	if err != nil {
		return "", fmt.Errorf("history visibility: %w", err)
	}
	var c struct {
		Content struct {
			HistoryVisibility string `json:"history_visibility"`
		} `json:"content"`
	}
	_ = json.Unmarshal([]byte(js), &c)
	return normaliseVisibility(c.Content.HistoryVisibility), nil
}

// normaliseVisibility maps unknown values to the default, as the spec
// says to treat them.
func normaliseVisibility(v string) string {
	switch v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return DefaultHistoryVisibility
}

func visibilityRank(v string) int {
	switch normaliseVisibility(v) {
	case "world_readable":
		return 0
	case "shared":
		return 1
	case "invited":
		return 2
	default:
		return 3
	}
}

func contentOf(eventJSON []byte) json.RawMessage {
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(eventJSON, &e)
	if len(e.Content) == 0 {
		return json.RawMessage("{}")
	}
	return e.Content
}

func membershipOf(eventJSON []byte) string {
	var e struct {
		Content struct {
			Membership string `json:"membership"`
		} `json:"content"`
	}
	_ = json.Unmarshal(eventJSON, &e)
	return e.Content.Membership
}

// Event is a stored timeline event.
type Event struct {
	Position          int64
	RoomID            string
	EventID           string
	Sender            string
	Type              string
	StateKey          *string
	JSON              []byte
	PrevContent       []byte
	RedactedBecause   []byte
	HistoryVisibility string
	TxnDeviceID       string
	TxnID             string
	OriginServerTS    int64
}

const eventColumns = `e.position, e.room_id, e.event_id, e.sender, e.type, e.state_key, e.event_json, e.prev_content, e.redacted_because, e.history_visibility, e.txn_device_id, e.txn_id, e.origin_server_ts`

func scanEvents(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var sk, prev, because, txnDev, txnID sql.NullString
		var js string
		if err := rows.Scan(&e.Position, &e.RoomID, &e.EventID, &e.Sender, &e.Type, &sk, &js, &prev, &because, &e.HistoryVisibility, &txnDev, &txnID, &e.OriginServerTS); err != nil {
			return nil, err
		}
		fillEvent(&e, js, sk, prev, because, txnDev, txnID)
		out = append(out, e)
	}
	return out, rows.Err()
}

// fillEvent sets the fields of e scanned as text and nullable columns.
func fillEvent(e *Event, js string, sk, prev, because, txnDev, txnID sql.NullString) {
	e.JSON = []byte(js)
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	if prev.Valid {
		e.PrevContent = []byte(prev.String)
	}
	if because.Valid {
		e.RedactedBecause = []byte(because.String)
	}
	e.TxnDeviceID, e.TxnID = txnDev.String, txnID.String
}

// RangeQuery selects a room's visible (not soft-failed) timeline events
// with After < position <= Before.
type RangeQuery struct {
	RoomID string
	After  int64
	Before int64
	// Backwards returns the newest events first.
	Backwards bool
	Limit     int
	// Types, NotTypes, Senders and NotSenders are exact-match lists that
	// narrow the query in the database (empty: no restriction); wildcard
	// filters are applied by the caller.
	Types      []string
	NotTypes   []string
	Senders    []string
	NotSenders []string
	// OpenFrom: events before this position are returned only if their
	// history visibility lets non-members at the time see them (shared or
	// world_readable). It lets the database skip most of the history a user
	// may never see; the caller still checks each event exactly.
	OpenFrom int64
}

// RoomEvents returns the events of q, at most q.Limit of them, in the
// requested order.
func (d *DB) RoomEvents(ctx context.Context, q RangeQuery) ([]Event, error) {
	args := []any{q.RoomID, q.After, q.Before}
	where := []string{"e.room_id = $1", "e.position > $2", "e.position <= $3", "e.soft_failed = FALSE"}
	if q.OpenFrom > 0 {
		args = append(args, q.OpenFrom)
		where = append(where, fmt.Sprintf("(e.position >= $%d OR e.history_visibility IN ('shared', 'world_readable'))", len(args)))
	}
	where = inListCond(where, &args, "e.type", q.Types, false)
	where = inListCond(where, &args, "e.type", q.NotTypes, true)
	where = inListCond(where, &args, "e.sender", q.Senders, false)
	where = inListCond(where, &args, "e.sender", q.NotSenders, true)
	order := "ASC"
	if q.Backwards {
		order = "DESC"
	}
	args = append(args, q.Limit)
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM syncapi_events e WHERE `+strings.Join(where, " AND ")+
		` ORDER BY e.position `+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("room events: %w", err)
	}
	return scanEvents(rows)
}

// EventByID returns a stored event (soft-failed ones too: they exist, the
// caller decides whether to show them), or nil.
func (d *DB) EventByID(ctx context.Context, eventID string) (*Event, bool, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+`, e.soft_failed FROM syncapi_events e WHERE e.event_id = $1`, eventID)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	if !rows.Next() {
		return nil, false, rows.Err()
	}
	var e Event
	var sk, prev, because, txnDev, txnID sql.NullString
	var js string
	var softFailed bool
	if err := rows.Scan(&e.Position, &e.RoomID, &e.EventID, &e.Sender, &e.Type, &sk, &js, &prev, &because, &e.HistoryVisibility, &txnDev, &txnID, &e.OriginServerTS, &softFailed); err != nil {
		return nil, false, err
	}
	e.JSON = []byte(js)
	if sk.Valid {
		s := sk.String
		e.StateKey = &s
	}
	if prev.Valid {
		e.PrevContent = []byte(prev.String)
	}
	if because.Valid {
		e.RedactedBecause = []byte(because.String)
	}
	e.TxnDeviceID, e.TxnID = txnDev.String, txnID.String
	return &e, softFailed, rows.Err()
}

// RoomVersion returns a known room's version, or "" if unknown.
func (d *DB) RoomVersion(ctx context.Context, roomID string) (string, error) {
	var v string
	err := d.db.QueryRowContext(ctx, `SELECT room_version FROM syncapi_rooms WHERE room_id = $1`, roomID).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// inListCond adds "col IN (...)" (or NOT IN) for a non-empty list.
func inListCond(where []string, args *[]any, col string, list []string, not bool) []string {
	if len(list) == 0 {
		return where
	}
	start := len(*args) + 1
	*args = stringArgs(*args, list)
	op := " IN ("
	if not {
		op = " NOT IN ("
	}
	return append(where, col+op+sqlutil.InList(start, len(list))+")")
}

// EventsByTimestamp returns up to limit visible (not soft-failed) events of
// a room sent at or after ts (forwards, oldest first) or at or before it
// (newest first), for timestamp_to_event.
func (d *DB) EventsByTimestamp(ctx context.Context, roomID string, ts int64, forwards bool, limit int) ([]Event, error) {
	cond, order := "e.origin_server_ts >= $2", "ASC"
	if !forwards {
		cond, order = "e.origin_server_ts <= $2", "DESC"
	}
	rows, err := d.db.QueryContext(ctx, `SELECT `+eventColumns+` FROM syncapi_events e
		WHERE e.room_id = $1 AND `+cond+` AND e.soft_failed = FALSE
		ORDER BY e.origin_server_ts `+order+`, e.position `+order+` LIMIT $3`, roomID, ts, limit)
	if err != nil {
		return nil, fmt.Errorf("events by timestamp: %w", err)
	}
	return scanEvents(rows)
}
