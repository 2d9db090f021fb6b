package clientapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Helpers shared by the room endpoints (routes_createroom.go,
// routes_membership.go, routes_send.go, routes_state.go, routes_aliases.go).

// maxAliasLength bounds a room alias, sigil and server name included
// (appendices §"Room Aliases").
const maxAliasLength = 255

// roomError converts a roomserver error into the Matrix error the client
// sees. unknownRoom is the answer for a room this server does not know,
// which differs per endpoint (404 M_NOT_FOUND, or 403 M_FORBIDDEN where the
// spec only lets the endpoint say "you are not a member").
func roomError(err error, unknownRoom *httputil.Error) error {
	var notAllowed *rsapi.NotAllowedError
	var badEvent *rsapi.BadEventError
	var matrixErr *httputil.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &matrixErr):
		return matrixErr
	case errors.Is(err, rsapi.ErrRoomNotFound):
		return unknownRoom
	case errors.As(err, &notAllowed):
		return httputil.Forbidden("%s", notAllowed.Reason)
	case errors.As(err, &badEvent):
		if badEvent.TooLarge {
			return httputil.TooLarge("%s", badEvent.Reason)
		}
		return httputil.BadJSON("%s", badEvent.Reason)
	case errors.Is(err, rsapi.ErrAliasInUse):
		return httputil.NewError(http.StatusConflict, "M_ROOM_IN_USE", "Room alias already in use")
	case errors.Is(err, rsapi.ErrAliasNotFound):
		return httputil.NotFound("Room alias not found")
	case errors.Is(err, rsapi.ErrEventNotFound):
		return httputil.NotFound("Event not found")
	}
	return err
}

// errUnknownRoom is the 404 answer for write endpoints on an unknown room.
func errUnknownRoom() *httputil.Error {
	return httputil.NotFound("Room not found on this server")
}

// errNotInRoom is the 403 answer for read endpoints whose spec only knows
// "you are not (and were not) a member"; it does not reveal whether the
// room exists.
func errNotInRoom() *httputil.Error {
	return httputil.Forbidden("You are not a member of this room")
}

// pathParam returns a URL path parameter, percent-decoded. chi matches on
// the escaped path when the request had escapes that change its meaning
// (such as %2F in a state key), and then hands the parameter over still
// escaped.
func pathParam(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v, nil
	}
	dec, err := url.PathUnescape(v)
	if err != nil {
		return "", httputil.InvalidParam("Path parameter %s is not correctly escaped", name)
	}
	return dec, nil
}

// roomIDParam returns the {roomId} path parameter after checking its
// grammar (appendices §"Room IDs").
func roomIDParam(r *http.Request) (string, error) {
	id, err := pathParam(r, "roomId")
	if err != nil {
		return "", err
	}
	if _, err := spec.NewRoomID(id); err != nil {
		return "", httputil.InvalidParam("Invalid room ID %q", id)
	}
	return id, nil
}

// eventTypeParam returns the {eventType} path parameter, which must be a
// non-empty string.
func eventTypeParam(r *http.Request) (string, error) {
	t, err := pathParam(r, "eventType")
	if err != nil {
		return "", err
	}
	if t == "" || !utf8.ValidString(t) || len(t) > 255 {
		return "", httputil.InvalidParam("Invalid event type")
	}
	return t, nil
}

// validUserID checks a user ID from a request body, accepting historical
// localparts as other servers may still have them.
func validUserID(userID string) error {
	if _, _, err := userapi.ParseUserID(userID); err != nil {
		return httputil.InvalidParam("Invalid user ID %q", userID)
	}
	return nil
}

// parseAlias checks a room alias against the grammar (appendices §"Room
// Aliases"): '#', a localpart without ':' or control characters, ':', a
// valid server name, at most 255 bytes. It returns the server name.
func parseAlias(alias string) (serverName string, err error) {
	bad := func() (string, error) { return "", httputil.InvalidParam("Invalid room alias %q", alias) }
	if len(alias) > maxAliasLength || !utf8.ValidString(alias) {
		return bad()
	}
	rest, ok := strings.CutPrefix(alias, "#")
	if !ok {
		return bad()
	}
	local, server, ok := strings.Cut(rest, ":")
	if !ok || !validAliasLocalpart(local) || config.ValidateServerName(server) != nil {
		return bad()
	}
	return server, nil
}

func validAliasLocalpart(local string) bool {
	if local == "" {
		return false
	}
	for _, c := range local {
		if c == ':' || c == '#' || unicode.IsControl(c) || unicode.IsSpace(c) {
			return false
		}
	}
	return true
}

// resolveRoom turns a room ID or a room alias of this server into a room
// ID known here. Rooms and aliases of other servers need federation, which
// the client API does not do yet, so they are answered as not found.
func (s *Server) resolveRoom(ctx context.Context, idOrAlias string) (string, error) {
	if strings.HasPrefix(idOrAlias, "#") {
		server, err := parseAlias(idOrAlias)
		if err != nil {
			return "", err
		}
		if server != s.cfg.ServerName {
			return "", httputil.NotFound("Room alias %s belongs to another server; joining over federation is not supported yet", idOrAlias)
		}
		roomID, err := s.rooms.GetRoomIDForAlias(ctx, idOrAlias)
		if errors.Is(err, rsapi.ErrAliasNotFound) {
			return "", httputil.NotFound("Room alias %s not found", idOrAlias)
		}
		if err != nil {
			return "", err
		}
		return roomID, nil
	}
	if _, err := spec.NewRoomID(idOrAlias); err != nil {
		return "", httputil.InvalidParam("Invalid room ID or alias %q", idOrAlias)
	}
	if _, err := s.rooms.QueryRoomInfo(ctx, idOrAlias); err != nil {
		if errors.Is(err, rsapi.ErrRoomNotFound) {
			return "", httputil.NotFound("Room %s is not known on this server; joining over federation is not supported yet", idOrAlias)
		}
		return "", err
	}
	return idOrAlias, nil
}

// send stores one event from the caller's template.
func (s *Server) send(ctx context.Context, roomID string, ev rsapi.EventTemplate, txn *rsapi.TransactionID, unknownRoom *httputil.Error) (string, error) {
	res, err := s.rooms.SendEvent(ctx, &rsapi.SendEventRequest{RoomID: roomID, Event: ev, TransactionID: txn})
	if err != nil {
		return "", roomError(err, unknownRoom)
	}
	return res.EventID, nil
}

// stateKey returns a pointer to k, for state event templates.
func stateKey(k string) *string { return &k }

// mustJSON marshals values built here from known-good types.
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// jsonObject checks that body is a JSON object (an empty body counts as
// {}) and returns it.
func jsonObject(body []byte) (json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := httputil.UnmarshalJSONObject(body, &obj); err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return json.RawMessage("{}"), nil
	}
	return body, nil
}

// memberContent builds m.room.member content for userID. For joins of
// local users it carries their profile (client-server spec §"m.room.member":
// displayname and avatar_url are taken from the profile on join); a missing
// profile is not an error.
func (s *Server) memberContent(ctx context.Context, userID, membership, reason string) (json.RawMessage, error) {
	c := map[string]any{"membership": membership}
	if reason != "" {
		c["reason"] = reason
	}
	if membership == visibility.Join || membership == visibility.Invite || membership == visibility.Knock {
		if err := s.addProfile(ctx, userID, c); err != nil {
			return nil, err
		}
	}
	return mustJSON(c), nil
}

func (s *Server) addProfile(ctx context.Context, userID string, c map[string]any) error {
	if _, err := userapi.LocalUserID(userID, s.cfg.ServerName); err != nil {
		return nil
	}
	p, err := s.users.GetProfile(ctx, userID)
	if errors.Is(err, userapi.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if p.DisplayName != "" {
		c["displayname"] = p.DisplayName
	}
	if p.AvatarURL != "" {
		c["avatar_url"] = p.AvatarURL
	}
	return nil
}

// newRoomID returns a fresh room ID on this server (appendices §"Room
// IDs": an opaque localpart; 18 random letters give 100+ bits).
func (s *Server) newRoomID() string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "!" + string(b) + ":" + s.cfg.ServerName
}

// currentStateContent returns the content of one current state event, or
// nil if the room has no such state.
func (s *Server) currentStateContent(ctx context.Context, roomID, evType, key string) ([]byte, error) {
	evs, err := s.rooms.QueryCurrentState(ctx, roomID, []gomatrixserverlib.StateKeyTuple{{EventType: evType, StateKey: key}})
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		if ev.Type() == evType && ev.StateKeyEquals(key) {
			return ev.Content(), nil
		}
	}
	return nil, nil
}
