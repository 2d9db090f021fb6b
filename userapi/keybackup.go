package userapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/parley-chat/parley/userapi/api"
	"github.com/parley-chat/parley/userapi/storage"
)

// Spec: client-server §"Server-side key backups". Versions are decimal
// numbers per user; a version string that is not one names no backup.

func parseBackupVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatInt(n, 10) == v
}

// resolveBackupVersion maps "" to the current version; ErrNotFound when
// there is none or v is not a version number.
func (s *Service) resolveBackupVersion(ctx context.Context, userID, v string) (int64, error) {
	if v == "" {
		cur, err := s.store.CurrentBackupVersion(ctx, userID)
		if err != nil {
			return 0, err
		}
		if cur == 0 {
			return 0, api.ErrNotFound
		}
		return cur, nil
	}
	n, ok := parseBackupVersion(v)
	if !ok {
		return 0, api.ErrNotFound
	}
	return n, nil
}

func checkAuthData(authData json.RawMessage) error {
	if t := bytes.TrimSpace(authData); len(t) == 0 || t[0] != '{' {
		return api.NewKeyError("M_BAD_JSON", "auth_data must be an object")
	}
	return nil
}

// CreateKeyBackup implements api.KeyAPI.
func (s *Service) CreateKeyBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if algorithm == "" {
		return "", api.NewKeyError("M_MISSING_PARAM", "algorithm is required")
	}
	if err := checkAuthData(authData); err != nil {
		return "", err
	}
	v, err := s.store.CreateBackupVersion(ctx, userID, algorithm, authData)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(v, 10), nil
}

// GetKeyBackup implements api.KeyAPI.
func (s *Service) GetKeyBackup(ctx context.Context, userID, version string) (*api.KeyBackupVersion, error) {
	n, err := s.resolveBackupVersion(ctx, userID, version)
	if err != nil {
		return nil, err
	}
	v, err := s.store.GetBackupVersion(ctx, userID, n)
	if err != nil {
		return nil, mapNotFound(err)
	}
	return &api.KeyBackupVersion{
		Version:   strconv.FormatInt(v.Version, 10),
		Algorithm: v.Algorithm,
		AuthData:  v.AuthData,
		Count:     v.Count,
		ETag:      strconv.FormatInt(v.ETag, 10),
	}, nil
}

// UpdateKeyBackup implements api.KeyAPI.
func (s *Service) UpdateKeyBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage) error {
	n, ok := parseBackupVersion(version)
	if !ok {
		return api.ErrNotFound
	}
	if err := checkAuthData(authData); err != nil {
		return err
	}
	cur, err := s.store.GetBackupVersion(ctx, userID, n)
	if err != nil {
		return mapNotFound(err)
	}
	if algorithm != cur.Algorithm {
		return api.NewKeyError("M_INVALID_PARAM", "algorithm must stay %q", cur.Algorithm)
	}
	return mapNotFound(s.store.UpdateBackupAuthData(ctx, userID, n, authData))
}

// DeleteKeyBackup implements api.KeyAPI.
func (s *Service) DeleteKeyBackup(ctx context.Context, userID, version string) error {
	n, ok := parseBackupVersion(version)
	if !ok {
		return api.ErrNotFound
	}
	return mapNotFound(s.store.DeleteBackupVersion(ctx, userID, n))
}

// PutBackupKeys implements api.KeyAPI.
func (s *Service) PutBackupKeys(ctx context.Context, userID, version string, keys []api.BackupKey) (*api.BackupKeysInfo, error) {
	n, ok := parseBackupVersion(version)
	if !ok {
		n = 0 // no such version: certainly not the current one
	}
	rows := make([]storage.BackupKey, 0, len(keys))
	for _, k := range keys {
		if t := bytes.TrimSpace(k.SessionData); len(t) == 0 || t[0] != '{' {
			return nil, api.NewKeyError("M_BAD_JSON", "session_data of %s must be an object", k.SessionID)
		}
		if k.FirstMessageIndex < 0 || k.ForwardedCount < 0 {
			return nil, api.NewKeyError("M_BAD_JSON", "first_message_index and forwarded_count must not be negative")
		}
		rows = append(rows, storage.BackupKey(k))
	}
	count, etag, err := s.store.PutBackupKeys(ctx, userID, n, rows)
	var wrong *storage.ErrWrongVersion
	if errors.As(err, &wrong) {
		if wrong.Current == 0 {
			return nil, api.ErrNotFound
		}
		return nil, &api.WrongBackupVersionError{Current: strconv.FormatInt(wrong.Current, 10)}
	}
	if err != nil {
		return nil, err
	}
	return &api.BackupKeysInfo{Count: count, ETag: strconv.FormatInt(etag, 10)}, nil
}

// GetBackupKeys implements api.KeyAPI.
func (s *Service) GetBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) ([]api.BackupKey, error) {
	n, ok := parseBackupVersion(version)
	if !ok {
		return nil, api.ErrNotFound
	}
	rows, err := s.store.GetBackupKeys(ctx, userID, n, roomID, sessionID)
	if err != nil {
		return nil, mapNotFound(err)
	}
	out := make([]api.BackupKey, len(rows))
	for i, r := range rows {
		out[i] = api.BackupKey(r)
	}
	return out, nil
}

// DeleteBackupKeys implements api.KeyAPI.
func (s *Service) DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (*api.BackupKeysInfo, error) {
	n, ok := parseBackupVersion(version)
	if !ok {
		return nil, api.ErrNotFound
	}
	count, etag, err := s.store.DeleteBackupKeys(ctx, userID, n, roomID, sessionID)
	if err != nil {
		return nil, mapNotFound(err)
	}
	return &api.BackupKeysInfo{Count: count, ETag: strconv.FormatInt(etag, 10)}, nil
}
