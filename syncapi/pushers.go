package syncapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Handlers of client-server spec §"Pushers".

// pushGatewayPath is the path every HTTP pusher URL must have (spec
// §"POST /pushers/set": data.url "MUST have a path of
// /_matrix/push/v1/notify").
const pushGatewayPath = "/_matrix/push/v1/notify"

// Field bounds from the spec (app_id at most 64 characters, pushkey at
// most 512 bytes); the others keep one row small.
const (
	maxAppIDLength   = 64
	maxPushKeyLength = 512
	maxPusherField   = 512
	maxPusherData    = 4096
)

type pusherJSON struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// handleGetPushers serves GET /pushers.
func (s *Service) handleGetPushers(w http.ResponseWriter, r *http.Request) {
	caller := httputil.CallerFrom(r.Context())
	ps, err := s.db.Pushers(r.Context(), caller.UserID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	out := make([]pusherJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: p.Data})
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"pushers": out})
}

// handleSetPusher serves POST /pushers/set: create, replace or (kind null)
// delete a pusher.
func (s *Service) handleSetPusher(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller := httputil.CallerFrom(r.Context())
		var body struct {
			PushKey           *string         `json:"pushkey"`
			Kind              *string         `json:"kind"`
			AppID             *string         `json:"app_id"`
			AppDisplayName    *string         `json:"app_display_name"`
			DeviceDisplayName *string         `json:"device_display_name"`
			ProfileTag        string          `json:"profile_tag"`
			Lang              *string         `json:"lang"`
			Data              json.RawMessage `json:"data"`
			Append            bool            `json:"append"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		if body.PushKey == nil || *body.PushKey == "" {
			return httputil.MissingParam("pushkey is required")
		}
		if body.AppID == nil || *body.AppID == "" {
			return httputil.MissingParam("app_id is required")
		}
		if len(*body.AppID) > maxAppIDLength {
			return httputil.InvalidParam("app_id is longer than %d characters", maxAppIDLength)
		}
		if len(*body.PushKey) > maxPushKeyLength {
			return httputil.InvalidParam("pushkey is longer than %d bytes", maxPushKeyLength)
		}
		if body.Kind == nil {
			// Spec: "If the kind is null, the pusher is deleted."
			_, err := s.db.DeletePusher(r.Context(), caller.UserID, *body.AppID, *body.PushKey)
			return err
		}
		switch *body.Kind {
		case "http":
		case "email":
			return httputil.InvalidParam("Email pushers are not supported by this server")
		default:
			return httputil.InvalidParam("Unknown pusher kind %q", *body.Kind)
		}
		for name, v := range map[string]*string{"app_display_name": body.AppDisplayName, "device_display_name": body.DeviceDisplayName, "lang": body.Lang} {
			if v == nil {
				return httputil.MissingParam("%s is required", name)
			}
			if len(*v) > maxPusherField {
				return httputil.InvalidParam("%s is too long", name)
			}
		}
		if len(body.ProfileTag) > maxPusherField {
			return httputil.InvalidParam("profile_tag is too long")
		}
		if len(body.Data) > maxPusherData {
			return httputil.InvalidParam("data is too large")
		}
		var data struct {
			URL    *string `json:"url"`
			Format *string `json:"format"`
		}
		if len(body.Data) == 0 || string(body.Data) == "null" {
			return httputil.MissingParam("data is required")
		}
		if err := json.Unmarshal(body.Data, &data); err != nil {
			return httputil.BadJSON("data must be an object")
		}
		if data.URL == nil {
			return httputil.MissingParam("data.url is required for http pushers")
		}
		if err := checkGatewayURL(*data.URL); err != nil {
			return err
		}
		if data.Format != nil && *data.Format != "event_id_only" {
			return httputil.InvalidParam("data.format must be event_id_only or absent")
		}
		return s.db.PutPusher(r.Context(), storage.Pusher{
			UserID: caller.UserID, AppID: *body.AppID, PushKey: *body.PushKey, Kind: *body.Kind,
			AppDisplayName: *body.AppDisplayName, DeviceDisplayName: *body.DeviceDisplayName, ProfileTag: body.ProfileTag,
			Lang: *body.Lang, Data: body.Data, URL: *data.URL, PushKeyTS: time.Now().UnixMilli(),
		}, body.Append)
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// checkGatewayURL requires an absolute http(s) URL with the push gateway
// path.
func checkGatewayURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return httputil.InvalidParam("data.url must be an absolute http or https URL")
	}
	if u.Path != pushGatewayPath {
		return httputil.InvalidParam("data.url must have the path %s", pushGatewayPath)
	}
	return nil
}
