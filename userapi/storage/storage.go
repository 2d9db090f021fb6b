// Package storage holds the user API's tables: accounts, devices with their
// access tokens, profiles, OpenID tokens, user-interactive authentication
// sessions and shared-secret registration nonces. One SQL text serves both
// SQLite and PostgreSQL.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Component is the name under which the tables are migrated.
const Component = "userapi"

// migrations of the user API's schema. Each device holds at most one access
// token (client-server spec §"Relationship between access tokens and
// devices"), so the token's SHA-256 lives on the device row; its unique
// index makes token verification one index lookup.
var migrations = []sqlutil.Migration{
	{Version: 1, SQL: `
CREATE TABLE userapi_accounts (
	user_id TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL DEFAULT '',
	is_admin BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated BOOLEAN NOT NULL DEFAULT FALSE,
	created_ts BIGINT NOT NULL
);
CREATE TABLE userapi_devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	display_name TEXT NOT NULL DEFAULT '',
	token_hash BYTEA NOT NULL,
	created_ts BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (user_id, device_id)
);
CREATE UNIQUE INDEX userapi_devices_token_hash_idx ON userapi_devices (token_hash);
CREATE TABLE userapi_profiles (
	user_id TEXT PRIMARY KEY,
	displayname TEXT NOT NULL DEFAULT '',
	avatar_url TEXT NOT NULL DEFAULT ''
);
CREATE TABLE userapi_openid_tokens (
	token_hash BYTEA PRIMARY KEY,
	user_id TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX userapi_openid_tokens_expires_idx ON userapi_openid_tokens (expires_ts);
CREATE TABLE userapi_uia_sessions (
	session_id TEXT PRIMARY KEY,
	operation TEXT NOT NULL,
	user_id TEXT NOT NULL,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX userapi_uia_sessions_expires_idx ON userapi_uia_sessions (expires_ts);
CREATE TABLE userapi_uia_stages (
	session_id TEXT NOT NULL,
	stage TEXT NOT NULL,
	PRIMARY KEY (session_id, stage)
);
CREATE TABLE userapi_registration_nonces (
	nonce TEXT PRIMARY KEY,
	expires_ts BIGINT NOT NULL
);
CREATE INDEX userapi_registration_nonces_expires_idx ON userapi_registration_nonces (expires_ts);
`},
	{Version: 2, SQL: `ALTER TABLE userapi_uia_sessions ADD COLUMN result TEXT NOT NULL DEFAULT ''`},
}

// ErrNotFound is returned when a row the caller named does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when an account with the user ID already exists.
var ErrExists = errors.New("already exists")

// Storage is the user API's database.
type Storage struct {
	db *sqlutil.DB
}

// New migrates the user API's tables in db and returns its storage.
func New(ctx context.Context, db *sqlutil.DB) (*Storage, error) {
	if err := db.Migrate(ctx, Component, migrations); err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, KeysComponent, keyMigrations); err != nil {
		return nil, err
	}
	return &Storage{db: db}, nil
}

// Account is one row of userapi_accounts.
type Account struct {
	UserID       string
	PasswordHash string
	Admin        bool
	Deactivated  bool
	CreatedTS    int64
}

// Device is one row of userapi_devices, without its token hash.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	LastSeenIP  string
	LastSeenTS  int64
}

// TokenOwner is what an access token resolves to.
type TokenOwner struct {
	UserID     string
	DeviceID   string
	Admin      bool
	LastSeenTS int64
}

// CreateAccount inserts an account with an empty profile. ErrExists if the
// user ID is taken.
func (s *Storage) CreateAccount(ctx context.Context, a Account) error {
	err := s.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO userapi_accounts (user_id, password_hash, is_admin, deactivated, created_ts) VALUES ($1, $2, $3, $4, $5)`,
			a.UserID, a.PasswordHash, a.Admin, a.Deactivated, a.CreatedTS); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO userapi_profiles (user_id) VALUES ($1)`, a.UserID)
		return err
	})
	if sqlutil.IsUniqueViolation(err) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("create account %s: %w", a.UserID, err)
	}
	return nil
}

// GetAccount returns an account, deactivated or not, or ErrNotFound.
func (s *Storage) GetAccount(ctx context.Context, userID string) (*Account, error) {
	a := Account{UserID: userID}
	err := s.db.QueryRowContext(ctx,
		`SELECT password_hash, is_admin, deactivated, created_ts FROM userapi_accounts WHERE user_id = $1`, userID).
		Scan(&a.PasswordHash, &a.Admin, &a.Deactivated, &a.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get account %s: %w", userID, err)
	}
	return &a, nil
}

// SetPassword replaces the password hash of an active account and, with
// logoutDevices, deletes every device but keepDeviceID in the same
// transaction. ErrNotFound for unknown or deactivated accounts.
func (s *Storage) SetPassword(ctx context.Context, userID, hash string, logoutDevices bool, keepDeviceID string) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE userapi_accounts SET password_hash = $2 WHERE user_id = $1 AND deactivated = FALSE`, userID, hash)
		if err != nil {
			return fmt.Errorf("set password of %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if !logoutDevices {
			return nil
		}
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM userapi_devices WHERE user_id = $1 AND device_id <> $2`, userID, keepDeviceID); err != nil {
			return fmt.Errorf("log out devices of %s: %w", userID, err)
		}
		return nil
	})
}

// Deactivate marks the account deactivated, removes its password, devices
// and OpenID tokens, and clears its profile, atomically.
func (s *Storage) Deactivate(ctx context.Context, userID string) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE userapi_accounts SET deactivated = TRUE, password_hash = '' WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("deactivate %s: %w", userID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		for _, q := range []string{
			`DELETE FROM userapi_devices WHERE user_id = $1`,
			`DELETE FROM userapi_openid_tokens WHERE user_id = $1`,
			`UPDATE userapi_profiles SET displayname = '', avatar_url = '' WHERE user_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return fmt.Errorf("deactivate %s: %w", userID, err)
			}
		}
		return nil
	})
}

// UpsertDevice creates a device, or gives an existing device of the same
// user and ID a new token hash (the old token stops working). The display
// name of an existing device is kept unless a new one is given.
func (s *Storage) UpsertDevice(ctx context.Context, d Device, tokenHash []byte) error {
	_, err := s.db.ExecContext(ctx, `
INSERT INTO userapi_devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts, last_seen_ip)
VALUES ($1, $2, $3, $4, $5, $5, $6)
ON CONFLICT (user_id, device_id) DO UPDATE SET
	token_hash = excluded.token_hash,
	display_name = CASE WHEN excluded.display_name = '' THEN userapi_devices.display_name ELSE excluded.display_name END,
	last_seen_ts = excluded.last_seen_ts,
	last_seen_ip = excluded.last_seen_ip`,
		d.UserID, d.DeviceID, d.DisplayName, tokenHash, d.LastSeenTS, d.LastSeenIP)
	if err != nil {
		return fmt.Errorf("upsert device %s of %s: %w", d.DeviceID, d.UserID, err)
	}
	return nil
}

// TokenOwner resolves a token hash to its device, if the device exists and
// its account is active. ErrNotFound otherwise.
func (s *Storage) TokenOwner(ctx context.Context, tokenHash []byte) (*TokenOwner, error) {
	var o TokenOwner
	err := s.db.QueryRowContext(ctx, `
SELECT d.user_id, d.device_id, a.is_admin, d.last_seen_ts
FROM userapi_devices d JOIN userapi_accounts a ON a.user_id = d.user_id
WHERE d.token_hash = $1 AND a.deactivated = FALSE`, tokenHash).
		Scan(&o.UserID, &o.DeviceID, &o.Admin, &o.LastSeenTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("look up access token: %w", err)
	}
	return &o, nil
}

// TouchDevice records that a device was seen at ts.
func (s *Storage) TouchDevice(ctx context.Context, userID, deviceID string, ts int64) error {
	_, err := s.db.ExecContext(ctx,
		`UPDATE userapi_devices SET last_seen_ts = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, ts)
	if err != nil {
		return fmt.Errorf("touch device %s of %s: %w", deviceID, userID, err)
	}
	return nil
}

// DeleteDevices deletes the listed devices of userID; nil deviceIDs means all.
func (s *Storage) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	var err error
	if deviceIDs == nil {
		_, err = s.db.ExecContext(ctx, `DELETE FROM userapi_devices WHERE user_id = $1`, userID)
	} else if len(deviceIDs) > 0 {
		args := make([]any, 0, len(deviceIDs)+1)
		args = append(args, userID)
		for _, id := range deviceIDs {
			args = append(args, id)
		}
		_, err = s.db.ExecContext(ctx,
			`DELETE FROM userapi_devices WHERE user_id = $1 AND device_id IN (`+sqlutil.InList(2, len(deviceIDs))+`)`, args...)
	}
	if err != nil {
		return fmt.Errorf("delete devices of %s: %w", userID, err)
	}
	return nil
}

// ListDevices returns the user's devices ordered by device ID.
func (s *Storage) ListDevices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT device_id, display_name, last_seen_ip, last_seen_ts FROM userapi_devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d := Device{UserID: userID}
		if err := rows.Scan(&d.DeviceID, &d.DisplayName, &d.LastSeenIP, &d.LastSeenTS); err != nil {
			return nil, fmt.Errorf("list devices of %s: %w", userID, err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDevice returns one device, or ErrNotFound.
func (s *Storage) GetDevice(ctx context.Context, userID, deviceID string) (*Device, error) {
	d := Device{UserID: userID, DeviceID: deviceID}
	err := s.db.QueryRowContext(ctx,
		`SELECT display_name, last_seen_ip, last_seen_ts FROM userapi_devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
		Scan(&d.DisplayName, &d.LastSeenIP, &d.LastSeenTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get device %s of %s: %w", deviceID, userID, err)
	}
	return &d, nil
}

// SetDeviceDisplayName renames a device, or returns ErrNotFound.
func (s *Storage) SetDeviceDisplayName(ctx context.Context, userID, deviceID, name string) error {
	res, err := s.db.ExecContext(ctx,
		`UPDATE userapi_devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
	if err != nil {
		return fmt.Errorf("rename device %s of %s: %w", deviceID, userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// GetProfile returns a user's display name and avatar URL, or ErrNotFound.
func (s *Storage) GetProfile(ctx context.Context, userID string) (displayName, avatarURL string, err error) {
	err = s.db.QueryRowContext(ctx,
		`SELECT displayname, avatar_url FROM userapi_profiles WHERE user_id = $1`, userID).Scan(&displayName, &avatarURL)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("get profile of %s: %w", userID, err)
	}
	return displayName, avatarURL, nil
}

// SetProfileField sets "displayname" or "avatar_url"; ErrNotFound for
// unknown users.
func (s *Storage) SetProfileField(ctx context.Context, userID, field, value string) error {
	var q string
	switch field {
	case "displayname":
		q = `UPDATE userapi_profiles SET displayname = $2 WHERE user_id = $1`
	case "avatar_url":
		q = `UPDATE userapi_profiles SET avatar_url = $2 WHERE user_id = $1`
	default:
		return fmt.Errorf("unknown profile field %q", field)
	}
	res, err := s.db.ExecContext(ctx, q, userID, value)
	if err != nil {
		return fmt.Errorf("set %s of %s: %w", field, userID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// InsertOpenIDToken stores an OpenID token hash, first dropping expired ones
// so the table holds only live tokens.
func (s *Storage) InsertOpenIDToken(ctx context.Context, tokenHash []byte, userID string, expiresTS, nowTS int64) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_openid_tokens WHERE expires_ts < $1`, nowTS); err != nil {
			return fmt.Errorf("expire openid tokens: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO userapi_openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			tokenHash, userID, expiresTS); err != nil {
			return fmt.Errorf("insert openid token: %w", err)
		}
		return nil
	})
}

// OpenIDTokenOwner returns the user of a token unexpired at nowTS, or ErrNotFound.
func (s *Storage) OpenIDTokenOwner(ctx context.Context, tokenHash []byte, nowTS int64) (string, error) {
	var userID string
	err := s.db.QueryRowContext(ctx,
		`SELECT user_id FROM userapi_openid_tokens WHERE token_hash = $1 AND expires_ts >= $2`, tokenHash, nowTS).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("look up openid token: %w", err)
	}
	return userID, nil
}

// UIASession is one row of userapi_uia_sessions with its completed stages.
type UIASession struct {
	ID        string
	Operation string
	UserID    string
	Completed []string
	Result    string
}

// InsertUIASession stores a new session, first dropping expired ones.
func (s *Storage) InsertUIASession(ctx context.Context, sess UIASession, expiresTS, nowTS int64) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM userapi_uia_stages WHERE session_id IN (SELECT session_id FROM userapi_uia_sessions WHERE expires_ts < $1)`, nowTS); err != nil {
			return fmt.Errorf("expire uia stages: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_uia_sessions WHERE expires_ts < $1`, nowTS); err != nil {
			return fmt.Errorf("expire uia sessions: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO userapi_uia_sessions (session_id, operation, user_id, expires_ts) VALUES ($1, $2, $3, $4)`,
			sess.ID, sess.Operation, sess.UserID, expiresTS); err != nil {
			return fmt.Errorf("insert uia session: %w", err)
		}
		return nil
	})
}

// GetUIASession returns a session unexpired at nowTS, or ErrNotFound.
func (s *Storage) GetUIASession(ctx context.Context, sessionID string, nowTS int64) (*UIASession, error) {
	sess := UIASession{ID: sessionID, Completed: []string{}}
	err := s.db.QueryRowContext(ctx,
		`SELECT operation, user_id, result FROM userapi_uia_sessions WHERE session_id = $1 AND expires_ts >= $2`, sessionID, nowTS).
		Scan(&sess.Operation, &sess.UserID, &sess.Result)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get uia session: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT stage FROM userapi_uia_stages WHERE session_id = $1 ORDER BY stage`, sessionID)
	if err != nil {
		return nil, fmt.Errorf("get uia stages: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var stage string
		if err := rows.Scan(&stage); err != nil {
			return nil, fmt.Errorf("get uia stages: %w", err)
		}
		sess.Completed = append(sess.Completed, stage)
	}
	return &sess, rows.Err()
}

// AddUIAStage records a completed stage; repeating one is harmless.
func (s *Storage) AddUIAStage(ctx context.Context, sessionID, stage string) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT INTO userapi_uia_stages (session_id, stage) VALUES ($1, $2) ON CONFLICT DO NOTHING`, sessionID, stage)
	if err != nil {
		return fmt.Errorf("add uia stage: %w", err)
	}
	return nil
}

// SetUIASessionResult records the outcome of a session's operation;
// ErrNotFound if the session is gone.
func (s *Storage) SetUIASessionResult(ctx context.Context, sessionID, result string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE userapi_uia_sessions SET result = $2 WHERE session_id = $1`, sessionID, result)
	if err != nil {
		return fmt.Errorf("set uia session result: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteUIASession removes a session and its stages.
func (s *Storage) DeleteUIASession(ctx context.Context, sessionID string) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_uia_stages WHERE session_id = $1`, sessionID); err != nil {
			return fmt.Errorf("delete uia stages: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_uia_sessions WHERE session_id = $1`, sessionID); err != nil {
			return fmt.Errorf("delete uia session: %w", err)
		}
		return nil
	})
}

// InsertNonce stores a registration nonce, first dropping expired ones.
func (s *Storage) InsertNonce(ctx context.Context, nonce string, expiresTS, nowTS int64) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_registration_nonces WHERE expires_ts < $1`, nowTS); err != nil {
			return fmt.Errorf("expire nonces: %w", err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO userapi_registration_nonces (nonce, expires_ts) VALUES ($1, $2)`, nonce, expiresTS); err != nil {
			return fmt.Errorf("insert nonce: %w", err)
		}
		return nil
	})
}

// ConsumeNonce deletes a nonce unexpired at nowTS; ErrNotFound if there is
// none. Deleting is the check, so two concurrent uses cannot both succeed.
func (s *Storage) ConsumeNonce(ctx context.Context, nonce string, nowTS int64) error {
	res, err := s.db.ExecContext(ctx,
		`DELETE FROM userapi_registration_nonces WHERE nonce = $1 AND expires_ts >= $2`, nonce, nowTS)
	if err != nil {
		return fmt.Errorf("consume nonce: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
