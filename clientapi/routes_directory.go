package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Published room directory" (GET/PUT
// /directory/list/room/{roomId}, GET/POST /publicRooms).

const (
	directoryPublic  = "public"
	directoryPrivate = "private"
)

// GET /publicRooms; needs no access token.
func (s *Server) handleGetPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var req rsapi.PublicRoomsRequest
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	s.publicRooms(w, r, &req)
}

// POST /publicRooms
func (s *Server) handlePostPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req rsapi.PublicRoomsRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.publicRooms(w, r, &req)
}

func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request, req *rsapi.PublicRoomsRequest) {
	if err := s.checkDirectoryServer(r.URL.Query().Get("server")); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	resp, err := rsapi.AnswerPublicRooms(r.Context(), s.rooms, req)
	var bad *rsapi.InvalidParamError
	if errors.As(err, &bad) {
		err = httputil.InvalidParam("%s", bad.Reason)
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// checkDirectoryServer accepts the server query parameter when it names
// this server. Other servers' directories are fetched over federation
// (server-server spec §"Public Room Directory"), which the client API
// cannot do yet.
func (s *Server) checkDirectoryServer(server string) error {
	if server == "" || server == s.cfg.ServerName {
		return nil
	}
	if config.ValidateServerName(server) != nil {
		return httputil.InvalidParam("Invalid server name %q", server)
	}
	return httputil.NotFound("Fetching the room directory of %s is not supported yet: federation is not available to the client API", server)
}

type directoryVisibility struct {
	Visibility string `json:"visibility"`
}

// GET /directory/list/room/{roomId}; needs no access token.
func (s *Server) handleGetRoomVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	published, err := s.rooms.QueryRoomPublished(r.Context(), roomID)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	v := directoryPrivate
	if published {
		v = directoryPublic
	}
	httputil.WriteJSON(w, http.StatusOK, directoryVisibility{Visibility: v})
}

// PUT /directory/list/room/{roomId}. The spec leaves who may do this to
// the server: here a server admin, or a joined member who created the room
// or has the power to send state events (state_default).
func (s *Server) handleSetRoomVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	visibility := directoryPublic
	if body.Visibility != nil {
		visibility = *body.Visibility
	}
	if visibility != directoryPublic && visibility != directoryPrivate {
		httputil.WriteError(w, r, httputil.InvalidParam("visibility must be \"public\" or \"private\""))
		return
	}
	ctx := r.Context()
	if err := s.checkDirectoryPermission(ctx, roomID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.rooms.SetRoomPublished(ctx, roomID, visibility == directoryPublic); err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) checkDirectoryPermission(ctx context.Context, roomID string) error {
	caller := httputil.CallerFrom(ctx)
	p, err := s.powerOf(ctx, roomID, caller.UserID)
	if err != nil {
		return roomError(err, errUnknownRoom())
	}
	if p.create == nil {
		return errUnknownRoom()
	}
	if caller.Admin || p.joined && (p.creator || p.level >= p.levels.StateDefault) {
		return nil
	}
	return httputil.Forbidden("Only the room's creator, its moderators or a server admin may change its visibility in the directory")
}
