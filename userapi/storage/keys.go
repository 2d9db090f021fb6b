package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/userapi/api"
)

// KeysComponent is the name under which the end-to-end encryption tables
// are migrated (separately from the account tables).
const KeysComponent = "userapi_keys"

// keyMigrations: device keys, one-time and fallback keys, cross-signing
// keys, signatures uploaded separately from the keys they sign, the
// per-user device-list stream and its outbox, and key backups.
//
// Signatures made after a key was uploaded (by a self-signing key, a
// device, another user's user-signing key) live in userapi_key_signatures
// and are merged into the key when it is read, so a re-upload of the same
// key does not lose them and each can be shown only to whom it may be.
var keyMigrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE userapi_device_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);
CREATE TABLE userapi_one_time_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE TABLE userapi_fallback_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, device_id, algorithm)
);
CREATE TABLE userapi_cross_signing_keys (
	user_id TEXT NOT NULL,
	key_type TEXT NOT NULL,
	public_key TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);
CREATE TABLE userapi_key_signatures (
	target_user_id TEXT NOT NULL,
	target_key_id TEXT NOT NULL,
	signer_user_id TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature TEXT NOT NULL,
	PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE TABLE userapi_device_list_heads (
	user_id TEXT PRIMARY KEY,
	stream_id BIGINT NOT NULL
);
CREATE TABLE userapi_device_list_outbox (
	seq BIGSERIAL PRIMARY KEY,
	user_id TEXT NOT NULL,
	stream_id BIGINT NOT NULL,
	payload TEXT NOT NULL
);
CREATE TABLE userapi_key_backup_versions (
	user_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	algorithm TEXT NOT NULL,
	auth_data TEXT NOT NULL,
	etag BIGINT NOT NULL DEFAULT 0,
	deleted BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, version)
);
CREATE TABLE userapi_key_backup_keys (
	user_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	room_id TEXT NOT NULL,
	session_id TEXT NOT NULL,
	first_message_index BIGINT NOT NULL,
	forwarded_count BIGINT NOT NULL,
	is_verified BOOLEAN NOT NULL,
	session_data TEXT NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
);
`},
}

// ErrKeyConflict: a one-time key ID is already stored with other content.
var ErrKeyConflict = errors.New("one-time key ID already used for a different key")

// Cross-signing key types, as stored in key_type.
const (
	MasterKey      = "master"
	SelfSigningKey = "self_signing"
	UserSigningKey = "user_signing"
)

// OneTimeKey is a one-time or fallback key: KeyID is "algorithm:id".
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	JSON      []byte
}

// KeyUpload is what one /keys/upload writes, in one transaction.
type KeyUpload struct {
	UserID   string
	DeviceID string
	// DeviceKeys (canonical JSON) replaces the device's keys when not nil.
	DeviceKeys   []byte
	OneTimeKeys  []OneTimeKey
	FallbackKeys []OneTimeKey
}

// Signature is one signature of a key by another key.
type Signature struct {
	TargetUserID string
	// TargetKeyID is a device ID or a cross-signing public key.
	TargetKeyID  string
	SignerUserID string
	// SignerKeyID is "ed25519:<device ID or public key>".
	SignerKeyID string
	Signature   string
}

// CrossSigningKey is one stored cross-signing key.
type CrossSigningKey struct {
	PublicKey string
	JSON      []byte
}

// DeviceKeysRow is a device's uploaded keys and its display name.
type DeviceKeysRow struct {
	DeviceID    string
	JSON        []byte
	DisplayName string
}

// UploadKeys applies an upload. It fails with ErrNotFound if the device no
// longer exists (deleted while the request was on its way) and with
// ErrKeyConflict if a one-time key ID is reused for a different key. When
// the device keys change, a device-list update is queued in the outbox.
func (s *Storage) UploadKeys(ctx context.Context, up KeyUpload) (deviceKeysChanged bool, err error) {
	err = s.db.WithTx(ctx, func(tx *sql.Tx) error {
		var displayName string
		err := tx.QueryRowContext(ctx, `SELECT display_name FROM userapi_devices WHERE user_id = $1 AND device_id = $2`,
			up.UserID, up.DeviceID).Scan(&displayName)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("check device: %w", err)
		}
		if up.DeviceKeys != nil {
			var old string
			err := tx.QueryRowContext(ctx, `SELECT key_json FROM userapi_device_keys WHERE user_id = $1 AND device_id = $2`,
				up.UserID, up.DeviceID).Scan(&old)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read device keys: %w", err)
			}
			if old != string(up.DeviceKeys) {
				deviceKeysChanged = true
				if _, err := tx.ExecContext(ctx, `
INSERT INTO userapi_device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, up.UserID, up.DeviceID, string(up.DeviceKeys)); err != nil {
					return fmt.Errorf("store device keys: %w", err)
				}
				// Signatures of the old keys do not sign the new ones.
				if old != "" && !sameKeys(old, up.DeviceKeys) {
					if _, err := tx.ExecContext(ctx,
						`DELETE FROM userapi_key_signatures WHERE target_user_id = $1 AND target_key_id = $2`, up.UserID, up.DeviceID); err != nil {
						return fmt.Errorf("drop stale signatures: %w", err)
					}
				}
			}
		}
		for _, k := range up.OneTimeKeys {
			res, err := tx.ExecContext(ctx, `
INSERT INTO userapi_one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT DO NOTHING`, up.UserID, up.DeviceID, k.Algorithm, k.KeyID, string(k.JSON))
			if err != nil {
				return fmt.Errorf("store one-time key: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				var existing string
				if err := tx.QueryRowContext(ctx, `
SELECT key_json FROM userapi_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
					up.UserID, up.DeviceID, k.Algorithm, k.KeyID).Scan(&existing); err != nil {
					return fmt.Errorf("read one-time key: %w", err)
				}
				if existing != string(k.JSON) {
					return fmt.Errorf("%w: %s", ErrKeyConflict, k.KeyID)
				}
			}
		}
		for _, k := range up.FallbackKeys {
			// A re-upload of the same key keeps its used flag; a new
			// key starts unused (client-server spec §"One-time and
			// fallback keys").
			if _, err := tx.ExecContext(ctx, `
INSERT INTO userapi_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) VALUES ($1, $2, $3, $4, $5, FALSE)
ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE
WHERE userapi_fallback_keys.key_json <> excluded.key_json OR userapi_fallback_keys.key_id <> excluded.key_id`,
				up.UserID, up.DeviceID, k.Algorithm, k.KeyID, string(k.JSON)); err != nil {
				return fmt.Errorf("store fallback key: %w", err)
			}
		}
		if deviceKeysChanged {
			keys, err := deviceKeysWithSelfSignatures(ctx, tx, up.UserID, up.DeviceID)
			if err != nil {
				return err
			}
			return queueUpdate(ctx, tx, api.DeviceListUpdate{UserID: up.UserID, DeviceID: up.DeviceID, DeviceDisplayName: displayName, Keys: keys})
		}
		return nil
	})
	return deviceKeysChanged, err
}

// sameKeys says whether two device-key objects name the same keys, so a
// re-upload that only adds signatures keeps the signatures stored apart.
func sameKeys(a string, b []byte) bool {
	var x, y struct {
		Keys map[string]string `json:"keys"`
	}
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal(b, &y) != nil || len(x.Keys) != len(y.Keys) {
		return false
	}
	for k, v := range x.Keys {
		if y.Keys[k] != v {
			return false
		}
	}
	return true
}

// DeviceKeys returns the uploaded keys of a user's devices (all when
// deviceIDs is empty), with each device's display name.
func (s *Storage) DeviceKeys(ctx context.Context, userID string, deviceIDs []string) ([]DeviceKeysRow, error) {
	q := `SELECT k.device_id, k.key_json, COALESCE(d.display_name, '')
FROM userapi_device_keys k LEFT JOIN userapi_devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
WHERE k.user_id = $1`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		q += ` AND k.device_id IN (` + sqlutil.InList(2, len(deviceIDs)) + `)`
		for _, d := range deviceIDs {
			args = append(args, d)
		}
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY k.device_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("device keys of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []DeviceKeysRow
	for rows.Next() {
		var r DeviceKeysRow
		var js string
		if err := rows.Scan(&r.DeviceID, &js, &r.DisplayName); err != nil {
			return nil, fmt.Errorf("device keys of %s: %w", userID, err)
		}
		r.JSON = []byte(js)
		out = append(out, r)
	}
	return out, rows.Err()
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys per algorithm
// and lists the algorithms of its unused fallback keys.
func (s *Storage) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	counts := map[string]int{}
	rows, err := s.db.QueryContext(ctx,
		`SELECT algorithm, COUNT(*) FROM userapi_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, nil, err
		}
		counts[alg] = n
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	frows, err := s.db.QueryContext(ctx,
		`SELECT algorithm FROM userapi_fallback_keys WHERE user_id = $1 AND device_id = $2 AND used = FALSE ORDER BY algorithm`, userID, deviceID)
	if err != nil {
		return nil, nil, fmt.Errorf("unused fallback keys: %w", err)
	}
	defer frows.Close()
	fallback := []string{}
	for frows.Next() {
		var alg string
		if err := frows.Scan(&alg); err != nil {
			return nil, nil, err
		}
		fallback = append(fallback, alg)
	}
	return counts, fallback, frows.Err()
}

// claimAttempts bounds the retries of a one-time key claim that lost a
// race for a key to a concurrent claim.
const claimAttempts = 8

// ClaimKey removes and returns one one-time key of the device for
// algorithm, or, when none is left, returns its fallback key and marks it
// used. ok is false when the device has neither.
//
// The DELETE ... RETURNING is what hands a key out: of two concurrent
// claims that picked the same key, only one deletes the row, and the
// other tries the next key. So no key is ever given out twice.
func (s *Storage) ClaimKey(ctx context.Context, userID, deviceID, algorithm string) (keyID string, keyJSON []byte, ok bool, err error) {
	for range claimAttempts {
		var js string
		err = s.db.QueryRowContext(ctx, `
DELETE FROM userapi_one_time_keys
WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = (
	SELECT key_id FROM userapi_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1)
RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&keyID, &js)
		if err == nil {
			return keyID, []byte(js), true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", nil, false, fmt.Errorf("claim one-time key: %w", err)
		}
		var left int
		if err := s.db.QueryRowContext(ctx,
			`SELECT COUNT(*) FROM userapi_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3`,
			userID, deviceID, algorithm).Scan(&left); err != nil {
			return "", nil, false, fmt.Errorf("count one-time keys: %w", err)
		}
		if left == 0 {
			break
		}
	}
	var js string
	err = s.db.QueryRowContext(ctx, `
UPDATE userapi_fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&keyID, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, fmt.Errorf("claim fallback key: %w", err)
	}
	return keyID, []byte(js), true, nil
}

// CrossSigningKeys returns the user's cross-signing keys by key type.
func (s *Storage) CrossSigningKeys(ctx context.Context, userID string) (map[string]CrossSigningKey, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT key_type, public_key, key_json FROM userapi_cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("cross-signing keys of %s: %w", userID, err)
	}
	defer rows.Close()
	out := map[string]CrossSigningKey{}
	for rows.Next() {
		var typ, pub, js string
		if err := rows.Scan(&typ, &pub, &js); err != nil {
			return nil, err
		}
		out[typ] = CrossSigningKey{PublicKey: pub, JSON: []byte(js)}
	}
	return out, rows.Err()
}

// SetCrossSigningKeys stores keys by type, replacing older ones; with
// dropTypes, stored keys of those types are removed (a new master key
// invalidates self-signing and user-signing keys signed by the old one).
// Signatures of and by replaced keys are dropped. A device-list update
// carrying the master and self-signing keys is queued.
func (s *Storage) SetCrossSigningKeys(ctx context.Context, userID string, keys map[string]CrossSigningKey, dropTypes []string) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		old := map[string]string{}
		rows, err := tx.QueryContext(ctx, `SELECT key_type, public_key FROM userapi_cross_signing_keys WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("read cross-signing keys: %w", err)
		}
		for rows.Next() {
			var typ, pub string
			if err := rows.Scan(&typ, &pub); err != nil {
				rows.Close()
				return err
			}
			old[typ] = pub
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		dropKey := func(typ string) error {
			pub, ok := old[typ]
			if !ok {
				return nil
			}
			if _, err := tx.ExecContext(ctx,
				`DELETE FROM userapi_key_signatures WHERE (target_user_id = $1 AND target_key_id = $2) OR (signer_user_id = $1 AND signer_key_id = $3)`,
				userID, pub, "ed25519:"+pub); err != nil {
				return fmt.Errorf("drop signatures of replaced key: %w", err)
			}
			return nil
		}
		for typ, k := range keys {
			if old[typ] != k.PublicKey {
				if err := dropKey(typ); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `
INSERT INTO userapi_cross_signing_keys (user_id, key_type, public_key, key_json) VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id, key_type) DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json`,
				userID, typ, k.PublicKey, string(k.JSON)); err != nil {
				return fmt.Errorf("store %s key: %w", typ, err)
			}
		}
		for _, typ := range dropTypes {
			if err := dropKey(typ); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_cross_signing_keys WHERE user_id = $1 AND key_type = $2`, userID, typ); err != nil {
				return fmt.Errorf("drop %s key: %w", typ, err)
			}
		}
		return queueCrossSigningUpdate(ctx, tx, userID)
	})
}

// Signatures returns the separately stored signatures of a user's keys.
func (s *Storage) Signatures(ctx context.Context, targetUserID string) ([]Signature, error) {
	rows, err := s.db.QueryContext(ctx, `
SELECT target_key_id, signer_user_id, signer_key_id, signature FROM userapi_key_signatures
WHERE target_user_id = $1 ORDER BY target_key_id, signer_user_id, signer_key_id`, targetUserID)
	if err != nil {
		return nil, fmt.Errorf("signatures of %s: %w", targetUserID, err)
	}
	defer rows.Close()
	var out []Signature
	for rows.Next() {
		sig := Signature{TargetUserID: targetUserID}
		if err := rows.Scan(&sig.TargetKeyID, &sig.SignerUserID, &sig.SignerKeyID, &sig.Signature); err != nil {
			return nil, err
		}
		out = append(out, sig)
	}
	return out, rows.Err()
}

// AddSignatures stores checked signatures and queues one device-list update
// per key that changed: for signatures of one's own device, that device;
// for signatures of one's own master key, a cross-signing update; for
// signatures of another user's master key, a cross-signing update of the
// signer, whose other devices must learn of it (the signature is visible
// to the signer only).
func (s *Storage) AddSignatures(ctx context.Context, sigs []Signature) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		type target struct{ user, key string }
		updated := map[target]bool{}
		var order []target
		for _, sig := range sigs {
			if _, err := tx.ExecContext(ctx, `
INSERT INTO userapi_key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
				sig.TargetUserID, sig.TargetKeyID, sig.SignerUserID, sig.SignerKeyID, sig.Signature); err != nil {
				return fmt.Errorf("store signature: %w", err)
			}
			t := target{sig.TargetUserID, sig.TargetKeyID}
			if sig.TargetUserID != sig.SignerUserID {
				t = target{sig.SignerUserID, ""}
			}
			if !updated[t] {
				updated[t] = true
				order = append(order, t)
			}
		}
		for _, t := range order {
			var displayName string
			err := tx.QueryRowContext(ctx, `SELECT display_name FROM userapi_devices WHERE user_id = $1 AND device_id = $2`, t.user, t.key).Scan(&displayName)
			if errors.Is(err, sql.ErrNoRows) || t.key == "" {
				// Not a device: a cross-signing key changed.
				if err := queueCrossSigningUpdate(ctx, tx, t.user); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			keys, err := deviceKeysWithSelfSignatures(ctx, tx, t.user, t.key)
			if err != nil {
				return err
			}
			if err := queueUpdate(ctx, tx, api.DeviceListUpdate{UserID: t.user, DeviceID: t.key, DeviceDisplayName: displayName, Keys: keys}); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteKeysOfRemovedDevices deletes the keys of the user's devices that
// no longer exist and queues a "deleted" device-list update for each. The
// device tables are changed by several paths (logout, device deletion,
// password change, deactivation); reconciling afterwards covers them all,
// and a crash in between is repaired by the next call.
func (s *Storage) DeleteKeysOfRemovedDevices(ctx context.Context, userID string) ([]string, error) {
	var removed []string
	err := s.db.WithTx(ctx, func(tx *sql.Tx) error {
		removed = removed[:0]
		rows, err := tx.QueryContext(ctx, `
SELECT device_id FROM userapi_device_keys WHERE user_id = $1
	AND device_id NOT IN (SELECT device_id FROM userapi_devices WHERE user_id = $1)
UNION
SELECT device_id FROM userapi_one_time_keys WHERE user_id = $1
	AND device_id NOT IN (SELECT device_id FROM userapi_devices WHERE user_id = $1)
UNION
SELECT device_id FROM userapi_fallback_keys WHERE user_id = $1
	AND device_id NOT IN (SELECT device_id FROM userapi_devices WHERE user_id = $1)`, userID)
		if err != nil {
			return fmt.Errorf("find keys of removed devices: %w", err)
		}
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				rows.Close()
				return err
			}
			removed = append(removed, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, d := range removed {
			var hadDeviceKeys int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM userapi_device_keys WHERE user_id = $1 AND device_id = $2`,
				userID, d).Scan(&hadDeviceKeys); err != nil {
				return err
			}
			for _, q := range []string{
				`DELETE FROM userapi_device_keys WHERE user_id = $1 AND device_id = $2`,
				`DELETE FROM userapi_one_time_keys WHERE user_id = $1 AND device_id = $2`,
				`DELETE FROM userapi_fallback_keys WHERE user_id = $1 AND device_id = $2`,
				`DELETE FROM userapi_key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
			} {
				if _, err := tx.ExecContext(ctx, q, userID, d); err != nil {
					return fmt.Errorf("delete keys of %s: %w", d, err)
				}
			}
			if hadDeviceKeys > 0 {
				if err := queueUpdate(ctx, tx, api.DeviceListUpdate{UserID: userID, DeviceID: d, Deleted: true}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return removed, err
}

// deviceKeysWithSelfSignatures reads a device's keys with the signatures
// its own user made of it merged in: what every other user may see, and
// what a device-list update carries.
func deviceKeysWithSelfSignatures(ctx context.Context, tx *sql.Tx, userID, deviceID string) (json.RawMessage, error) {
	var js string
	if err := tx.QueryRowContext(ctx, `SELECT key_json FROM userapi_device_keys WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&js); err != nil {
		return nil, fmt.Errorf("read device keys: %w", err)
	}
	sigs, err := signaturesOf(ctx, tx, userID, deviceID, userID)
	if err != nil {
		return nil, err
	}
	return MergeSignatures([]byte(js), sigs)
}

func signaturesOf(ctx context.Context, tx *sql.Tx, targetUserID, targetKeyID, signerUserID string) ([]Signature, error) {
	rows, err := tx.QueryContext(ctx, `
SELECT signer_key_id, signature FROM userapi_key_signatures
WHERE target_user_id = $1 AND target_key_id = $2 AND signer_user_id = $3`, targetUserID, targetKeyID, signerUserID)
	if err != nil {
		return nil, fmt.Errorf("read signatures: %w", err)
	}
	defer rows.Close()
	var out []Signature
	for rows.Next() {
		sig := Signature{TargetUserID: targetUserID, TargetKeyID: targetKeyID, SignerUserID: signerUserID}
		if err := rows.Scan(&sig.SignerKeyID, &sig.Signature); err != nil {
			return nil, err
		}
		out = append(out, sig)
	}
	return out, rows.Err()
}

// MergeSignatures adds sigs to the "signatures" object of a signed JSON
// object.
func MergeSignatures(obj []byte, sigs []Signature) (json.RawMessage, error) {
	if len(sigs) == 0 {
		return obj, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, fmt.Errorf("stored key is not an object: %w", err)
	}
	all := map[string]map[string]string{}
	if raw, ok := m["signatures"]; ok {
		if err := json.Unmarshal(raw, &all); err != nil {
			return nil, fmt.Errorf("stored signatures: %w", err)
		}
	}
	for _, sig := range sigs {
		if all[sig.SignerUserID] == nil {
			all[sig.SignerUserID] = map[string]string{}
		}
		all[sig.SignerUserID][sig.SignerKeyID] = sig.Signature
	}
	b, err := json.Marshal(all)
	if err != nil {
		return nil, err
	}
	m["signatures"] = b
	return json.Marshal(m)
}

// queueCrossSigningUpdate queues an update carrying the user's master and
// self-signing keys with the user's own signatures of them.
func queueCrossSigningUpdate(ctx context.Context, tx *sql.Tx, userID string) error {
	u := api.DeviceListUpdate{UserID: userID}
	rows, err := tx.QueryContext(ctx,
		`SELECT key_type, public_key, key_json FROM userapi_cross_signing_keys WHERE user_id = $1 AND key_type IN ($2, $3)`,
		userID, MasterKey, SelfSigningKey)
	if err != nil {
		return fmt.Errorf("read cross-signing keys: %w", err)
	}
	type key struct{ typ, pub, js string }
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.typ, &k.pub, &k.js); err != nil {
			rows.Close()
			return err
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		sigs, err := signaturesOf(ctx, tx, userID, k.pub, userID)
		if err != nil {
			return err
		}
		merged, err := MergeSignatures([]byte(k.js), sigs)
		if err != nil {
			return err
		}
		if k.typ == MasterKey {
			u.MasterKey = merged
		} else {
			u.SelfSigningKey = merged
		}
	}
	return queueUpdate(ctx, tx, u)
}

// queueUpdate numbers an update in the user's device-list stream and puts
// it in the outbox, in the caller's transaction. The head row's lock
// orders concurrent updates of one user, so stream IDs commit in order.
func queueUpdate(ctx context.Context, tx *sql.Tx, u api.DeviceListUpdate) error {
	if err := tx.QueryRowContext(ctx, `
INSERT INTO userapi_device_list_heads (user_id, stream_id) VALUES ($1, 1)
ON CONFLICT (user_id) DO UPDATE SET stream_id = userapi_device_list_heads.stream_id + 1
RETURNING stream_id`, u.UserID).Scan(&u.StreamID); err != nil {
		return fmt.Errorf("next device-list stream ID: %w", err)
	}
	u.PrevID = []int64{}
	if u.StreamID > 1 {
		u.PrevID = []int64{u.StreamID - 1}
	}
	payload, err := json.Marshal(u)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO userapi_device_list_outbox (user_id, stream_id, payload) VALUES ($1, $2, $3)`,
		u.UserID, u.StreamID, string(payload)); err != nil {
		return fmt.Errorf("queue device-list update: %w", err)
	}
	return nil
}

// OutboxEntry is a queued device-list update.
type OutboxEntry struct {
	Seq      int64
	UserID   string
	StreamID int64
	Payload  []byte
}

// PendingDeviceListUpdates returns up to limit queued updates, oldest first.
func (s *Storage) PendingDeviceListUpdates(ctx context.Context, limit int) ([]OutboxEntry, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT seq, user_id, stream_id, payload FROM userapi_device_list_outbox ORDER BY seq LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("read device-list outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		var e OutboxEntry
		var p string
		if err := rows.Scan(&e.Seq, &e.UserID, &e.StreamID, &p); err != nil {
			return nil, err
		}
		e.Payload = []byte(p)
		out = append(out, e)
	}
	return out, rows.Err()
}

// DeleteDeviceListUpdate removes a published update from the outbox.
func (s *Storage) DeleteDeviceListUpdate(ctx context.Context, seq int64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM userapi_device_list_outbox WHERE seq = $1`, seq); err != nil {
		return fmt.Errorf("delete from device-list outbox: %w", err)
	}
	return nil
}
