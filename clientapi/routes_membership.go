package clientapi

import (
	"context"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Room membership" (joining, knocking, inviting,
// leaving, kicking, banning) and GET /joined_rooms.

type reasonBody struct {
	Reason string `json:"reason"`
}

type targetBody struct {
	UserID *string `json:"user_id"`
	Reason string  `json:"reason"`
	// The third-party form of /invite (client-server spec §"Invitations
	// via third-party identifiers") sends these instead of user_id.
	IDServer *string `json:"id_server"`
	Medium   *string `json:"medium"`
	Address  *string `json:"address"`
}

type roomIDResponse struct {
	RoomID string `json:"room_id"`
}

// decodeTarget reads a body naming the user acted on.
func (s *Server) decodeTarget(r *http.Request) (*targetBody, error) {
	var body targetBody
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		return nil, err
	}
	if body.UserID == nil {
		if body.IDServer != nil || body.Medium != nil || body.Address != nil {
			return nil, httputil.InvalidParam("Third-party invites are not supported: this server has no identity server integration")
		}
		return nil, httputil.MissingParam("user_id is required")
	}
	if err := validUserID(*body.UserID); err != nil {
		return nil, err
	}
	return &body, nil
}

// sendMembership stores an m.room.member event from the caller about target.
func (s *Server) sendMembership(ctx context.Context, roomID, target, membership, reason string) (string, error) {
	content, err := s.memberContent(ctx, target, membership, reason)
	if err != nil {
		return "", err
	}
	sender := httputil.CallerFrom(ctx).UserID
	return s.send(ctx, roomID, rsapi.EventTemplate{
		Sender: sender, Type: spec.MRoomMember, StateKey: stateKey(target), Content: content,
	}, nil, errUnknownRoom())
}

// POST /join/{roomIdOrAlias}
func (s *Server) handleJoinRoomByIDOrAlias(w http.ResponseWriter, r *http.Request) {
	idOrAlias, err := pathParam(r, "roomIdOrAlias")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	roomID, servers, err := s.resolveJoinTarget(r.Context(), r, idOrAlias)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.join(w, r, roomID, servers)
}

// POST /rooms/{roomId}/join
func (s *Server) handleJoinRoom(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var servers []string
	if room, err := spec.NewRoomID(roomID); err == nil {
		servers = []string{string(room.Domain())}
	}
	s.join(w, r, roomID, servers)
}

func (s *Server) join(w http.ResponseWriter, r *http.Request, roomID string, servers []string) {
	var body reasonBody
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if handled, err := s.joinRemotely(r.Context(), roomID, servers, body.Reason); handled {
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, roomIDResponse{RoomID: roomID})
		return
	}
	caller := httputil.CallerFrom(r.Context()).UserID
	if _, err := s.sendMembership(r.Context(), roomID, caller, visibility.Join, body.Reason); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, roomIDResponse{RoomID: roomID})
}

// POST /knock/{roomIdOrAlias}
func (s *Server) handleKnock(w http.ResponseWriter, r *http.Request) {
	idOrAlias, err := pathParam(r, "roomIdOrAlias")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body reasonBody
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	roomID, servers, err := s.resolveJoinTarget(r.Context(), r, idOrAlias)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if handled, err := s.knockRemotely(r.Context(), roomID, servers, body.Reason); handled {
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, roomIDResponse{RoomID: roomID})
		return
	}
	caller := httputil.CallerFrom(r.Context()).UserID
	if _, err := s.sendMembership(r.Context(), roomID, caller, visibility.Knock, body.Reason); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, roomIDResponse{RoomID: roomID})
}

// POST /rooms/{roomId}/invite
func (s *Server) handleInvite(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body, err := s.decodeTarget(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if handled, err := s.inviteRemotely(r.Context(), roomID, *body.UserID, body.Reason); handled {
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		httputil.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	if err := s.checkInvitable(*body.UserID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if _, err := s.sendMembership(r.Context(), roomID, *body.UserID, visibility.Invite, body.Reason); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// POST /rooms/{roomId}/leave
func (s *Server) handleLeave(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body reasonBody
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx).UserID
	m, err := s.rooms.QueryMembership(ctx, roomID, caller)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	switch m.Membership {
	case visibility.Leave:
		// Leaving a room one has already left changes nothing; answering
		// it as a success keeps a client's retry harmless.
	case "":
		// The auth rules library accepts leave-after-leave (for events
		// other servers sent that way), and a missing membership counts
		// as leave, so a stranger's "leave" would be stored; refuse it.
		httputil.WriteError(w, r, httputil.Forbidden("You are not a member of this room"))
		return
	default:
		if handled, err := s.leaveRemotely(ctx, roomID, body.Reason); handled {
			if err != nil {
				httputil.WriteError(w, r, err)
				return
			}
			break
		}
		if _, err := s.sendMembership(ctx, roomID, caller, visibility.Leave, body.Reason); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// POST /rooms/{roomId}/kick, /ban, /unban. Kick and unban are both a
// "leave" event about someone else, which the auth rules also allow in
// the other's place (kicking a banned user unbans them; "unbanning" a
// member kicks them), so the target's current membership is checked first.
func (s *Server) handleKick(w http.ResponseWriter, r *http.Request) {
	s.moderate(w, r, visibility.Leave, []string{visibility.Join, visibility.Invite, visibility.Knock}, "is not in the room")
}

func (s *Server) handleBan(w http.ResponseWriter, r *http.Request) {
	s.moderate(w, r, visibility.Ban, nil, "")
}

func (s *Server) handleUnban(w http.ResponseWriter, r *http.Request) {
	s.moderate(w, r, visibility.Leave, []string{visibility.Ban}, "is not banned")
}

// moderate sends membership about the body's user_id, if the target's
// current membership is one of from (nil: any).
func (s *Server) moderate(w http.ResponseWriter, r *http.Request, membership string, from []string, notFrom string) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body, err := s.decodeTarget(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	if from != nil {
		m, err := s.rooms.QueryMembership(ctx, roomID, *body.UserID)
		if err != nil {
			httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
			return
		}
		if !slices.Contains(from, m.Membership) {
			httputil.WriteError(w, r, httputil.Forbidden("%s %s", *body.UserID, notFrom))
			return
		}
	}
	if _, err := s.sendMembership(ctx, roomID, *body.UserID, membership, body.Reason); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// GET /joined_rooms
func (s *Server) handleJoinedRooms(w http.ResponseWriter, r *http.Request) {
	caller := httputil.CallerFrom(r.Context()).UserID
	rooms, err := s.rooms.QueryRoomsForUser(r.Context(), caller, []string{visibility.Join})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if rooms == nil {
		rooms = []string{}
	}
	httputil.WriteJSON(w, http.StatusOK, map[string][]string{"joined_rooms": rooms})
}
