package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Room aliases" (/directory/room/{roomAlias}) and
// GET /rooms/{roomId}/aliases.

// aliasParam returns {roomAlias} after checking its grammar, with its
// server name.
func (s *Server) aliasParam(r *http.Request) (alias, server string, err error) {
	alias, err = pathParam(r, "roomAlias")
	if err != nil {
		return "", "", err
	}
	server, err = parseAlias(alias)
	if err != nil {
		return "", "", err
	}
	return alias, server, nil
}

// PUT /directory/room/{roomAlias}: any member of a room may give it an
// alias on this server.
func (s *Server) handleSetAlias(w http.ResponseWriter, r *http.Request) {
	alias, server, err := s.aliasParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if server != s.cfg.ServerName {
		httputil.WriteError(w, r, httputil.InvalidParam("Room alias %s does not belong to this server", alias))
		return
	}
	var body struct {
		RoomID *string `json:"room_id"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body.RoomID == nil {
		httputil.WriteError(w, r, httputil.MissingParam("room_id is required"))
		return
	}
	if _, err := spec.NewRoomID(*body.RoomID); err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("Invalid room ID %q", *body.RoomID))
		return
	}
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx).UserID
	m, err := s.rooms.QueryMembership(ctx, *body.RoomID, caller)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	if m.Membership != visibility.Join {
		httputil.WriteError(w, r, httputil.Forbidden("You must be in the room to give it an alias"))
		return
	}
	if err := s.rooms.SetRoomAlias(ctx, alias, *body.RoomID, caller); err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// GET /directory/room/{roomAlias}; needs no access token. Aliases of other
// servers would be asked of that server over federation, which is not
// available yet.
func (s *Server) handleGetAlias(w http.ResponseWriter, r *http.Request) {
	alias, server, err := s.aliasParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if server != s.cfg.ServerName {
		httputil.WriteError(w, r, httputil.NotFound("Room alias %s belongs to another server; federation is not available yet", alias))
		return
	}
	ctx := r.Context()
	roomID, err := s.rooms.GetRoomIDForAlias(ctx, alias)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	servers, err := s.roomServers(r, roomID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
}

// roomServers lists the servers with joined members in the room, this
// server first: the servers a client may join through.
func (s *Server) roomServers(r *http.Request, roomID string) ([]string, error) {
	servers := []string{s.cfg.ServerName}
	evs, err := s.rooms.QueryCurrentState(r.Context(), roomID, nil)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return servers, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{s.cfg.ServerName: true}
	for _, ev := range evs {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		if m, err := ev.Membership(); err != nil || m != visibility.Join {
			continue
		}
		if _, server, err := userapi.ParseUserID(*ev.StateKey()); err == nil && !seen[server] {
			seen[server] = true
			servers = append(servers, server)
		}
	}
	return servers, nil
}

// DELETE /directory/room/{roomAlias}. Who may delete is the roomserver's
// decision (it knows each alias's creator and the room's power levels).
func (s *Server) handleDeleteAlias(w http.ResponseWriter, r *http.Request) {
	alias, server, err := s.aliasParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if server != s.cfg.ServerName {
		httputil.WriteError(w, r, httputil.InvalidParam("Room alias %s does not belong to this server", alias))
		return
	}
	caller := httputil.CallerFrom(r.Context()).UserID
	if err := s.rooms.RemoveRoomAlias(r.Context(), alias, caller); err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// GET /rooms/{roomId}/aliases: for members, or anyone if the room is
// world_readable.
func (s *Server) handleGetRoomAliases(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx).UserID
	m, err := s.rooms.QueryMembership(ctx, roomID, caller)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errNotInRoom()))
		return
	}
	if m.Membership != visibility.Join {
		hv, err := s.currentStateContent(ctx, roomID, spec.MRoomHistoryVisibility, "")
		if err != nil {
			httputil.WriteError(w, r, roomError(err, errNotInRoom()))
			return
		}
		var c gomatrixserverlib.HistoryVisibilityContent
		if hv == nil || json.Unmarshal(hv, &c) != nil || c.HistoryVisibility != gomatrixserverlib.HistoryVisibilityWorldReadable {
			httputil.WriteError(w, r, errNotInRoom())
			return
		}
	}
	aliases, err := s.rooms.GetAliasesForRoom(ctx, roomID)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errNotInRoom()))
		return
	}
	if aliases == nil {
		aliases = []string{}
	}
	httputil.WriteJSON(w, http.StatusOK, map[string][]string{"aliases": aliases})
}
