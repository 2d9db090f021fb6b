package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// AccountData is one account data entry; RoomID is "" for global data.
type AccountData struct {
	RoomID   string
	Type     string
	Content  []byte
	Position int64
}

// PutAccountData stores (replacing) an account data entry and returns its
// new account-data stream position.
func (d *DB) PutAccountData(ctx context.Context, userID, roomID, dataType string, content []byte) (int64, error) {
	var pos int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var err error
		if pos, err = nextPosition(ctx, tx, StreamAccountData); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO syncapi_account_data (user_id, room_id, type, content, position)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, position = excluded.position`,
			userID, roomID, dataType, string(content), pos)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("put account data: %w", err)
	}
	advance(&d.pos.accountData, pos)
	return pos, nil
}

// GetAccountData returns one entry's content, or nil if there is none.
func (d *DB) GetAccountData(ctx context.Context, userID, roomID, dataType string) ([]byte, error) {
	var content string
	err := d.db.QueryRowContext(ctx, `SELECT content FROM syncapi_account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, dataType).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get account data: %w", err)
	}
	return []byte(content), nil
}

// AccountDataSince returns a user's entries changed in (after, upto].
func (d *DB) AccountDataSince(ctx context.Context, userID string, after, upto int64) ([]AccountData, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT room_id, type, content, position FROM syncapi_account_data
		WHERE user_id = $1 AND position > $2 AND position <= $3 ORDER BY position`, userID, after, upto)
	if err != nil {
		return nil, fmt.Errorf("account data since: %w", err)
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var content string
		if err := rows.Scan(&a.RoomID, &a.Type, &content, &a.Position); err != nil {
			return nil, err
		}
		a.Content = []byte(content)
		out = append(out, a)
	}
	return out, rows.Err()
}

// Receipt is one user's receipt in a room.
type Receipt struct {
	RoomID   string
	Type     string
	UserID   string
	ThreadID string
	EventID  string
	TS       int64
	Position int64
}

// PutReceipt stores (replacing) a receipt and returns its position.
func (d *DB) PutReceipt(ctx context.Context, r Receipt) (int64, error) {
	var pos int64
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var err error
		if pos, err = nextPosition(ctx, tx, StreamReceipts); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO syncapi_receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, position)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, position = excluded.position`,
			r.RoomID, r.Type, r.UserID, r.ThreadID, r.EventID, r.TS, pos)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("put receipt: %w", err)
	}
	advance(&d.pos.receipts, pos)
	return pos, nil
}

// ReceiptsSince returns the receipts of the given rooms changed in
// (after, upto].
func (d *DB) ReceiptsSince(ctx context.Context, roomIDs []string, after, upto int64) ([]Receipt, error) {
	var out []Receipt
	for start := 0; start < len(roomIDs); start += 500 {
		chunk := roomIDs[start:min(start+500, len(roomIDs))]
		rows, err := d.db.QueryContext(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, position FROM syncapi_receipts
			WHERE position > $1 AND position <= $2 AND room_id IN (`+sqlutil.InList(3, len(chunk))+`) ORDER BY position`,
			stringArgs([]any{after, upto}, chunk)...)
		if err != nil {
			return nil, fmt.Errorf("receipts since: %w", err)
		}
		for rows.Next() {
			var r Receipt
			if err := rows.Scan(&r.RoomID, &r.Type, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.Position); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ToDeviceMessage is one message in a device's inbox.
type ToDeviceMessage struct {
	UserID   string
	DeviceID string
	Sender   string
	Type     string
	Content  []byte
	Position int64
}

// QueueToDevice puts msgs in their devices' inboxes, once per (sender,
// senderDevice, txnID): a repeat of a transaction reports duplicate and
// queues nothing. It returns the last position used.
func (d *DB) QueueToDevice(ctx context.Context, sender, senderDevice, txnID string, msgs []ToDeviceMessage) (pos int64, duplicate bool, err error) {
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO syncapi_send_to_device_txns (sender, device_id, txn_id) VALUES ($1, $2, $3)
			ON CONFLICT (sender, device_id, txn_id) DO NOTHING`, sender, senderDevice, txnID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			duplicate = true
			return nil
		}
		for _, m := range msgs {
			if pos, err = nextPosition(ctx, tx, StreamToDevice); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_send_to_device (position, user_id, device_id, sender, type, content)
				VALUES ($1, $2, $3, $4, $5, $6)`, pos, m.UserID, m.DeviceID, sender, m.Type, string(m.Content)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, false, fmt.Errorf("queue to-device: %w", err)
	}
	advance(&d.pos.toDevice, pos)
	return pos, duplicate, nil
}

// ToDeviceInbox returns up to limit messages for a device with position
// in (after, upto], oldest first.
func (d *DB) ToDeviceInbox(ctx context.Context, userID, deviceID string, after, upto int64, limit int) ([]ToDeviceMessage, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT sender, type, content, position FROM syncapi_send_to_device
		WHERE user_id = $1 AND device_id = $2 AND position > $3 AND position <= $4 ORDER BY position LIMIT $5`,
		userID, deviceID, after, upto, limit)
	if err != nil {
		return nil, fmt.Errorf("to-device inbox: %w", err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		var content string
		if err := rows.Scan(&m.Sender, &m.Type, &content, &m.Position); err != nil {
			return nil, err
		}
		m.Content = []byte(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteToDeviceUpTo removes a device's messages up to and including
// position: the client's since token shows it has received them
// (client-server spec §"Send-to-Device messaging").
func (d *DB) DeleteToDeviceUpTo(ctx context.Context, userID, deviceID string, position int64) error {
	_, err := d.db.ExecContext(ctx, `DELETE FROM syncapi_send_to_device WHERE user_id = $1 AND device_id = $2 AND position <= $3`,
		userID, deviceID, position)
	if err != nil {
		return fmt.Errorf("delete to-device: %w", err)
	}
	return nil
}

// PutFilter stores a user's filter and returns its ID.
func (d *DB) PutFilter(ctx context.Context, userID string, filter []byte) (string, error) {
	var id int64
	if err := d.db.QueryRowContext(ctx, `INSERT INTO syncapi_filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id`,
		userID, string(filter)).Scan(&id); err != nil {
		return "", fmt.Errorf("put filter: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}

// GetFilter returns a user's filter by ID, or nil if that user has no such
// filter.
func (d *DB) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || strconv.FormatInt(id, 10) != filterID {
		return nil, nil
	}
	var f string
	err = d.db.QueryRowContext(ctx, `SELECT filter FROM syncapi_filters WHERE filter_id = $1 AND user_id = $2`, id, userID).Scan(&f)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get filter: %w", err)
	}
	return []byte(f), nil
}
