package federation

import (
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// handleQueryDirectory serves GET /_matrix/federation/v1/query/directory:
// the room an alias of this server names, and servers likely to be in it
// (this one first, then those with joined members).
func (s *Service) handleQueryDirectory(w http.ResponseWriter, r *http.Request) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		httputil.WriteError(w, r, httputil.MissingParam("room_alias is required"))
		return
	}
	_, domain, err := gomatrixserverlib.SplitID('#', alias)
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("room_alias is not a valid room alias"))
		return
	}
	if domain != s.serverName {
		httputil.WriteError(w, r, httputil.NotFound("Room alias %s is not on this server", alias))
		return
	}
	roomID, err := s.rooms.GetRoomIDForAlias(r.Context(), alias)
	if errors.Is(err, rsapi.ErrAliasNotFound) || (err == nil && roomID == "") {
		httputil.WriteError(w, r, httputil.NotFound("Room alias %s not found", alias))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	joined, err := s.db.JoinedServers(r.Context(), roomID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	servers := []string{string(s.serverName)}
	for _, j := range joined {
		if j != string(s.serverName) {
			servers = append(servers, j)
		}
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
}

// handleQueryProfile serves GET /_matrix/federation/v1/query/profile for
// a user of this server, optionally one field of the profile.
func (s *Service) handleQueryProfile(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	userID := q.Get("user_id")
	if userID == "" {
		httputil.WriteError(w, r, httputil.MissingParam("user_id is required"))
		return
	}
	field := q.Get("field")
	if field != "" && field != "displayname" && field != "avatar_url" {
		httputil.WriteError(w, r, httputil.InvalidParam("field must be displayname or avatar_url"))
		return
	}
	user, err := spec.NewUserID(userID, false)
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("user_id is not a valid user ID"))
		return
	}
	if user.Domain() != s.serverName {
		httputil.WriteError(w, r, httputil.InvalidParam("User %s is not on this server", userID))
		return
	}
	p, err := s.users.GetProfile(r.Context(), userID)
	if errors.Is(err, userapi.ErrNotFound) {
		httputil.WriteError(w, r, httputil.NotFound("User %s does not exist", userID))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	out := map[string]string{}
	if p.DisplayName != "" && field != "avatar_url" {
		out["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" && field != "displayname" {
		out["avatar_url"] = p.AvatarURL
	}
	httputil.WriteJSON(w, http.StatusOK, out)
}
