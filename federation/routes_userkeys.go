package federation

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sort"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: server-server §"End-to-End Encryption" and §"Device Management".
// Only this server's users are answered for; the user API is asked with
// no requester, so user-signing keys and the signatures users made of
// others' keys stay private.

// maxKeyQueryUsers bounds the users of one key query or claim.
const maxKeyQueryUsers = 1000

// localUser checks that userID is a user of this server.
func (s *Service) localUser(userID string) error {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return httputil.InvalidParam("%q is not a user ID", userID)
	}
	if u.Domain() != s.serverName {
		return httputil.InvalidParam("User %s is not on this server", userID)
	}
	return nil
}

// handleUserKeysQuery serves POST /_matrix/federation/v1/user/keys/query.
func (s *Service) handleUserKeysQuery(w http.ResponseWriter, r *http.Request) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body.DeviceKeys == nil {
		httputil.WriteError(w, r, httputil.BadJSON("device_keys is required"))
		return
	}
	if len(body.DeviceKeys) > maxKeyQueryUsers {
		httputil.WriteError(w, r, httputil.TooLarge("At most %d users per query", maxKeyQueryUsers))
		return
	}
	for userID := range body.DeviceKeys {
		if err := s.localUser(userID); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	res, err := s.users.QueryKeys(r.Context(), &userapi.QueryKeysRequest{DeviceKeys: body.DeviceKeys})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"device_keys":       res.DeviceKeys,
		"master_keys":       res.MasterKeys,
		"self_signing_keys": res.SelfSigningKeys,
	})
}

// handleUserKeysClaim serves POST /_matrix/federation/v1/user/keys/claim.
func (s *Service) handleUserKeysClaim(w http.ResponseWriter, r *http.Request) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body.OneTimeKeys == nil {
		httputil.WriteError(w, r, httputil.BadJSON("one_time_keys is required"))
		return
	}
	if len(body.OneTimeKeys) > maxKeyQueryUsers {
		httputil.WriteError(w, r, httputil.TooLarge("At most %d users per claim", maxKeyQueryUsers))
		return
	}
	for userID := range body.OneTimeKeys {
		if err := s.localUser(userID); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	res, err := s.users.ClaimKeys(r.Context(), &userapi.ClaimKeysRequest{OneTimeKeys: body.OneTimeKeys})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": res.OneTimeKeys})
}

// handleUserDevices serves GET /_matrix/federation/v1/user/devices/{userId}:
// a local user's whole device list with keys, and the stream ID of the
// last m.device_list_update sent for the user. The stream ID is read
// before the devices, so an update racing this request is at worst
// applied twice by the asking server, never missed.
func (s *Service) handleUserDevices(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	userID, err := url.PathUnescape(chi.URLParam(r, "userID"))
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("Bad user ID"))
		return
	}
	if err := s.localUser(userID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	streamID, err := s.db.DeviceListSent(ctx, userID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	devices, err := s.users.ListDevices(ctx, userID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	keys, err := s.users.QueryKeys(ctx, &userapi.QueryKeysRequest{DeviceKeys: map[string][]string{userID: {}}})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	type device struct {
		DeviceID    string          `json:"device_id"`
		DisplayName string          `json:"device_display_name,omitempty"`
		Keys        json.RawMessage `json:"keys"`
	}
	out := struct {
		UserID         string          `json:"user_id"`
		StreamID       int64           `json:"stream_id"`
		Devices        []device        `json:"devices"`
		MasterKey      json.RawMessage `json:"master_key,omitempty"`
		SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
	}{UserID: userID, StreamID: streamID, Devices: []device{},
		MasterKey: keys.MasterKeys[userID], SelfSigningKey: keys.SelfSigningKeys[userID]}
	devKeys := keys.DeviceKeys[userID]
	for _, d := range devices {
		// A device that never uploaded keys cannot take part in
		// encryption, and the spec makes keys required.
		k, ok := devKeys[d.DeviceID]
		if !ok {
			continue
		}
		out.Devices = append(out.Devices, device{DeviceID: d.DeviceID, DisplayName: d.DisplayName, Keys: k})
	}
	sort.Slice(out.Devices, func(i, j int) bool { return out.Devices[i].DeviceID < out.Devices[j].DeviceID })
	httputil.WriteJSON(w, http.StatusOK, out)
}
