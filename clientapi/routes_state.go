package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/clientevent"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Room state" (PUT/GET /rooms/{roomId}/state...),
// §"Getting events for a room" (GET /rooms/{roomId}/event/{eventId},
// /state, /members, /joined_members).

// stateKeyParam returns {stateKey}; routes without it mean "".
func stateKeyParam(r *http.Request) (string, error) {
	return pathParam(r, "stateKey")
}

// PUT /rooms/{roomId}/state/{eventType}/{stateKey}
func (s *Server) handleSetState(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	key, err := stateKeyParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body, err := httputil.ReadBody(r, s.cfg.Client.MaxBodyBytes)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	content, err := jsonObject(body)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	if evType == spec.MRoomCanonicalAlias && key == "" {
		if err := s.checkCanonicalAlias(ctx, roomID, content); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	caller := httputil.CallerFrom(ctx).UserID
	eventID, err := s.send(ctx, roomID, rsapi.EventTemplate{
		Sender: caller, Type: evType, StateKey: stateKey(key), Content: content,
	}, nil, errUnknownRoom())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, eventIDResponse{EventID: eventID})
}

type canonicalAliasContent struct {
	Alias      *string  `json:"alias"`
	AltAliases []string `json:"alt_aliases"`
}

func (c canonicalAliasContent) all() []string {
	out := append([]string(nil), c.AltAliases...)
	if c.Alias != nil {
		out = append(out, *c.Alias)
	}
	return out
}

// checkCanonicalAlias applies the spec's SHOULD for m.room.canonical_alias:
// aliases the event adds must be valid (400 M_INVALID_PARAM) and point to
// this room (400 M_BAD_ALIAS). Aliases of other servers could only be
// checked over federation and are taken as given.
func (s *Server) checkCanonicalAlias(ctx context.Context, roomID string, content json.RawMessage) error {
	var next canonicalAliasContent
	if err := json.Unmarshal(content, &next); err != nil {
		return httputil.BadJSON("m.room.canonical_alias: alias must be a string and alt_aliases a list of strings")
	}
	old := map[string]bool{}
	if prev, err := s.currentStateContent(ctx, roomID, spec.MRoomCanonicalAlias, ""); err != nil {
		return roomError(err, errUnknownRoom())
	} else if prev != nil {
		var c canonicalAliasContent
		_ = json.Unmarshal(prev, &c)
		for _, a := range c.all() {
			old[a] = true
		}
	}
	for _, alias := range next.all() {
		if old[alias] {
			continue
		}
		server, err := parseAlias(alias)
		if err != nil {
			return err
		}
		if server != s.cfg.ServerName {
			continue
		}
		target, err := s.rooms.GetRoomIDForAlias(ctx, alias)
		if err != nil && !errors.Is(err, rsapi.ErrAliasNotFound) {
			return err
		}
		if target != roomID {
			return httputil.NewError(http.StatusBadRequest, "M_BAD_ALIAS", "The alias %s does not point to this room", alias)
		}
	}
	return nil
}

// readableState returns the state the caller may read (current, or as of
// their last visible membership change), restricted to tuples if any.
func (s *Server) readableState(ctx context.Context, roomID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	caller := httputil.CallerFrom(ctx).UserID
	reader, err := visibility.LoadReader(ctx, s.rooms, roomID, caller)
	if err != nil {
		return nil, roomError(err, errNotInRoom())
	}
	current, at, ok, err := visibility.StateAt(ctx, s.rooms, roomID, reader)
	if err != nil {
		return nil, roomError(err, errNotInRoom())
	}
	if !ok {
		return nil, errNotInRoom()
	}
	var evs []gomatrixserverlib.PDU
	if current {
		evs, err = s.rooms.QueryCurrentState(ctx, roomID, tuples)
	} else {
		evs, err = s.rooms.QueryStateAfterEvent(ctx, roomID, at, tuples)
	}
	if err != nil {
		return nil, roomError(err, errNotInRoom())
	}
	return evs, nil
}

// GET /rooms/{roomId}/state/{eventType}/{stateKey}
func (s *Server) handleGetStateEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evType, err := eventTypeParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	key, err := stateKeyParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evs, err := s.readableState(r.Context(), roomID, []gomatrixserverlib.StateKeyTuple{{EventType: evType, StateKey: key}})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	for _, ev := range evs {
		if ev.Type() != evType || !ev.StateKeyEquals(key) {
			continue
		}
		// format=event asks for the whole event instead of its content
		// (client-server spec v1.12 GET .../state/{eventType}/{stateKey}).
		if r.URL.Query().Get("format") == "event" {
			httputil.WriteJSON(w, http.StatusOK, clientevent.New(ev))
		} else {
			httputil.WriteJSON(w, http.StatusOK, json.RawMessage(clientevent.New(ev).Content))
		}
		return
	}
	httputil.WriteError(w, r, httputil.NotFound("The room has no state %s with key %q", evType, key))
}

// GET /rooms/{roomId}/state
func (s *Server) handleGetState(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evs, err := s.readableState(r.Context(), roomID, nil)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, clientevent.List(evs))
}

var memberships = []string{visibility.Join, visibility.Invite, visibility.Knock, visibility.Leave, visibility.Ban}

// GET /rooms/{roomId}/members
//
// The "at" parameter is a sync pagination token. Those tokens belong to
// the sync API, which does not exist yet, so "at" is ignored and the
// members are those of the state the caller may read now, which is what
// the spec gives when "at" is absent.
func (s *Server) handleGetMembers(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	for name, v := range map[string]string{"membership": want, "not_membership": notWant} {
		if v != "" && !slices.Contains(memberships, v) {
			httputil.WriteError(w, r, httputil.InvalidParam("%s must be one of join, invite, knock, leave, ban", name))
			return
		}
	}
	evs, err := s.readableState(r.Context(), roomID, nil)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	chunk := []clientevent.Event{}
	for _, ev := range evs {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		m, err := ev.Membership()
		if err != nil {
			continue
		}
		if memberFilter(m, want, notWant) {
			chunk = append(chunk, clientevent.New(ev))
		}
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"chunk": chunk})
}

// memberFilter applies membership/not_membership. The spec joins the two,
// when both are given, with "or": the membership is want, or is not notWant.
func memberFilter(m, want, notWant string) bool {
	switch {
	case want != "" && notWant != "":
		return m == want || m != notWant
	case want != "":
		return m == want
	case notWant != "":
		return m != notWant
	}
	return true
}

type roomMember struct {
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// GET /rooms/{roomId}/joined_members: only for users in the room now.
func (s *Server) handleGetJoinedMembers(w http.ResponseWriter, r *http.Request) {
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
		httputil.WriteError(w, r, errNotInRoom())
		return
	}
	evs, err := s.rooms.QueryCurrentState(ctx, roomID, nil)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errNotInRoom()))
		return
	}
	joined := map[string]roomMember{}
	for _, ev := range evs {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		if mem, err := ev.Membership(); err != nil || mem != visibility.Join {
			continue
		}
		// Profile fields of another type than string are left out rather
		// than hiding the member.
		var c map[string]json.RawMessage
		_ = json.Unmarshal(ev.Content(), &c)
		joined[*ev.StateKey()] = roomMember{DisplayName: stringField(c, "displayname"), AvatarURL: stringField(c, "avatar_url")}
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"joined": joined})
}

// GET /rooms/{roomId}/event/{eventId}: 404 both for unknown events and for
// events the caller may not see, as the spec asks.
func (s *Server) handleGetEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	notFound := httputil.NotFound("Event not found")
	evs, err := s.rooms.QueryEventsByID(ctx, []string{eventID})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(evs) == 0 || evs[0].RoomID().String() != roomID {
		httputil.WriteError(w, r, notFound)
		return
	}
	reader, err := visibility.LoadReader(ctx, s.rooms, roomID, httputil.CallerFrom(ctx).UserID)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, notFound))
		return
	}
	ok, err := visibility.CanSeeEvent(ctx, s.rooms, reader, evs[0])
	if err != nil {
		httputil.WriteError(w, r, roomError(err, notFound))
		return
	}
	if !ok {
		httputil.WriteError(w, r, notFound)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, clientevent.New(evs[0]))
}

// stringField returns content[key] if it is a JSON string, else "".
func stringField(content map[string]json.RawMessage, key string) string {
	var v string
	if raw, ok := content[key]; ok && json.Unmarshal(raw, &v) == nil {
		return v
	}
	return ""
}
