package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/parley-chat/parley/internal/sqlutil"
)

// Server-side key backups (client-server spec §"Server-side key backups").
// Versions are numbered per user and never reused: a deleted version keeps
// its row, marked deleted, so a client holding its number cannot write
// into a later backup by mistake. The current version is the newest one
// not deleted. etag counts changes to a version's keys.

// BackupVersion is one row of userapi_key_backup_versions with its count.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  []byte
	ETag      int64
	Count     int64
}

// BackupKey is one stored session key.
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// ErrWrongVersion: the version exists or not, but it is not the current
// one; Current is 0 when the user has no backup at all.
type ErrWrongVersion struct{ Current int64 }

func (e *ErrWrongVersion) Error() string {
	return fmt.Sprintf("not the current backup version %d", e.Current)
}

const createBackupAttempts = 5

// CreateBackupVersion adds a version numbered one past the user's highest
// (deleted ones included) and returns its number.
func (s *Storage) CreateBackupVersion(ctx context.Context, userID, algorithm string, authData []byte) (int64, error) {
	var version int64
	var err error
	for range createBackupAttempts {
		err = s.db.WithTx(ctx, func(tx *sql.Tx) error {
			if err := tx.QueryRowContext(ctx,
				`SELECT COALESCE(MAX(version), 0) + 1 FROM userapi_key_backup_versions WHERE user_id = $1`, userID).Scan(&version); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx,
				`INSERT INTO userapi_key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
				userID, version, algorithm, string(authData))
			return err
		})
		// Two concurrent creations on PostgreSQL may pick the same
		// number; the loser tries the next one.
		if !sqlutil.IsUniqueViolation(err) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("create backup version: %w", err)
	}
	return version, nil
}

// CurrentBackupVersion returns the newest live version's number, or 0.
func (s *Storage) CurrentBackupVersion(ctx context.Context, userID string) (int64, error) {
	var v int64
	err := s.db.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM userapi_key_backup_versions WHERE user_id = $1 AND deleted = FALSE`, userID).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("current backup version: %w", err)
	}
	return v, nil
}

// GetBackupVersion returns a live version with its key count, or
// ErrNotFound.
func (s *Storage) GetBackupVersion(ctx context.Context, userID string, version int64) (*BackupVersion, error) {
	v := BackupVersion{Version: version}
	var auth string
	err := s.db.QueryRowContext(ctx, `
SELECT algorithm, auth_data, etag, (SELECT COUNT(*) FROM userapi_key_backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
FROM userapi_key_backup_versions v WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, version).
		Scan(&v.Algorithm, &auth, &v.ETag, &v.Count)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get backup version: %w", err)
	}
	v.AuthData = []byte(auth)
	return &v, nil
}

// UpdateBackupAuthData replaces a live version's auth_data; ErrNotFound if
// there is no such version.
func (s *Storage) UpdateBackupAuthData(ctx context.Context, userID string, version int64, authData []byte) error {
	res, err := s.db.ExecContext(ctx,
		`UPDATE userapi_key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND deleted = FALSE`,
		userID, version, string(authData))
	if err != nil {
		return fmt.Errorf("update backup version: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteBackupVersion marks a version deleted and drops its keys;
// ErrNotFound if there is no such live version.
func (s *Storage) DeleteBackupVersion(ctx context.Context, userID string, version int64) error {
	return s.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE userapi_key_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, version)
		if err != nil {
			return fmt.Errorf("delete backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM userapi_key_backup_keys WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		return nil
	})
}

// PutBackupKeys stores keys in version, which must be the current one
// (*ErrWrongVersion otherwise), keeping a stored key unless the new one is
// better, and returns the version's key count and etag. The etag changes
// only if a key did.
func (s *Storage) PutBackupKeys(ctx context.Context, userID string, version int64, keys []BackupKey) (count, etag int64, err error) {
	err = s.db.WithTx(ctx, func(tx *sql.Tx) error {
		if err := lockCurrentVersion(ctx, tx, userID, version); err != nil {
			return err
		}
		changed := false
		for _, k := range keys {
			// Spec: keep the key with is_verified true; then the lower
			// first_message_index; then the lower forwarded_count.
			res, err := tx.ExecContext(ctx, `
INSERT INTO userapi_key_backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
	first_message_index = excluded.first_message_index,
	forwarded_count = excluded.forwarded_count,
	is_verified = excluded.is_verified,
	session_data = excluded.session_data
WHERE (excluded.is_verified AND NOT userapi_key_backup_keys.is_verified)
	OR (excluded.is_verified = userapi_key_backup_keys.is_verified AND (
		excluded.first_message_index < userapi_key_backup_keys.first_message_index
		OR (excluded.first_message_index = userapi_key_backup_keys.first_message_index
			AND excluded.forwarded_count < userapi_key_backup_keys.forwarded_count)))`,
				userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData))
			if err != nil {
				return fmt.Errorf("store backup key: %w", err)
			}
			if n, _ := res.RowsAffected(); n > 0 {
				changed = true
			}
		}
		if changed {
			if _, err := tx.ExecContext(ctx,
				`UPDATE userapi_key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return fmt.Errorf("bump backup etag: %w", err)
			}
		}
		return countAndETag(ctx, tx, userID, version, &count, &etag)
	})
	return count, etag, err
}

// lockCurrentVersion checks that version is the user's current one, taking
// a write lock on its row (a no-op update) so that it cannot be deleted
// or superseded before the transaction ends.
func lockCurrentVersion(ctx context.Context, tx *sql.Tx, userID string, version int64) error {
	res, err := tx.ExecContext(ctx, `
UPDATE userapi_key_backup_versions SET etag = etag
WHERE user_id = $1 AND version = $2 AND deleted = FALSE AND version = (
	SELECT MAX(version) FROM userapi_key_backup_versions WHERE user_id = $1 AND deleted = FALSE)`, userID, version)
	if err != nil {
		return fmt.Errorf("lock backup version: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	var cur int64
	if err := tx.QueryRowContext(ctx,
		`SELECT COALESCE(MAX(version), 0) FROM userapi_key_backup_versions WHERE user_id = $1 AND deleted = FALSE`, userID).Scan(&cur); err != nil {
		return fmt.Errorf("current backup version: %w", err)
	}
	return &ErrWrongVersion{Current: cur}
}

func countAndETag(ctx context.Context, tx *sql.Tx, userID string, version int64, count, etag *int64) error {
	return tx.QueryRowContext(ctx, `
SELECT etag, (SELECT COUNT(*) FROM userapi_key_backup_keys WHERE user_id = $1 AND version = $2)
FROM userapi_key_backup_versions WHERE user_id = $1 AND version = $2`, userID, version).Scan(etag, count)
}

// GetBackupKeys returns a live version's keys: all, one room's (sessionID
// "") or one session's, ordered by room and session. ErrNotFound if the
// version is not live.
func (s *Storage) GetBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	if _, err := s.GetBackupVersion(ctx, userID, version); err != nil {
		return nil, err
	}
	q := `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
FROM userapi_key_backup_keys WHERE user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY room_id, session_id`, args...)
	if err != nil {
		return nil, fmt.Errorf("get backup keys: %w", err)
	}
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, err
		}
		k.SessionData = json.RawMessage(data)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes a live version's keys in the given scope and
// returns its count and etag; ErrNotFound if the version is not live.
func (s *Storage) DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (count, etag int64, err error) {
	err = s.db.WithTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx,
			`UPDATE userapi_key_backup_versions SET etag = etag WHERE user_id = $1 AND version = $2 AND deleted = FALSE`, userID, version)
		if err != nil {
			return fmt.Errorf("lock backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		q := `DELETE FROM userapi_key_backup_keys WHERE user_id = $1 AND version = $2`
		args := []any{userID, version}
		if roomID != "" {
			q += ` AND room_id = $3`
			args = append(args, roomID)
			if sessionID != "" {
				q += ` AND session_id = $4`
				args = append(args, sessionID)
			}
		}
		res, err = tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			if _, err := tx.ExecContext(ctx,
				`UPDATE userapi_key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return fmt.Errorf("bump backup etag: %w", err)
			}
		}
		return countAndETag(ctx, tx, userID, version, &count, &etag)
	})
	return count, etag, err
}
