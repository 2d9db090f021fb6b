package api

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// End-to-end encryption keys (client-server spec §"End-to-End Encryption")
// are owned by the user API: device keys, one-time and fallback keys,
// cross-signing keys and their signatures, and server-side key backups.
// The server never sees plaintext; it stores what clients upload, checks
// the signatures it can check, and routes keys to whoever asks.

// The device-list stream: every change to a user's device keys or
// cross-signing keys, and every deletion of a device that had keys, is
// published once on DeviceListSubject, in order per user. The sync API
// consumes it for device_lists in /sync; the federation sender turns it
// into m.device_list_update / m.signing_key_update EDUs.
const (
	DeviceListStream  = "userapi_device_lists"
	DeviceListSubject = "userapi.device_list_update"
)

// DeviceListUpdate is one message of the device-list stream. Its fields
// are those of the m.device_list_update EDU (server-server spec §"Device
// Management"), plus the cross-signing keys of m.signing_key_update.
type DeviceListUpdate struct {
	UserID string `json:"user_id"`
	// DeviceID is the device whose keys changed or which was deleted; ""
	// when the user's cross-signing keys changed instead.
	DeviceID          string `json:"device_id,omitempty"`
	DeviceDisplayName string `json:"device_display_name,omitempty"`
	Deleted           bool   `json:"deleted,omitempty"`
	// StreamID increases by one with every update of this user; PrevID
	// holds the previous update's StreamID (empty for the first), so a
	// remote server can tell whether it missed one.
	StreamID int64   `json:"stream_id"`
	PrevID   []int64 `json:"prev_id"`
	// Keys are the device's keys as /keys/query shows them (unset when
	// Deleted or for cross-signing updates).
	Keys json.RawMessage `json:"keys,omitempty"`
	// MasterKey and SelfSigningKey are set on cross-signing updates.
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// KeyAPI is the end-to-end encryption part of UserAPI.
type KeyAPI interface {
	// UploadKeys stores a device's identity keys, one-time keys and
	// fallback keys after checking their signatures, and returns the
	// device's unclaimed one-time key count per algorithm. Bad input is a
	// *KeyError.
	UploadKeys(ctx context.Context, req *UploadKeysRequest) (map[string]int, error)
	// QueryKeys returns device and cross-signing keys. Remote users are
	// asked through the RemoteKeys set on the service, or listed in
	// Failures when there is none. Federation's inbound query must pass
	// only local users.
	QueryKeys(ctx context.Context, req *QueryKeysRequest) (*QueryKeysResponse, error)
	// ClaimKeys hands out one one-time key per requested device, each key
	// at most once, falling back to the device's fallback key (which is
	// then marked used). Devices without keys are left out.
	ClaimKeys(ctx context.Context, req *ClaimKeysRequest) (*ClaimKeysResponse, error)
	// CrossSigningKeys returns the user's stored cross-signing keys (each
	// nil when absent), with signatures as uploaded.
	CrossSigningKeys(ctx context.Context, userID string) (*CrossSigningKeySet, error)
	// UploadCrossSigningKeys checks and stores the non-nil keys of set.
	// The caller has already done user-interactive authentication where
	// it is needed.
	UploadCrossSigningKeys(ctx context.Context, userID string, set CrossSigningKeySet) error
	// UploadSignatures stores signatures userID made of its own devices
	// (with its self-signing key), of its own master key (with its
	// devices) and of other users' master keys (with its user-signing
	// key). signed maps user ID → key ID (device ID or public key) →
	// signed object. What cannot be accepted is returned per key.
	UploadSignatures(ctx context.Context, userID string, signed map[string]map[string]json.RawMessage) (map[string]map[string]*KeyError, error)
	// OneTimeKeyCounts returns what /sync reports to a device about its
	// own keys.
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (*OneTimeKeyCounts, error)

	// Server-side key backups (client-server spec §"Server-side key
	// backups"). A version "" means the current (newest) backup.
	// Unknown or deleted versions give ErrNotFound; writing keys to a
	// version that is not the current one gives *WrongBackupVersionError.

	CreateKeyBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (version string, err error)
	GetKeyBackup(ctx context.Context, userID, version string) (*KeyBackupVersion, error)
	// UpdateKeyBackup replaces auth_data; algorithm must be the backup's.
	UpdateKeyBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage) error
	DeleteKeyBackup(ctx context.Context, userID, version string) error
	// PutBackupKeys stores keys, each replacing a stored key of the same
	// session only if it is better (spec: verified over unverified, then
	// lower first_message_index, then lower forwarded_count).
	PutBackupKeys(ctx context.Context, userID, version string, keys []BackupKey) (*BackupKeysInfo, error)
	// GetBackupKeys returns a backup's keys, all of them, one room's
	// (sessionID "") or one session's.
	GetBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) ([]BackupKey, error)
	// DeleteBackupKeys deletes in the same three scopes.
	DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (*BackupKeysInfo, error)
}

// RemoteKeys reaches other servers' key endpoints (server-server spec
// §"End-to-End Encryption": /user/keys/query and /user/keys/claim). The
// federation component implements it; until it is set on the user API,
// remote users are reported in failures.
type RemoteKeys interface {
	// QueryRemoteKeys asks server for the keys of its users in deviceKeys
	// (user ID → device IDs, empty meaning all).
	QueryRemoteKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*QueryKeysResponse, error)
	// ClaimRemoteKeys claims one-time keys (user ID → device ID →
	// algorithm) from server, answering like ClaimKeysResponse.OneTimeKeys.
	ClaimRemoteKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// UploadKeysRequest is POST /keys/upload by one device. Nil or empty
// fields upload nothing of that kind.
type UploadKeysRequest struct {
	UserID       string
	DeviceID     string
	DeviceKeys   json.RawMessage
	OneTimeKeys  map[string]json.RawMessage
	FallbackKeys map[string]json.RawMessage
}

// QueryKeysRequest is POST /keys/query.
type QueryKeysRequest struct {
	// RequesterUserID decides what is private: a user's user-signing key,
	// and the signatures a user made of others' master keys, are shown
	// only to that user. "" (a remote server asking) sees neither.
	RequesterUserID string
	// DeviceKeys maps user IDs to device IDs; an empty list means every
	// device.
	DeviceKeys map[string][]string
	// Timeout bounds the wait for remote servers (0: a default).
	Timeout time.Duration
}

// QueryKeysResponse is the body of the /keys/query answer.
type QueryKeysResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]any                        `json:"failures"`
}

// ClaimKeysRequest is POST /keys/claim: user ID → device ID → algorithm.
type ClaimKeysRequest struct {
	OneTimeKeys map[string]map[string]string
	Timeout     time.Duration
}

// ClaimKeysResponse is the body of the /keys/claim answer: user ID →
// device ID → "algorithm:key_id" → key.
type ClaimKeysResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]any                                   `json:"failures"`
}

// CrossSigningKeySet holds a user's cross-signing keys as JSON objects
// (client-server spec §"Cross-signing"); nil means absent.
type CrossSigningKeySet struct {
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	UserSigningKey json.RawMessage `json:"user_signing_key,omitempty"`
}

// OneTimeKeyCounts is device_one_time_keys_count and
// device_unused_fallback_key_types of /sync.
type OneTimeKeyCounts struct {
	Counts                   map[string]int
	UnusedFallbackAlgorithms []string
}

// KeyBackupVersion is one backup version as GET /room_keys/version shows it.
type KeyBackupVersion struct {
	Version   string          `json:"version"`
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
}

// BackupKey is one session's key in a backup (KeyBackupData).
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// BackupKeysInfo is the answer to writing or deleting backup keys.
type BackupKeysInfo struct {
	Count int64  `json:"count"`
	ETag  string `json:"etag"`
}

// KeyError is a problem with uploaded key material, reported to the
// client with its Matrix error code (M_INVALID_SIGNATURE, M_INVALID_PARAM,
// M_BAD_JSON, M_MISSING_PARAM, M_NOT_FOUND). It is also the per-key
// failure of UploadSignatures.
type KeyError struct {
	Code    string `json:"errcode"`
	Message string `json:"error"`
}

func (e *KeyError) Error() string { return e.Code + ": " + e.Message }

// NewKeyError formats a KeyError.
func NewKeyError(code, format string, args ...any) *KeyError {
	return &KeyError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrongBackupVersionError: keys may only be written to the current
// backup version (spec: 403 M_WRONG_ROOM_KEYS_VERSION with current_version).
type WrongBackupVersionError struct {
	Current string
}

func (e *WrongBackupVersionError) Error() string {
	return "wrong backup version; current is " + e.Current
}
