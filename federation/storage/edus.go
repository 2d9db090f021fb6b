package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// ComponentEDUs is the name under which the tables of device-list
// federation are migrated (server-server spec §"Device Management").
const ComponentEDUs = "federation_edus"

var eduMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `
-- Finds the rooms of a user: who hears of its device changes, and whether
-- it is in the room an EDU names.
CREATE INDEX federation_joined_members_user_idx ON federation_joined_members (user_id, room_id);
-- The stream ID of the last m.device_list_update sent for each local user:
-- the prev_id of the next one and the stream_id of /user/devices.
CREATE TABLE federation_device_lists_sent (
	user_id TEXT PRIMARY KEY,
	stream_id BIGINT NOT NULL
);
-- Other servers' users' device lists, kept from their EDUs and resyncs.
CREATE TABLE federation_remote_device_users (
	user_id TEXT PRIMARY KEY,
	-- The remote server's stream ID of the newest update applied.
	stream_id BIGINT NOT NULL,
	-- A stale list (a gap in the updates, or never fetched whole) is not
	-- answered from; a query asks the remote server instead.
	stale BOOLEAN NOT NULL,
	master_key TEXT NOT NULL DEFAULT '',
	self_signing_key TEXT NOT NULL DEFAULT '',
	-- Counts the changes seen here, numbering this server's device-list
	-- notifications for the user (remote stream IDs need not be usable).
	change_seq BIGINT NOT NULL
);
CREATE TABLE federation_remote_devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	display_name TEXT NOT NULL DEFAULT '',
	-- The device's keys as published; '' for a device without keys.
	keys_json TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
`},
}

// IsJoined says whether userID is joined to roomID, as far as the joined
// members kept from the roomserver output know.
func (d *Database) IsJoined(ctx context.Context, roomID, userID string) (bool, error) {
	var one int
	err := d.db.QueryRowContext(ctx, `SELECT 1 FROM federation_joined_members WHERE user_id = $1 AND room_id = $2 LIMIT 1`,
		userID, roomID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("select joined %s in %s: %w", userID, roomID, err)
	}
	return true, nil
}

// ServersSharingRoomWith lists the servers with a member joined to a room
// userID is joined to, sorted: those that track userID's devices.
func (d *Database) ServersSharingRoomWith(ctx context.Context, userID string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT DISTINCT o.server_name FROM federation_joined_members m
		JOIN federation_joined_members o ON o.room_id = m.room_id WHERE m.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("select servers sharing a room with %s: %w", userID, err)
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
	sort.Strings(out)
	return out, rows.Err()
}

// DeviceListSent is the stream ID of the last device-list update sent for
// a local user, 0 if none.
func (d *Database) DeviceListSent(ctx context.Context, userID string) (int64, error) {
	var id int64
	err := d.db.QueryRowContext(ctx, `SELECT stream_id FROM federation_device_lists_sent WHERE user_id = $1`, userID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("select device list sent for %s: %w", userID, err)
	}
	return id, nil
}

// RemoteDevice is one device of a remote user.
type RemoteDevice struct {
	DeviceID    string
	DisplayName string
	// Keys is the device's DeviceKeys object, nil if it has none.
	Keys []byte
}

// RemoteDeviceList is what is cached of a remote user's devices.
type RemoteDeviceList struct {
	UserID   string
	StreamID int64
	Stale    bool
	// MasterKey and SelfSigningKey are the cross-signing keys' JSON, nil
	// when unknown.
	MasterKey, SelfSigningKey []byte
	Devices                   []RemoteDevice
	// ChangeSeq numbers the changes applied here.
	ChangeSeq int64
}

// RemoteDeviceList returns the cached device list of userID, or nil.
func (d *Database) RemoteDeviceList(ctx context.Context, userID string) (*RemoteDeviceList, error) {
	l := &RemoteDeviceList{UserID: userID}
	var master, ssk string
	err := d.db.QueryRowContext(ctx, `SELECT stream_id, stale, master_key, self_signing_key, change_seq
		FROM federation_remote_device_users WHERE user_id = $1`, userID).Scan(&l.StreamID, &l.Stale, &master, &ssk, &l.ChangeSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("select remote device list of %s: %w", userID, err)
	}
	if master != "" {
		l.MasterKey = []byte(master)
	}
	if ssk != "" {
		l.SelfSigningKey = []byte(ssk)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT device_id, display_name, keys_json FROM federation_remote_devices
		WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("select remote devices of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var dev RemoteDevice
		var keys string
		if err := rows.Scan(&dev.DeviceID, &dev.DisplayName, &keys); err != nil {
			return nil, err
		}
		if keys != "" {
			dev.Keys = []byte(keys)
		}
		l.Devices = append(l.Devices, dev)
	}
	return l, rows.Err()
}

// RemoteDeviceUpdate is one m.device_list_update EDU.
type RemoteDeviceUpdate struct {
	UserID      string
	DeviceID    string
	DisplayName string
	Deleted     bool
	Keys        []byte
	StreamID    int64
	PrevIDs     []int64
}

// DeviceUpdateOutcome says what ApplyRemoteDeviceUpdate did.
type DeviceUpdateOutcome int

const (
	// UpdateDuplicate: the update was already applied; nothing changed.
	UpdateDuplicate DeviceUpdateOutcome = iota
	// UpdateApplied: the cached list now includes the update.
	UpdateApplied
	// UpdateGap: an update before this one was missed; the list is now
	// stale and must be fetched whole.
	UpdateGap
)

// ApplyRemoteDeviceUpdate applies an update to the cached list, in one
// transaction. A user not cached yet gets a stale entry: one update is not
// the whole list. changeSeq is the entry's new change number (0 for a
// duplicate).
func (d *Database) ApplyRemoteDeviceUpdate(ctx context.Context, u RemoteDeviceUpdate) (outcome DeviceUpdateOutcome, changeSeq int64, err error) {
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var stored int64
		var stale bool
		err := tx.QueryRowContext(ctx, `SELECT stream_id, stale, change_seq FROM federation_remote_device_users WHERE user_id = $1`,
			u.UserID).Scan(&stored, &stale, &changeSeq)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			outcome, changeSeq = UpdateGap, 1
			_, err = tx.ExecContext(ctx, `INSERT INTO federation_remote_device_users (user_id, stream_id, stale, change_seq)
				VALUES ($1, $2, TRUE, 1)`, u.UserID, u.StreamID)
			return err
		case err != nil:
			return err
		case u.StreamID <= stored:
			outcome, changeSeq = UpdateDuplicate, 0
			return nil
		}
		// Spec: server-server §"Device Management": every prev_id must be
		// an update already seen, else one was missed.
		outcome = UpdateApplied
		for _, p := range u.PrevIDs {
			if p > stored {
				outcome = UpdateGap
			}
		}
		if outcome == UpdateGap || stale {
			stale = true
		}
		changeSeq++
		if _, err := tx.ExecContext(ctx, `UPDATE federation_remote_device_users SET stream_id = $2, stale = $3, change_seq = $4
			WHERE user_id = $1`, u.UserID, u.StreamID, stale, changeSeq); err != nil {
			return err
		}
		if u.Deleted {
			_, err = tx.ExecContext(ctx, `DELETE FROM federation_remote_devices WHERE user_id = $1 AND device_id = $2`, u.UserID, u.DeviceID)
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO federation_remote_devices (user_id, device_id, display_name, keys_json)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO UPDATE
			SET display_name = excluded.display_name, keys_json = excluded.keys_json`,
			u.UserID, u.DeviceID, u.DisplayName, string(u.Keys))
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("apply device list update of %s: %w", u.UserID, err)
	}
	return outcome, changeSeq, nil
}

// ErrOlderThanCache: a fetched device list predates updates already
// applied; it is not stored, and the cached list stays stale.
var ErrOlderThanCache = errors.New("device list is older than the updates already applied")

// ReplaceRemoteDeviceList stores a whole device list fetched from the
// user's server (GET /user/devices) and returns the change number.
func (d *Database) ReplaceRemoteDeviceList(ctx context.Context, l RemoteDeviceList) (changeSeq int64, err error) {
	err = d.db.WithTx(ctx, func(tx *sql.Tx) error {
		// The upsert locks the user's row first, so an update applied
		// concurrently either precedes this list (and is refused by the
		// WHERE) or follows it.
		err := tx.QueryRowContext(ctx, `INSERT INTO federation_remote_device_users
			(user_id, stream_id, stale, master_key, self_signing_key, change_seq) VALUES ($1, $2, FALSE, $3, $4, 1)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = FALSE, master_key = excluded.master_key,
			self_signing_key = excluded.self_signing_key, change_seq = federation_remote_device_users.change_seq + 1
			WHERE federation_remote_device_users.stream_id <= excluded.stream_id
			RETURNING change_seq`, l.UserID, l.StreamID, string(l.MasterKey), string(l.SelfSigningKey)).Scan(&changeSeq)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrOlderThanCache
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM federation_remote_devices WHERE user_id = $1`, l.UserID); err != nil {
			return err
		}
		for _, dev := range l.Devices {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_remote_devices (user_id, device_id, display_name, keys_json)
				VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO NOTHING`,
				l.UserID, dev.DeviceID, dev.DisplayName, string(dev.Keys)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("replace device list of %s: %w", l.UserID, err)
	}
	return changeSeq, nil
}

// SetRemoteCrossSigningKeys stores a remote user's new master and/or
// self-signing key (nil leaves one as it is) from m.signing_key_update.
// A user not cached yet gets a stale entry holding them.
func (d *Database) SetRemoteCrossSigningKeys(ctx context.Context, userID string, master, selfSigning []byte) (changeSeq int64, err error) {
	err = d.db.QueryRowContext(ctx, `INSERT INTO federation_remote_device_users
		(user_id, stream_id, stale, master_key, self_signing_key, change_seq) VALUES ($1, 0, TRUE, $2, $3, 1)
		ON CONFLICT (user_id) DO UPDATE SET
		master_key = CASE WHEN $2 = '' THEN federation_remote_device_users.master_key ELSE $2 END,
		self_signing_key = CASE WHEN $3 = '' THEN federation_remote_device_users.self_signing_key ELSE $3 END,
		change_seq = federation_remote_device_users.change_seq + 1
		RETURNING change_seq`, userID, string(master), string(selfSigning)).Scan(&changeSeq)
	if err != nil {
		return 0, fmt.Errorf("set cross-signing keys of %s: %w", userID, err)
	}
	return changeSeq, nil
}

// MarkRemoteDeviceListStale makes the next query for userID ask its server.
func (d *Database) MarkRemoteDeviceListStale(ctx context.Context, userID string) error {
	_, err := d.db.ExecContext(ctx, `UPDATE federation_remote_device_users SET stale = TRUE WHERE user_id = $1`, userID)
	if err != nil {
		return fmt.Errorf("mark device list of %s stale: %w", userID, err)
	}
	return nil
}

// HasJoinedRoom says whether userID is joined to any room known here: only
// then does its server send this one its device-list updates.
func (d *Database) HasJoinedRoom(ctx context.Context, userID string) (bool, error) {
	var one int
	err := d.db.QueryRowContext(ctx, `SELECT 1 FROM federation_joined_members WHERE user_id = $1 LIMIT 1`, userID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("select rooms of %s: %w", userID, err)
	}
	return true, nil
}

// EnqueueDeviceListEDU queues an m.device_list_update for destinations and
// records streamID as the last one sent for userID, in one transaction:
// GET /user/devices reports that stream ID, so it must never be seen
// before the update itself is queued, nor the update be sent without it.
func (d *Database) EnqueueDeviceListEDU(ctx context.Context, destinations []string, edu []byte, userID string, streamID int64) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for _, dest := range destinations {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_queue_edus (destination, edu_json) VALUES ($1, $2)`, dest, string(edu)); err != nil {
				return fmt.Errorf("queue edu for %s: %w", dest, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_device_lists_sent (user_id, stream_id) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`, userID, streamID); err != nil {
			return fmt.Errorf("record device list sent for %s: %w", userID, err)
		}
		return nil
	})
}
