package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Profiles".

// Profile field limits, so a profile cannot bloat every membership event
// of the user.
const (
	maxDisplayNameLength = 256
	maxAvatarURLLength   = 1000
)

// profileUser returns the {userId} of a profile route after checking its
// grammar.
func profileUser(r *http.Request) (string, error) {
	userID, err := pathParam(r, "userId")
	if err != nil {
		return "", err
	}
	if _, _, err := userapi.ParseUserID(userID); err != nil {
		return "", httputil.InvalidParam("Invalid user ID %q", userID)
	}
	return userID, nil
}

func (s *Server) lookupProfile(r *http.Request) (*userapi.Profile, error) {
	userID, err := profileUser(r)
	if err != nil {
		return nil, err
	}
	p, err := s.users.GetProfile(r.Context(), userID)
	if errors.Is(err, userapi.ErrNotFound) {
		// Remote profiles would need a federation query, which this
		// server does not make yet; they are reported as unknown.
		return nil, httputil.NotFound("Profile not found")
	}
	return p, err
}

// profileBody leaves out unset fields, which clients read as "no name"
// or "no avatar".
func profileBody(p *userapi.Profile, displayName, avatar bool) map[string]string {
	body := map[string]string{}
	if displayName && p.DisplayName != "" {
		body["displayname"] = p.DisplayName
	}
	if avatar && p.AvatarURL != "" {
		body["avatar_url"] = p.AvatarURL
	}
	return body
}

// handleGetProfile is GET /profile/{userId}. It needs no access token.
func (s *Server) handleGetProfile(w http.ResponseWriter, r *http.Request) {
	p, err := s.lookupProfile(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, profileBody(p, true, true))
}

// handleGetDisplayName is GET /profile/{userId}/displayname. A known user
// without a name gets {} (as Synapse answers, and clients expect) rather
// than a 404 that would look like an unknown user.
func (s *Server) handleGetDisplayName(w http.ResponseWriter, r *http.Request) {
	p, err := s.lookupProfile(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, profileBody(p, true, false))
}

// handleGetAvatarURL is GET /profile/{userId}/avatar_url.
func (s *Server) handleGetAvatarURL(w http.ResponseWriter, r *http.Request) {
	p, err := s.lookupProfile(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, profileBody(p, false, true))
}

// handleSetDisplayName is PUT /profile/{userId}/displayname.
func (s *Server) handleSetDisplayName(w http.ResponseWriter, r *http.Request) {
	s.setProfileField(w, r, "displayname", maxDisplayNameLength)
}

// handleSetAvatarURL is PUT /profile/{userId}/avatar_url.
func (s *Server) handleSetAvatarURL(w http.ResponseWriter, r *http.Request) {
	s.setProfileField(w, r, "avatar_url", maxAvatarURLLength)
}

func (s *Server) setProfileField(w http.ResponseWriter, r *http.Request, field string, maxLen int) {
	c := httputil.CallerFrom(r.Context())
	userID, err := profileUser(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body map[string]json.RawMessage
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if userID != c.UserID {
		httputil.WriteError(w, r, httputil.Forbidden("You cannot change another user's profile"))
		return
	}
	raw, present := body[field]
	if !present {
		httputil.WriteError(w, r, httputil.MissingParam("Missing %s", field))
		return
	}
	// null removes the field, like the empty string.
	var v *string
	if err := json.Unmarshal(raw, &v); err != nil {
		httputil.WriteError(w, r, httputil.BadJSON("%s must be a string", field))
		return
	}
	value := ""
	if v != nil {
		value = *v
	}
	if len([]rune(value)) > maxLen {
		httputil.WriteError(w, r, httputil.InvalidParam("%s is longer than %d characters", field, maxLen))
		return
	}
	if field == "displayname" {
		err = s.users.SetDisplayName(r.Context(), userID, value)
	} else {
		err = s.users.SetAvatarURL(r.Context(), userID, value)
	}
	if errors.Is(err, userapi.ErrNotFound) {
		err = httputil.NotFound("Profile not found")
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.propagateProfile(r.Context(), userID, field, value)
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// propagateProfile updates the user's membership event in every joined
// room, as client-server spec §"Events on change of profile information"
// asks. The profile change is already committed; a room that refuses the
// update (for example because the user may no longer send there) must
// not turn it into an error, so failures are logged.
func (s *Server) propagateProfile(ctx context.Context, userID, field, value string) {
	if s.rooms == nil {
		return
	}
	log := logrus.WithField("user_id", userID)
	roomIDs, err := s.rooms.QueryRoomsForUser(ctx, userID, []string{"join"})
	if err != nil {
		log.WithError(err).Warn("profile change: list joined rooms")
		return
	}
	stateKey := userID
	for _, roomID := range roomIDs {
		evs, err := s.rooms.QueryCurrentState(ctx, roomID, []gomatrixserverlib.StateKeyTuple{{EventType: "m.room.member", StateKey: userID}})
		if err != nil || len(evs) == 0 {
			log.WithError(err).WithField("room_id", roomID).Warn("profile change: read membership")
			continue
		}
		var content map[string]any
		if err := json.Unmarshal(evs[0].Content(), &content); err != nil || content["membership"] != "join" {
			continue
		}
		if value == "" {
			delete(content, field)
		} else {
			content[field] = value
		}
		raw, err := json.Marshal(content)
		if err != nil {
			continue
		}
		_, err = s.rooms.SendEvent(ctx, &rsapi.SendEventRequest{RoomID: roomID, Event: rsapi.EventTemplate{
			Sender: userID, Type: "m.room.member", StateKey: &stateKey, Content: raw,
		}})
		if err != nil {
			log.WithError(err).WithField("room_id", roomID).Warn("profile change: send membership")
		}
	}
}
