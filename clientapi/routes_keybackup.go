package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Server-side key backups".

// keyBackupData is KeyBackupData; pointers tell a missing field from a
// zero one, as every field is required.
type keyBackupData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (d *keyBackupData) toKey(roomID, sessionID string) (userapi.BackupKey, error) {
	if d.FirstMessageIndex == nil || d.ForwardedCount == nil || d.IsVerified == nil || len(d.SessionData) == 0 {
		return userapi.BackupKey{}, httputil.BadJSON(
			"Key of session %s needs first_message_index, forwarded_count, is_verified and session_data", sessionID)
	}
	return userapi.BackupKey{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: *d.FirstMessageIndex,
		ForwardedCount: *d.ForwardedCount, IsVerified: *d.IsVerified, SessionData: d.SessionData}, nil
}

func toKeyBackupData(k userapi.BackupKey) map[string]any {
	return map[string]any{
		"first_message_index": k.FirstMessageIndex,
		"forwarded_count":     k.ForwardedCount,
		"is_verified":         k.IsVerified,
		"session_data":        k.SessionData,
	}
}

type roomKeyBackup struct {
	Sessions map[string]*keyBackupData `json:"sessions"`
}

// handleCreateKeyBackup is POST /room_keys/version.
func (s *Server) handleCreateKeyBackup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Algorithm string          `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	v, err := s.users.CreateKeyBackup(r.Context(), httputil.CallerFrom(r.Context()).UserID, req.Algorithm, req.AuthData)
	if err != nil {
		httputil.WriteError(w, r, keyError(err))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"version": v})
}

// handleGetKeyBackup is GET /room_keys/version and /room_keys/version/{version}.
func (s *Server) handleGetKeyBackup(w http.ResponseWriter, r *http.Request) {
	version, err := pathParam(r, "version")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	v, err := s.users.GetKeyBackup(r.Context(), httputil.CallerFrom(r.Context()).UserID, version)
	if err != nil {
		httputil.WriteError(w, r, keyError(backupNotFound(err)))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, v)
}

// backupNotFound words a missing backup the way clients expect.
func backupNotFound(err error) error {
	if errors.Is(err, userapi.ErrNotFound) {
		return httputil.NotFound("Unknown backup version")
	}
	return err
}

// handleUpdateKeyBackup is PUT /room_keys/version/{version}.
func (s *Server) handleUpdateKeyBackup(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Algorithm string          `json:"algorithm"`
		AuthData  json.RawMessage `json:"auth_data"`
		Version   *string         `json:"version"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	version, err := pathParam(r, "version")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.Version != nil && *req.Version != version {
		httputil.WriteError(w, r, httputil.InvalidParam("version in the body does not match the path"))
		return
	}
	err = s.users.UpdateKeyBackup(r.Context(), httputil.CallerFrom(r.Context()).UserID, version, req.Algorithm, req.AuthData)
	if err != nil {
		httputil.WriteError(w, r, keyError(backupNotFound(err)))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleDeleteKeyBackup is DELETE /room_keys/version/{version}.
func (s *Server) handleDeleteKeyBackup(w http.ResponseWriter, r *http.Request) {
	version, err := pathParam(r, "version")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.users.DeleteKeyBackup(r.Context(), httputil.CallerFrom(r.Context()).UserID, version); err != nil {
		httputil.WriteError(w, r, keyError(backupNotFound(err)))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// backupScope reads the version query parameter and the optional
// {roomId} and {sessionId} path parameters of /room_keys/keys.
func backupScope(r *http.Request) (version, roomID, sessionID string, err error) {
	version = r.URL.Query().Get("version")
	if version == "" {
		return "", "", "", httputil.MissingParam("The version query parameter is required")
	}
	if roomID, err = pathParam(r, "roomId"); err != nil {
		return "", "", "", err
	}
	if sessionID, err = pathParam(r, "sessionId"); err != nil {
		return "", "", "", err
	}
	return version, roomID, sessionID, nil
}

// handlePutBackupKeys is PUT /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Server) handlePutBackupKeys(w http.ResponseWriter, r *http.Request) {
	version, roomID, sessionID, err := backupScope(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var keys []userapi.BackupKey
	add := func(roomID, sessionID string, d *keyBackupData) error {
		if d == nil {
			return httputil.BadJSON("Key of session %s must be an object", sessionID)
		}
		k, err := d.toKey(roomID, sessionID)
		if err != nil {
			return err
		}
		keys = append(keys, k)
		return nil
	}
	switch {
	case sessionID != "":
		var d keyBackupData
		if err = httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &d); err == nil {
			err = add(roomID, sessionID, &d)
		}
	case roomID != "":
		var room roomKeyBackup
		if err = httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &room); err == nil {
			for sid, d := range room.Sessions {
				if err = add(roomID, sid, d); err != nil {
					break
				}
			}
		}
	default:
		var all struct {
			Rooms map[string]*roomKeyBackup `json:"rooms"`
		}
		if err = httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &all); err == nil {
		rooms:
			for rid, room := range all.Rooms {
				if room == nil {
					err = httputil.BadJSON("Keys of room %s must be an object", rid)
					break
				}
				for sid, d := range room.Sessions {
					if err = add(rid, sid, d); err != nil {
						break rooms
					}
				}
			}
		}
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	info, err := s.users.PutBackupKeys(r.Context(), httputil.CallerFrom(r.Context()).UserID, version, keys)
	if err != nil {
		httputil.WriteError(w, r, keyError(backupNotFound(err)))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, info)
}

// handleGetBackupKeys is GET /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Server) handleGetBackupKeys(w http.ResponseWriter, r *http.Request) {
	version, roomID, sessionID, err := backupScope(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	keys, err := s.users.GetBackupKeys(r.Context(), httputil.CallerFrom(r.Context()).UserID, version, roomID, sessionID)
	if err != nil {
		httputil.WriteError(w, r, keyError(backupNotFound(err)))
		return
	}
	switch {
	case sessionID != "":
		if len(keys) == 0 {
			httputil.WriteError(w, r, httputil.NotFound("No key for this session in the backup"))
			return
		}
		httputil.WriteJSON(w, http.StatusOK, toKeyBackupData(keys[0]))
	case roomID != "":
		sessions := map[string]any{}
		for _, k := range keys {
			sessions[k.SessionID] = toKeyBackupData(k)
		}
		httputil.WriteJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := map[string]map[string]map[string]any{}
		for _, k := range keys {
			if rooms[k.RoomID] == nil {
				rooms[k.RoomID] = map[string]map[string]any{"sessions": {}}
			}
			rooms[k.RoomID]["sessions"][k.SessionID] = toKeyBackupData(k)
		}
		httputil.WriteJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

// handleDeleteBackupKeys is DELETE /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Server) handleDeleteBackupKeys(w http.ResponseWriter, r *http.Request) {
	version, roomID, sessionID, err := backupScope(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	info, err := s.users.DeleteBackupKeys(r.Context(), httputil.CallerFrom(r.Context()).UserID, version, roomID, sessionID)
	if err != nil {
		httputil.WriteError(w, r, keyError(backupNotFound(err)))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, info)
}
