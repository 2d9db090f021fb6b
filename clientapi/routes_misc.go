package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/httputil"
)

// specVersions are the client-server spec versions this server speaks
// (client-server spec §"API Standards", GET /versions). Clients refuse
// servers that do not list the version they need.
var specVersions = []string{
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6",
	"v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// handleVersions is GET /_matrix/client/versions; it needs no access token.
func (s *Server) handleVersions(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          specVersions,
		"unstable_features": map[string]bool{},
	})
}

// handleCapabilities is GET /capabilities (client-server spec
// §"Capabilities negotiation"). Every room version gomatrixserverlib knows
// as stable is offered, with the configured default.
func (s *Server) handleCapabilities(w http.ResponseWriter, r *http.Request) {
	available := map[string]string{}
	for v := range gomatrixserverlib.StableRoomVersions() {
		available[string(v)] = "stable"
	}
	enabled := map[string]bool{"enabled": true}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"capabilities": map[string]any{
			"m.change_password": enabled,
			"m.room_versions": map[string]any{
				"default":   s.cfg.Rooms.DefaultVersion,
				"available": available,
			},
			"m.set_displayname": enabled,
			"m.set_avatar_url":  enabled,
			"m.3pid_changes":    map[string]bool{"enabled": false},
			"m.get_login_token": map[string]bool{"enabled": false},
		},
	})
}

// handleRequestOpenIDToken is POST /user/{userId}/openid/request_token
// (client-server spec §"OpenID"): a token a third party can verify
// through the federation API's userinfo endpoint.
func (s *Server) handleRequestOpenIDToken(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	var body struct{}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	userID, err := pathParam(r, "userId")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if userID != c.UserID {
		httputil.WriteError(w, r, httputil.Forbidden("Cannot request an OpenID token for another user"))
		return
	}
	tok, err := s.users.CreateOpenIDToken(r.Context(), c.UserID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, tok)
}
