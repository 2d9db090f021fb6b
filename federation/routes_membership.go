package federation

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: server-server §"Joining Rooms", §"Leaving Rooms (Rejecting
// Invites)", §"Inviting to a room".

// residentRoom checks a membership request about a room this server is
// in: the room ID, the server ACL, the room being known with state here
// and this server having a joined member.
func (s *Service) residentRoom(r *http.Request) (string, gomatrixserverlib.IRoomVersion, error) {
	ctx := r.Context()
	roomID := chi.URLParam(r, "roomID")
	if _, err := spec.NewRoomID(roomID); err != nil {
		return "", nil, httputil.InvalidParam("Invalid room ID %q", roomID)
	}
	if err := s.checkACL(ctx, roomID, OriginFrom(ctx)); err != nil {
		return "", nil, err
	}
	info, err := s.rooms.QueryRoomInfo(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) || (err == nil && info.Stub) {
		return "", nil, httputil.NotFound("Room %s is not known here", roomID)
	}
	if err != nil {
		return "", nil, err
	}
	in, err := s.rooms.QueryServerInRoom(ctx, roomID, string(s.serverName))
	if err != nil {
		return "", nil, err
	}
	if in.JoinedMembers == 0 {
		return "", nil, httputil.NotFound("This server is no longer in room %s", roomID)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(info.RoomVersion)
	if err != nil {
		return "", nil, err
	}
	return roomID, verImpl, nil
}

func incompatibleVersion(v gomatrixserverlib.RoomVersion) *httputil.Error {
	e := httputil.NewError(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION", "Your server does not support room version %s", v)
	e.Extra = map[string]any{"room_version": string(v)}
	return e
}

// handleMakeJoin serves GET /_matrix/federation/v1/make_join/{roomId}/{userId}.
func (s *Service) handleMakeJoin(w http.ResponseWriter, r *http.Request) {
	s.makeMembership(w, r, spec.Join)
}

// handleMakeKnock serves GET /_matrix/federation/v1/make_knock/{roomId}/{userId}.
func (s *Service) handleMakeKnock(w http.ResponseWriter, r *http.Request) {
	s.makeMembership(w, r, spec.Knock)
}

// handleMakeLeave serves GET /_matrix/federation/v1/make_leave/{roomId}/{userId}.
func (s *Service) handleMakeLeave(w http.ResponseWriter, r *http.Request) {
	s.makeMembership(w, r, spec.Leave)
}

// makeMembership answers make_join, make_knock and make_leave: a template of the
// membership event on this server's forward extremities and state, which
// must pass the auth rules for the user (otherwise 403).
func (s *Service) makeMembership(w http.ResponseWriter, r *http.Request, membership string) {
	ctx := r.Context()
	origin := OriginFrom(ctx)
	userID := chi.URLParam(r, "userID")
	user, err := spec.NewUserID(userID, true)
	if err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("Invalid user ID %q", userID))
		return
	}
	if user.Domain() != origin {
		httputil.WriteError(w, r, httputil.Forbidden("%s is not a user of the requesting server %s", userID, origin))
		return
	}
	roomID, verImpl, err := s.residentRoom(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if membership != spec.Leave {
		// The joining (knocking) server lists the versions it supports;
		// none means version 1 only.
		vers := r.URL.Query()["ver"]
		if len(vers) == 0 {
			vers = []string{"1"}
		}
		if !slices.Contains(vers, string(verImpl.Version())) {
			httputil.WriteError(w, r, incompatibleVersion(verImpl.Version()))
			return
		}
	}
	proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID}
	if err := proto.SetContent(map[string]string{"membership": membership}); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ver, state, err := s.rooms.BuildEventTemplate(ctx, &proto)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		httputil.WriteError(w, r, httputil.NotFound("Room %s is not known here", roomID))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), origin, "ed25519:template", s.templateKey)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	provider := gomatrixserverlib.NewAuthEvents(state)
	if err := gomatrixserverlib.Allowed(ev, &provider, userIDForSender); err != nil {
		httputil.WriteError(w, r, httputil.Forbidden("%s may not %s: %v", userID, membership, err))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"event": proto, "room_version": ver})
}

// membershipEvent reads and checks the event of a send_join or
// send_leave: the one named in the path, in this room, about its own
// sender, who is a user of the requesting server, with the expected
// membership and a valid signature from that server.
func (s *Service) membershipEvent(r *http.Request, verImpl gomatrixserverlib.IRoomVersion, roomID, membership string) (gomatrixserverlib.PDU, error) {
	ctx := r.Context()
	var raw json.RawMessage
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &raw); err != nil {
		return nil, err
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, httputil.BadJSON("Invalid event: %v", err)
	}
	if ev.EventID() != chi.URLParam(r, "eventID") {
		return nil, httputil.BadJSON("The event ID in the path is not the event's ID %s", ev.EventID())
	}
	if ev.RoomID().String() != roomID || ev.Type() != spec.MRoomMember || ev.StateKey() == nil || *ev.StateKey() != string(ev.SenderID()) {
		return nil, httputil.BadJSON("The event must be an m.room.member event in %s about its own sender", roomID)
	}
	if m, err := ev.Membership(); err != nil || m != membership {
		return nil, httputil.BadJSON("The event's membership must be %s", membership)
	}
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil || sender.Domain() != OriginFrom(ctx) {
		return nil, httputil.Forbidden("The sender is not a user of the requesting server")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, ev, s.keys.KeyRing(), userIDForSender); err != nil {
		return nil, httputil.Forbidden("Signature check failed: %v", err)
	}
	return ev, nil
}

// storeMembership inputs a checked send_join/send_leave event; failing
// the auth rules (against its auth events, the state before it, or the
// current state) is 403.
func (s *Service) storeMembership(r *http.Request, roomID string, ev gomatrixserverlib.PDU) error {
	res, err := s.rooms.InputFederationEvents(r.Context(), &rsapi.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{ev}})
	if err != nil {
		return err
	}
	switch res := res.Results[0]; {
	case res.Error != "":
		return httputil.BadJSON("%s", res.Error)
	case res.Rejected, res.SoftFailed:
		return httputil.Forbidden("The event is not allowed by the room's state")
	}
	return nil
}

// handleSendJoin serves PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}:
// the join is countersigned, stored, and answered with the state before
// it and the auth chain of that state (omit_members is not supported and
// is answered with the full state, which the spec allows).
func (s *Service) handleSendJoin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, verImpl, err := s.residentRoom(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev, err := s.membershipEvent(r, verImpl, roomID, spec.Join)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	signed := ev.Sign(string(s.serverName), s.keyID, s.privateKey)
	if err := s.storeMembership(r, roomID, signed); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	state, err := s.rooms.QueryStateBeforeEvent(ctx, roomID, signed.EventID())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ids := []string{signed.EventID()}
	for _, e := range state {
		ids = append(ids, e.EventID())
	}
	chain, err := s.rooms.QueryAuthChain(ctx, roomID, ids)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	servers, err := s.db.JoinedServers(ctx, roomID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"origin":          s.serverName,
		"event":           json.RawMessage(signed.JSON()),
		"state":           eventJSONs(state),
		"auth_chain":      eventJSONs(chain),
		"members_omitted": false,
		"servers_in_room": servers,
	})
}

// handleSendLeave serves PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}.
func (s *Service) handleSendLeave(w http.ResponseWriter, r *http.Request) {
	roomID, verImpl, err := s.residentRoom(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev, err := s.membershipEvent(r, verImpl, roomID, spec.Leave)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.storeMembership(r, roomID, ev); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleSendKnock serves PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}:
// the knock is stored and answered with the room's stripped state, for
// the knocking user's client.
func (s *Service) handleSendKnock(w http.ResponseWriter, r *http.Request) {
	roomID, verImpl, err := s.residentRoom(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ev, err := s.membershipEvent(r, verImpl, roomID, spec.Knock)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.storeMembership(r, roomID, ev); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	stripped, err := s.strippedState(r.Context(), roomID, "")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"knock_room_state": stripped})
}

// handleInvite serves PUT /_matrix/federation/v2/invite/{roomId}/{eventId}:
// an invite of a user of this server, which this server countersigns and
// records so that the user sees it (in /sync's invite section, with the
// stripped state the inviting server sent).
func (s *Service) handleInvite(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := OriginFrom(ctx)
	roomID := chi.URLParam(r, "roomID")
	if _, err := spec.NewRoomID(roomID); err != nil {
		httputil.WriteError(w, r, httputil.InvalidParam("Invalid room ID %q", roomID))
		return
	}
	if err := s.checkACL(ctx, roomID, origin); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body struct {
		RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
		Event           json.RawMessage               `json:"event"`
		InviteRoomState []json.RawMessage             `json:"invite_room_state"`
	}
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(body.RoomVersion)
	if err != nil || body.RoomVersion == gomatrixserverlib.RoomVersionPseudoIDs {
		httputil.WriteError(w, r, incompatibleVersion(body.RoomVersion))
		return
	}
	ev, err := verImpl.NewEventFromUntrustedJSON(body.Event)
	if err != nil {
		httputil.WriteError(w, r, httputil.BadJSON("Invalid event: %v", err))
		return
	}
	if ev.EventID() != chi.URLParam(r, "eventID") || ev.RoomID().String() != roomID || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		httputil.WriteError(w, r, httputil.BadJSON("The event must be the m.room.member event named in the path"))
		return
	}
	if m, err := ev.Membership(); err != nil || m != spec.Invite {
		httputil.WriteError(w, r, httputil.BadJSON("The event's membership must be invite"))
		return
	}
	sender, err := spec.NewUserID(string(ev.SenderID()), true)
	if err != nil || sender.Domain() != origin {
		httputil.WriteError(w, r, httputil.Forbidden("The inviter is not a user of the requesting server"))
		return
	}
	invitee, err := spec.NewUserID(*ev.StateKey(), true)
	if err != nil || invitee.Domain() != s.serverName {
		httputil.WriteError(w, r, httputil.BadJSON("The invitee is not a user of this server"))
		return
	}
	if _, err := s.users.GetProfile(ctx, invitee.String()); errors.Is(err, userapi.ErrNotFound) {
		httputil.WriteError(w, r, httputil.NotFound("User %s does not exist", invitee.String()))
		return
	} else if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	// Only the inviting server has signed so far: check its signature on
	// the redacted event (what VerifyEventSignatures would also demand of
	// us, the invitee's server, comes next).
	redacted, err := verImpl.RedactEventJSON(ev.JSON())
	if err != nil {
		httputil.WriteError(w, r, httputil.BadJSON("Invalid event: %v", err))
		return
	}
	results, err := s.keys.KeyRing().VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: origin, Message: redacted, AtTS: ev.OriginServerTS(), ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if results[0].Error != nil {
		httputil.WriteError(w, r, httputil.Forbidden("The invite is not signed by %s: %v", origin, results[0].Error))
		return
	}
	signed := ev.Sign(string(s.serverName), s.keyID, s.privateKey)
	stored := signed
	if len(body.InviteRoomState) > 0 {
		if stored, err = signed.SetUnsigned(map[string]any{"invite_room_state": body.InviteRoomState}); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	if err := s.rooms.StoreRemoteMembership(ctx, body.RoomVersion, stored); err != nil {
		var be *rsapi.BadEventError
		if errors.As(err, &be) {
			httputil.WriteError(w, r, httputil.BadJSON("%s", be.Reason))
			return
		}
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"event": json.RawMessage(signed.JSON())})
}

func eventJSONs(evs []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.JSON())
	}
	return out
}
