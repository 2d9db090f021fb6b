package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"End-to-End Encryption" (key distribution,
// cross-signing). The logic and the checks of key material are the user
// API's; these handlers decode, authorise and map errors.

// opDeviceSigning is the UIA operation of replacing cross-signing keys.
const opDeviceSigning = "device_signing"

// keyError turns the user API's key errors into Matrix errors.
func keyError(err error) error {
	var ke *userapi.KeyError
	if errors.As(err, &ke) {
		status := http.StatusBadRequest
		if ke.Code == "M_NOT_FOUND" {
			status = http.StatusNotFound
		}
		return httputil.NewError(status, ke.Code, "%s", ke.Message)
	}
	var wv *userapi.WrongBackupVersionError
	if errors.As(err, &wv) {
		e := httputil.NewError(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version; the current one is %s", wv.Current)
		e.Extra = map[string]any{"current_version": wv.Current}
		return e
	}
	if errors.Is(err, userapi.ErrNotFound) {
		return httputil.NotFound("Not found")
	}
	return err
}

// checkUserIDs rejects request maps keyed by something that is not a user ID.
func checkUserIDs[V any](m map[string]V) error {
	for u := range m {
		if _, _, err := userapi.ParseUserID(u); err != nil {
			return httputil.InvalidParam("%q is not a user ID", u)
		}
	}
	return nil
}

// handleUploadKeys is POST /keys/upload.
func (s *Server) handleUploadKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	c := httputil.CallerFrom(r.Context())
	counts, err := s.users.UploadKeys(r.Context(), &userapi.UploadKeysRequest{
		UserID: c.UserID, DeviceID: c.DeviceID,
		DeviceKeys: req.DeviceKeys, OneTimeKeys: req.OneTimeKeys, FallbackKeys: req.FallbackKeys,
	})
	if err != nil {
		httputil.WriteError(w, r, keyError(err))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

// handleQueryKeys is POST /keys/query.
func (s *Server) handleQueryKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    int64               `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := checkUserIDs(req.DeviceKeys); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	resp, err := s.users.QueryKeys(r.Context(), &userapi.QueryKeysRequest{
		RequesterUserID: httputil.CallerFrom(r.Context()).UserID,
		DeviceKeys:      req.DeviceKeys,
		Timeout:         time.Duration(max(req.Timeout, 0)) * time.Millisecond,
	})
	if err != nil {
		httputil.WriteError(w, r, keyError(err))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// handleClaimKeys is POST /keys/claim.
func (s *Server) handleClaimKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     int64                        `json:"timeout"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		httputil.WriteError(w, r, httputil.MissingParam("one_time_keys is required"))
		return
	}
	if err := checkUserIDs(req.OneTimeKeys); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	resp, err := s.users.ClaimKeys(r.Context(), &userapi.ClaimKeysRequest{
		OneTimeKeys: req.OneTimeKeys,
		Timeout:     time.Duration(max(req.Timeout, 0)) * time.Millisecond,
	})
	if err != nil {
		httputil.WriteError(w, r, keyError(err))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// handleUploadCrossSigningKeys is POST /keys/device_signing/upload. The
// first upload needs no user-interactive authentication (MSC3967, in the
// spec since v1.11); replacing existing keys needs the password, except
// when the client repeats exactly what is stored.
func (s *Server) handleUploadCrossSigningKeys(w http.ResponseWriter, r *http.Request) {
	var req struct {
		userapi.CrossSigningKeySet
		Auth *authDict `json:"auth"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	c := httputil.CallerFrom(r.Context())
	existing, err := s.users.CrossSigningKeys(r.Context(), c.UserID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var sess *userapi.UIASession
	if existing.MasterKey != nil && !sameCrossSigningKeys(existing, &req.CrossSigningKeySet) {
		if sess, err = s.checkUIA(r.Context(), opDeviceSigning, c.UserID, passwordFlows, req.Auth); err != nil {
			writeUIAError(w, r, err)
			return
		}
	}
	if err := s.users.UploadCrossSigningKeys(r.Context(), c.UserID, req.CrossSigningKeySet); err != nil {
		httputil.WriteError(w, r, keyError(err))
		return
	}
	if sess != nil {
		if err := s.users.DeleteUIASession(r.Context(), sess.ID); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// sameCrossSigningKeys says whether every key in upload is already stored
// byte for byte (after canonicalisation on both sides).
func sameCrossSigningKeys(stored, upload *userapi.CrossSigningKeySet) bool {
	same := func(a, b json.RawMessage) bool {
		if len(b) == 0 {
			return true
		}
		var x, y any
		if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
			return false
		}
		xa, _ := json.Marshal(x)
		ya, _ := json.Marshal(y)
		return bytes.Equal(xa, ya)
	}
	return same(stored.MasterKey, upload.MasterKey) && same(stored.SelfSigningKey, upload.SelfSigningKey) &&
		same(stored.UserSigningKey, upload.UserSigningKey)
}

// handleUploadSignatures is POST /keys/signatures/upload.
func (s *Server) handleUploadSignatures(w http.ResponseWriter, r *http.Request) {
	var req map[string]map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := checkUserIDs(req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	failures, err := s.users.UploadSignatures(r.Context(), httputil.CallerFrom(r.Context()).UserID, req)
	if err != nil {
		httputil.WriteError(w, r, keyError(err))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"failures": failures})
}
