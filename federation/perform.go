package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	fedapi "github.com/parley-chat/parley/federation/api"
	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

var _ fedapi.MembershipAPI = (*Service)(nil)

// joinClient adapts the federation client to what gomatrixserverlib's
// PerformJoin calls.
type joinClient struct{ c *Client }

func (j joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	r, err := j.c.MakeJoin(ctx, origin, s, roomID, userID)
	return &r, err
}

func (j joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	r, err := j.c.SendJoin(ctx, origin, s, event)
	return &r, err
}

// candidates returns servers to try, in order, without repeats or us.
func (s *Service) candidates(servers []string) []spec.ServerName {
	seen := map[string]bool{string(s.serverName): true}
	var out []spec.ServerName
	for _, srv := range servers {
		if srv != "" && !seen[srv] {
			seen[srv] = true
			out = append(out, spec.ServerName(srv))
		}
	}
	return out
}

// remoteError turns a failed request to another server into what the
// client should see: the remote server's own refusal (403, 404, 400 with
// its errcode) passed on, anything else 502.
func remoteError(server spec.ServerName, err error) error {
	// FederationError does not unwrap; its cause is in Err.
	var ferr *gomatrixserverlib.FederationError
	if errors.As(err, &ferr) {
		err = ferr.Err
	}
	var herr gomatrix.HTTPError
	if errors.As(err, &herr) {
		var body struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		_ = json.Unmarshal(herr.Contents, &body)
		switch herr.Code {
		case http.StatusForbidden, http.StatusNotFound, http.StatusBadRequest:
			code := body.ErrCode
			if code == "" {
				code = map[int]string{http.StatusForbidden: "M_FORBIDDEN", http.StatusNotFound: "M_NOT_FOUND", http.StatusBadRequest: "M_UNKNOWN"}[herr.Code]
			}
			return httputil.NewError(herr.Code, code, "%s refused: %s", server, body.Error)
		}
	}
	return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not reach %s: %v", server, err)
}

// eventProvider fetches events by ID from server, checking their
// signatures, for auth events a send_join answer left out.
func (s *Service) eventProvider(ctx context.Context, server spec.ServerName) gomatrixserverlib.EventProvider {
	return func(ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		return s.fetchEvents(ctx, server, ver, ids)
	}
}

// maxFetchedEvents bounds the events fetched one by one for one gap.
const maxFetchedEvents = 200

// fetchEvents gets events by ID from server (GET /event), parsed for the
// room version and signature-checked; it fails if any is missing.
func (s *Service) fetchEvents(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	if len(ids) > maxFetchedEvents {
		return nil, fmt.Errorf("%d events to fetch, more than %d", len(ids), maxFetchedEvents)
	}
	out := make([]gomatrixserverlib.PDU, 0, len(ids))
	for _, id := range ids {
		txn, err := s.client.GetEvent(ctx, s.serverName, server, id)
		if err != nil {
			return nil, fmt.Errorf("fetch %s from %s: %w", id, server, err)
		}
		if len(txn.PDUs) != 1 {
			return nil, fmt.Errorf("fetch %s from %s: %d PDUs in the answer", id, server, len(txn.PDUs))
		}
		ev, err := verImpl.NewEventFromUntrustedJSON(txn.PDUs[0])
		if err != nil {
			return nil, fmt.Errorf("fetch %s from %s: %w", id, server, err)
		}
		if ev.EventID() != id {
			return nil, fmt.Errorf("fetch %s from %s: got %s instead", id, server, ev.EventID())
		}
		out = append(out, ev)
	}
	for i, err := range gomatrixserverlib.VerifyAllEventSignatures(ctx, out, s.keys.KeyRing(), userIDForSender) {
		if err != nil {
			return nil, fmt.Errorf("event %s: %w", out[i].EventID(), err)
		}
	}
	return out, nil
}

// NeedsRemoteJoin implements fedapi.MembershipAPI.
func (s *Service) NeedsRemoteJoin(ctx context.Context, roomID string) (bool, error) {
	info, err := s.rooms.QueryRoomInfo(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if info.Stub {
		return true, nil
	}
	if r, err := spec.NewRoomID(roomID); err != nil || r.Domain() == s.serverName {
		return false, nil
	}
	in, err := s.rooms.QueryServerInRoom(ctx, roomID, string(s.serverName))
	if err != nil {
		return false, err
	}
	return in.JoinedMembers == 0, nil
}

// PerformJoin implements fedapi.MembershipAPI.
func (s *Service) PerformJoin(ctx context.Context, roomID, userID string, serverNames []string, content json.RawMessage) error {
	user, err := spec.NewUserID(userID, true)
	if err != nil || user.Domain() != s.serverName {
		return httputil.InvalidParam("%s is not a user of this server", userID)
	}
	room, err := spec.NewRoomID(roomID)
	if err != nil {
		return httputil.InvalidParam("Invalid room ID %q", roomID)
	}
	servers := s.candidates(serverNames)
	if len(servers) == 0 {
		return httputil.NotFound("No server to join %s through is known; give server_name", roomID)
	}
	var lastErr error
	for _, srv := range servers {
		fields := map[string]any{}
		if len(content) > 0 {
			if err := json.Unmarshal(content, &fields); err != nil {
				return httputil.BadJSON("membership content must be a JSON object")
			}
		}
		res, ferr := gomatrixserverlib.PerformJoin(ctx, joinClient{s.client}, gomatrixserverlib.PerformJoinInput{
			UserID:        user,
			RoomID:        room,
			ServerName:    srv,
			Content:       fields,
			PrivateKey:    s.privateKey,
			KeyID:         s.keyID,
			KeyRing:       s.keys.KeyRing(),
			EventProvider: s.eventProvider(ctx, srv),
			UserIDQuerier: userIDForSender,
		})
		if ferr != nil {
			logrus.WithError(ferr).WithFields(logrus.Fields{"room_id": roomID, "server": srv}).Info("federation: join attempt failed")
			lastErr = remoteError(srv, ferr)
			if ferr.Reachable && !ferr.Transient {
				// The server answered and the answer was bad: another
				// server may do better.
				lastErr = httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "Joining through %s failed: %v", srv, ferr.Err)
			}
			continue
		}
		ver := res.JoinEvent.Version()
		err := s.rooms.JoinRemoteRoom(ctx, &rsapi.JoinRemoteRoomRequest{
			RoomID:      roomID,
			RoomVersion: ver,
			JoinEvent:   res.JoinEvent,
			StateEvents: res.StateSnapshot.GetStateEvents().UntrustedEvents(ver),
			AuthChain:   res.StateSnapshot.GetAuthEvents().UntrustedEvents(ver),
		})
		var na *rsapi.NotAllowedError
		var be *rsapi.BadEventError
		switch {
		case errors.As(err, &na):
			return httputil.Forbidden("%s", na.Reason)
		case errors.As(err, &be):
			return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s sent an unusable join answer: %s", srv, be.Reason)
		}
		return err
	}
	return lastErr
}

// PerformLeave implements fedapi.MembershipAPI.
func (s *Service) PerformLeave(ctx context.Context, roomID, userID string, content json.RawMessage) error {
	info, err := s.rooms.QueryRoomInfo(ctx, roomID)
	if err != nil {
		return err
	}
	m, err := s.rooms.QueryMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	// Without a local member the state here is stale or absent: the
	// server that sent the invite (or took the knock) knows the room.
	outside := info.Stub
	if !outside {
		in, err := s.rooms.QueryServerInRoom(ctx, roomID, string(s.serverName))
		if err != nil {
			return err
		}
		if m.Membership != spec.Join && in.JoinedMembers == 0 {
			outside = true
		} else if m.Membership != spec.Join || in.JoinedMembers != 1 {
			return fedapi.ErrLeaveLocally
		}
	}
	var servers []string
	if outside {
		if evs, err := s.rooms.QueryEventsByID(ctx, []string{m.EventID}); err == nil && len(evs) == 1 {
			if u, err := spec.NewUserID(string(evs[0].SenderID()), true); err == nil {
				servers = append(servers, string(u.Domain()))
			}
		}
	} else if servers, err = s.db.JoinedServers(ctx, roomID); err != nil {
		return err
	}
	if r, err := spec.NewRoomID(roomID); err == nil {
		servers = append(servers, string(r.Domain()))
	}
	candidates := s.candidates(servers)
	if len(candidates) == 0 && !outside {
		return fedapi.ErrLeaveLocally
	}
	for _, srv := range candidates {
		ev, err := s.leaveThrough(ctx, srv, roomID, userID, content)
		if err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "server": srv}).Info("federation: leave attempt failed")
			continue
		}
		if outside {
			return s.rooms.StoreRemoteMembership(ctx, info.RoomVersion, ev)
		}
		res, err := s.inputWithGaps(ctx, srv, roomID, info.RoomVersion, []gomatrixserverlib.PDU{ev})
		if err != nil {
			return err
		}
		if len(res) == 1 && res[0].Error == "" && !res[0].Rejected {
			return nil
		}
		logrus.WithField("room_id", roomID).Warn("federation: leave from send_leave could not be stored; leaving locally")
		return fedapi.ErrLeaveLocally
	}
	if !outside {
		// Nobody answered: the local leave reaches them through the queue.
		return fedapi.ErrLeaveLocally
	}
	// No server would take the rejection; the invite is rejected here only
	// (spec §"Leaving Rooms (Rejecting Invites)" leaves this to the server).
	return s.rejectLocally(ctx, info.RoomVersion, roomID, userID, m.EventID, content)
}

// leaveThrough runs make_leave and send_leave with one server.
func (s *Service) leaveThrough(ctx context.Context, srv spec.ServerName, roomID, userID string, content json.RawMessage) (gomatrixserverlib.PDU, error) {
	res, err := s.client.MakeLeave(ctx, s.serverName, srv, roomID, userID)
	if err != nil {
		return nil, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(res.RoomVersion)
	if err != nil {
		return nil, err
	}
	proto := res.LeaveEvent
	proto.Type, proto.RoomID, proto.SenderID, proto.StateKey, proto.Redacts = spec.MRoomMember, roomID, userID, &userID, ""
	fields := map[string]any{}
	if len(content) > 0 {
		_ = json.Unmarshal(content, &fields)
	}
	fields["membership"] = spec.Leave
	if err := proto.SetContent(fields); err != nil {
		return nil, err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), s.serverName, s.keyID, s.privateKey)
	if err != nil {
		return nil, err
	}
	if err := s.client.SendLeave(ctx, s.serverName, srv, ev); err != nil {
		return nil, err
	}
	return ev, nil
}

// rejectLocally records a rejection that no other server took: a leave
// signed here after the invite, known to this server only.
func (s *Service) rejectLocally(ctx context.Context, ver gomatrixserverlib.RoomVersion, roomID, userID, inviteID string, content json.RawMessage) error {
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return err
	}
	fields := map[string]any{}
	if len(content) > 0 {
		_ = json.Unmarshal(content, &fields)
	}
	fields["membership"] = spec.Leave
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID,
		PrevEvents: []string{inviteID}, AuthEvents: []string{inviteID}, Depth: 1,
	}
	if err := proto.SetContent(fields); err != nil {
		return err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), s.serverName, s.keyID, s.privateKey)
	if err != nil {
		return err
	}
	return s.rooms.StoreRemoteMembership(ctx, ver, ev)
}

// strippedStateTypes are shared with an invitee (client-server spec
// §"Stripped state", the recommended set).
var strippedStateTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar",
	spec.MRoomTopic, spec.MRoomCanonicalAlias, "m.room.encryption"}

// PerformInvite implements fedapi.MembershipAPI (server-server spec
// §"Inviting to a room": the inviting server signs, the invitee's server
// countersigns, then the event goes into the room).
func (s *Service) PerformInvite(ctx context.Context, roomID, inviterUserID, inviteeUserID string, content json.RawMessage) error {
	invitee, err := spec.NewUserID(inviteeUserID, true)
	if err != nil {
		return httputil.InvalidParam("Invalid user ID %q", inviteeUserID)
	}
	proto := gomatrixserverlib.ProtoEvent{
		SenderID: inviterUserID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &inviteeUserID, Content: spec.RawJSON(content),
	}
	ver, state, err := s.rooms.BuildEventTemplate(ctx, &proto)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return httputil.NotFound("Room %s is not known here", roomID)
	}
	if err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return err
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), s.serverName, s.keyID, s.privateKey)
	if err != nil {
		return httputil.BadJSON("%v", err)
	}
	provider := gomatrixserverlib.NewAuthEvents(state)
	if err := gomatrixserverlib.Allowed(ev, &provider, userIDForSender); err != nil {
		return httputil.Forbidden("%v", err)
	}
	stripped, err := s.strippedState(ctx, roomID, inviterUserID)
	if err != nil {
		return err
	}
	req, err := fclient.NewInviteV2Request(ev, stripped)
	if err != nil {
		return err
	}
	resp, err := s.client.SendInviteV2(ctx, s.serverName, invitee.Domain(), req)
	if err != nil {
		return remoteError(invitee.Domain(), err)
	}
	signed, err := verImpl.NewEventFromUntrustedJSON(resp.Event)
	if err != nil || signed.EventID() != ev.EventID() {
		return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s returned a different invite event", invitee.Domain())
	}
	// The invitee's server's signature is required on an invite (room
	// versions §"Signing events").
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, s.keys.KeyRing(), userIDForSender); err != nil {
		return httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s signed the invite badly: %v", invitee.Domain(), err)
	}
	res, err := s.rooms.InputFederationEvents(ctx, &rsapi.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{signed}})
	if err != nil {
		return err
	}
	if r := res.Results[0]; r.Rejected || r.SoftFailed || r.Error != "" {
		return httputil.Forbidden("The invite could not be stored: %s", r.Error)
	}
	return nil
}

// strippedState is the room's stripped state for an invitee or a knocker,
// with the membership of member (the inviter) if given.
func (s *Service) strippedState(ctx context.Context, roomID, member string) ([]gomatrixserverlib.InviteStrippedState, error) {
	tuples := make([]gomatrixserverlib.StateKeyTuple, 0, len(strippedStateTypes)+1)
	for _, t := range strippedStateTypes {
		tuples = append(tuples, gomatrixserverlib.StateKeyTuple{EventType: t})
	}
	if member != "" {
		tuples = append(tuples, gomatrixserverlib.StateKeyTuple{EventType: spec.MRoomMember, StateKey: member})
	}
	current, err := s.rooms.QueryCurrentState(ctx, roomID, tuples)
	if err != nil {
		return nil, err
	}
	stripped := make([]gomatrixserverlib.InviteStrippedState, 0, len(current))
	for _, e := range current {
		stripped = append(stripped, gomatrixserverlib.NewInviteStrippedState(e))
	}
	return stripped, nil
}

// knockVersions are the room versions offered to make_knock: those this
// server supports whose auth rules have knocking (room versions §v7 added
// it, so 1 to 6 are left out).
func knockVersions() []gomatrixserverlib.RoomVersion {
	var out []gomatrixserverlib.RoomVersion
	for v := range gomatrixserverlib.StableRoomVersions() {
		switch v {
		case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
			gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6:
		default:
			out = append(out, v)
		}
	}
	return out
}

// PerformKnock implements fedapi.MembershipAPI (server-server spec
// §"Knocking upon a room").
func (s *Service) PerformKnock(ctx context.Context, roomID, userID string, serverNames []string, content json.RawMessage) error {
	servers := s.candidates(serverNames)
	if len(servers) == 0 {
		return httputil.NotFound("No server to knock on %s through is known; give server_name", roomID)
	}
	var lastErr error
	for _, srv := range servers {
		res, err := s.client.MakeKnock(ctx, s.serverName, srv, roomID, userID, knockVersions())
		if err != nil {
			lastErr = remoteError(srv, err)
			continue
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(res.RoomVersion)
		if err != nil || res.RoomVersion == gomatrixserverlib.RoomVersionPseudoIDs {
			lastErr = httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s offered unsupported room version %q", srv, res.RoomVersion)
			continue
		}
		proto := res.KnockEvent
		proto.Type, proto.RoomID, proto.SenderID, proto.StateKey, proto.Redacts = spec.MRoomMember, roomID, userID, &userID, ""
		fields := map[string]any{}
		if len(content) > 0 {
			_ = json.Unmarshal(content, &fields)
		}
		fields["membership"] = spec.Knock
		if err := proto.SetContent(fields); err != nil {
			return err
		}
		ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), s.serverName, s.keyID, s.privateKey)
		if err != nil {
			lastErr = httputil.NewError(http.StatusBadGateway, "M_UNKNOWN", "%s sent an unusable knock template: %v", srv, err)
			continue
		}
		sent, err := s.client.SendKnock(ctx, s.serverName, srv, ev)
		if err != nil {
			lastErr = remoteError(srv, err)
			continue
		}
		// The sync API shows the room's stripped state from here
		// (client-server spec §"Knocking on rooms": knock_state).
		stored, err := ev.SetUnsigned(map[string]any{"knock_room_state": sent.KnockRoomState})
		if err != nil {
			return err
		}
		return s.rooms.StoreRemoteMembership(ctx, res.RoomVersion, stored)
	}
	return lastErr
}

// LookupRoomAlias implements fedapi.MembershipAPI.
func (s *Service) LookupRoomAlias(ctx context.Context, alias string) (string, []string, error) {
	_, domain, err := gomatrixserverlib.SplitID('#', alias)
	if err != nil {
		return "", nil, httputil.InvalidParam("Invalid room alias %q", alias)
	}
	res, err := s.client.LookupRoomAlias(ctx, s.serverName, domain, alias)
	if err != nil {
		return "", nil, remoteError(domain, err)
	}
	servers := make([]string, 0, len(res.Servers))
	for _, srv := range res.Servers {
		servers = append(servers, string(srv))
	}
	return res.RoomID, servers, nil
}
