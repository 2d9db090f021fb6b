package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	fedapi "github.com/parley-chat/parley/federation/api"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Membership in rooms on other servers (client-server spec §"Joining
// rooms", §"Leaving rooms", §"Inviting users"), done through the
// federation component's membership API.

// resolveJoinTarget turns /join's room ID or alias into a room ID and the
// servers to join through: the via and server_name parameters, the
// alias's directory answer, and the server in the room ID.
func (s *Server) resolveJoinTarget(ctx context.Context, r *http.Request, idOrAlias string) (string, []string, error) {
	q := r.URL.Query()
	servers := append(append([]string{}, q["via"]...), q["server_name"]...)
	if strings.HasPrefix(idOrAlias, "#") {
		server, err := parseAlias(idOrAlias)
		if err != nil {
			return "", nil, err
		}
		if server != s.cfg.ServerName && s.federation != nil {
			roomID, remote, err := s.federation.LookupRoomAlias(ctx, idOrAlias)
			if err != nil {
				return "", nil, err
			}
			return roomID, append(append(remote, server), servers...), nil
		}
		roomID, err := s.resolveRoom(ctx, idOrAlias)
		return roomID, servers, err
	}
	room, err := spec.NewRoomID(idOrAlias)
	if err != nil {
		return "", nil, httputil.InvalidParam("Invalid room ID or alias %q", idOrAlias)
	}
	return idOrAlias, append(servers, string(room.Domain())), nil
}

// joinRemotely joins the caller through other servers if the room is not
// one this server is in; handled says whether it did (or failed trying).
func (s *Server) joinRemotely(ctx context.Context, roomID string, servers []string, reason string) (handled bool, err error) {
	if s.federation == nil {
		return false, nil
	}
	remote, err := s.federation.NeedsRemoteJoin(ctx, roomID)
	if err != nil || !remote {
		return err != nil, err
	}
	caller := httputil.CallerFrom(ctx).UserID
	// An invited user joins through the inviting server first.
	if m, err := s.rooms.QueryMembership(ctx, roomID, caller); err == nil && m.Membership == visibility.Invite {
		if evs, err := s.rooms.QueryEventsByID(ctx, []string{m.EventID}); err == nil && len(evs) == 1 {
			if u, err := spec.NewUserID(string(evs[0].SenderID()), true); err == nil {
				servers = append([]string{string(u.Domain())}, servers...)
			}
		}
	}
	content, err := s.memberContent(ctx, caller, visibility.Join, reason)
	if err != nil {
		return true, err
	}
	return true, s.federation.PerformJoin(ctx, roomID, caller, servers, content)
}

// knockRemotely knocks on a room this server is not in through other
// servers; handled says whether it did (or failed trying).
func (s *Server) knockRemotely(ctx context.Context, roomID string, servers []string, reason string) (handled bool, err error) {
	if s.federation == nil {
		return false, nil
	}
	remote, err := s.federation.NeedsRemoteJoin(ctx, roomID)
	if err != nil || !remote {
		return err != nil, err
	}
	caller := httputil.CallerFrom(ctx).UserID
	content, err := s.memberContent(ctx, caller, visibility.Knock, reason)
	if err != nil {
		return true, err
	}
	return true, s.federation.PerformKnock(ctx, roomID, caller, servers, content)
}

// leaveRemotely rejects a remote invite or leaves a room as this server's
// last member through another server; handled is false when a local
// leave event is the way.
func (s *Server) leaveRemotely(ctx context.Context, roomID, reason string) (handled bool, err error) {
	if s.federation == nil {
		return false, nil
	}
	caller := httputil.CallerFrom(ctx).UserID
	content, err := s.memberContent(ctx, caller, visibility.Leave, reason)
	if err != nil {
		return true, err
	}
	err = s.federation.PerformLeave(ctx, roomID, caller, content)
	if errors.Is(err, fedapi.ErrLeaveLocally) {
		return false, nil
	}
	return true, err
}

// inviteRemotely invites a user of another server; handled is false for
// local users (or with federation off, where checkInvitable refuses).
func (s *Server) inviteRemotely(ctx context.Context, roomID, invitee, reason string) (handled bool, err error) {
	if s.federation == nil {
		return false, nil
	}
	if _, server, err := userapi.ParseUserID(invitee); err != nil || server == s.cfg.ServerName {
		return false, nil
	}
	content, err := s.memberContent(ctx, invitee, visibility.Invite, reason)
	if err != nil {
		return true, err
	}
	caller := httputil.CallerFrom(ctx).UserID
	return true, s.federation.PerformInvite(ctx, roomID, caller, invitee, content)
}
