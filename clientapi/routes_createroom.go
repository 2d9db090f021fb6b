package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Room creation" (POST /createRoom).

const (
	presetPrivateChat        = "private_chat"
	presetTrustedPrivateChat = "trusted_private_chat"
	presetPublicChat         = "public_chat"
)

type createRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             *string                    `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	Invite3PID                []json.RawMessage          `json:"invite_3pid"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []initialStateEvent        `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
}

type initialStateEvent struct {
	Type     *string         `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

type createRoomResponse struct {
	RoomID    string `json:"room_id"`
	RoomAlias string `json:"room_alias,omitempty"`
}

func (s *Server) handleCreateRoom(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	creator := httputil.CallerFrom(ctx).UserID
	var req createRoomRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	plan, err := s.planRoom(&req, creator)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if plan.alias != "" {
		_, err := s.rooms.GetRoomIDForAlias(ctx, plan.alias)
		switch {
		case err == nil:
			httputil.WriteError(w, r, errAliasTakenOnCreate(plan.alias))
			return
		case !errors.Is(err, rsapi.ErrAliasNotFound):
			httputil.WriteError(w, r, err)
			return
		}
	}
	joinContent, err := s.memberContent(ctx, creator, visibility.Join, "")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	roomID := s.newRoomID()
	events := plan.events(creator, joinContent)
	_, err = s.rooms.CreateRoom(ctx, &rsapi.CreateRoomRequest{RoomID: roomID, RoomVersion: plan.version, Events: events})
	if err != nil {
		httputil.WriteError(w, r, createRoomError(err))
		return
	}
	// Spec: visibility "public" also publishes the room in the directory.
	if req.Visibility == directoryPublic {
		if err := s.rooms.SetRoomPublished(ctx, roomID, true); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	resp := createRoomResponse{RoomID: roomID}
	if plan.alias != "" {
		// The alias was free a moment ago; if another request took it in
		// between, the room exists but the alias is not ours.
		if err := s.rooms.SetRoomAlias(ctx, plan.alias, roomID, creator); err != nil {
			if errors.Is(err, rsapi.ErrAliasInUse) {
				err = errAliasTakenOnCreate(plan.alias)
			}
			httputil.WriteError(w, r, err)
			return
		}
		resp.RoomAlias = plan.alias
	}
	s.inviteRemoteAtCreate(ctx, roomID, creator, plan)
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// errAliasTakenOnCreate is createRoom's answer for a taken alias: 400
// M_ROOM_IN_USE per the endpoint's spec.
func errAliasTakenOnCreate(alias string) *httputil.Error {
	return httputil.NewError(http.StatusBadRequest, "M_ROOM_IN_USE", "Room alias %s is already in use", alias)
}

// createRoomError maps CreateRoom's failures: an event the auth rules
// refuse means the requested initial state is inconsistent (400
// M_INVALID_ROOM_STATE, e.g. a power level override that leaves the creator
// unable to send the later events).
func createRoomError(err error) error {
	var notAllowed *rsapi.NotAllowedError
	if errors.As(err, &notAllowed) {
		return httputil.NewError(http.StatusBadRequest, "M_INVALID_ROOM_STATE", "The requested initial state is not allowed: %s", notAllowed.Reason)
	}
	return roomError(err, errUnknownRoom())
}

// roomPlan is a validated createRoom request.
type roomPlan struct {
	req      *createRoomRequest
	version  gomatrixserverlib.RoomVersion
	preset   string
	alias    string
	invitees []string
	// remoteInvitees (also in invitees) are invited through their servers
	// once the room exists.
	remoteInvitees []string
	// initial holds initial_state in order, without entries that name or
	// topic replace.
	initial []rsapi.EventTemplate
}

// planRoom validates the request; every client mistake is found here,
// before anything is stored.
func (s *Server) planRoom(req *createRoomRequest, creator string) (*roomPlan, error) {
	p := &roomPlan{req: req}
	switch req.Visibility {
	case "", "private", "public":
	default:
		return nil, httputil.InvalidParam("visibility must be \"public\" or \"private\"")
	}
	p.preset = req.Preset
	switch req.Preset {
	case presetPrivateChat, presetTrustedPrivateChat, presetPublicChat:
	case "":
		// Spec: without a preset, public visibility means public_chat and
		// anything else private_chat.
		p.preset = presetPrivateChat
		if req.Visibility == "public" {
			p.preset = presetPublicChat
		}
	default:
		return nil, httputil.InvalidParam("Unknown preset %q", req.Preset)
	}

	p.version = gomatrixserverlib.RoomVersion(s.cfg.Rooms.DefaultVersion)
	if req.RoomVersion != "" {
		p.version = gomatrixserverlib.RoomVersion(req.RoomVersion)
		if !gomatrixserverlib.StableRoomVersion(p.version) {
			return nil, httputil.NewError(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "Room version %q is not supported by this server", req.RoomVersion)
		}
	}

	if req.RoomAliasName != nil {
		p.alias = "#" + *req.RoomAliasName + ":" + s.cfg.ServerName
		if _, err := parseAlias(p.alias); err != nil {
			return nil, httputil.InvalidParam("room_alias_name %q does not make a valid room alias", *req.RoomAliasName)
		}
	}

	if len(req.Invite3PID) > 0 {
		return nil, httputil.InvalidParam("invite_3pid is not supported: this server has no identity server integration")
	}
	seen := map[string]bool{creator: true}
	for _, u := range req.Invite {
		remote, err := s.isRemoteInvitee(u)
		if err != nil {
			return nil, err
		}
		if !seen[u] {
			seen[u] = true
			p.invitees = append(p.invitees, u)
			if remote {
				p.remoteInvitees = append(p.remoteInvitees, u)
			}
		}
	}

	for key, raw := range req.CreationContent {
		if err := checkCreationKey(key, raw); err != nil {
			return nil, err
		}
	}

	for i, ev := range req.InitialState {
		if ev.Type == nil || *ev.Type == "" {
			return nil, httputil.BadJSON("initial_state[%d]: type is required", i)
		}
		if !isJSONObject(ev.Content) {
			return nil, httputil.BadJSON("initial_state[%d]: content must be a JSON object", i)
		}
		if *ev.Type == spec.MRoomCreate {
			return nil, httputil.InvalidParam("initial_state[%d]: m.room.create cannot be set; use creation_content", i)
		}
		if ev.StateKey == "" && (*ev.Type == spec.MRoomName && req.Name != nil || *ev.Type == spec.MRoomTopic && req.Topic != nil) {
			continue
		}
		p.initial = append(p.initial, rsapi.EventTemplate{Type: *ev.Type, StateKey: stateKey(ev.StateKey), Content: ev.Content})
	}
	return p, nil
}

// isRemoteInvitee checks an invitee's user ID and says whether the user is
// on another server (refused with federation off, as checkInvitable does).
func (s *Server) isRemoteInvitee(userID string) (bool, error) {
	_, server, err := userapi.ParseUserID(userID)
	if err != nil {
		return false, httputil.InvalidParam("Invalid user ID %q", userID)
	}
	if server == s.cfg.ServerName {
		return false, nil
	}
	if s.federation == nil {
		return false, s.checkInvitable(userID)
	}
	return true, nil
}

// inviteRemoteAtCreate invites the remote invitees of a new room through
// their servers (server-server spec §"Inviting to a room"), as /invite
// does. The room exists by now, so a refused or unreachable invitee does
// not fail createRoom (a retrying client would make a second room); it is
// logged, and the creator can invite again.
func (s *Server) inviteRemoteAtCreate(ctx context.Context, roomID, creator string, plan *roomPlan) {
	for _, u := range plan.remoteInvitees {
		c := map[string]any{"membership": visibility.Invite}
		if plan.req.IsDirect {
			c["is_direct"] = true
		}
		if err := s.federation.PerformInvite(ctx, roomID, creator, u, mustJSON(c)); err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"room_id": roomID, "invitee": u}).Warn("createRoom: remote invite failed")
		}
	}
}

// checkInvitable refuses invitees on other servers: an invite to a remote
// user has to go through that user's server (server-server spec §"Inviting
// to a room"), which needs federation.
func (s *Server) checkInvitable(userID string) error {
	_, server, err := userapi.ParseUserID(userID)
	if err != nil {
		return httputil.InvalidParam("Invalid user ID %q", userID)
	}
	if server != s.cfg.ServerName {
		return httputil.InvalidParam("Inviting users of other servers (%s) is not supported yet: federation is not available", userID)
	}
	return nil
}

// checkCreationKey checks the types of the creation_content keys the spec
// defines; other keys pass through unchanged.
func checkCreationKey(key string, raw json.RawMessage) error {
	var ok bool
	switch key {
	case "m.federate":
		var b bool
		ok = json.Unmarshal(raw, &b) == nil
	case "type":
		var t string
		ok = json.Unmarshal(raw, &t) == nil
	case "predecessor":
		ok = isJSONObject(raw)
	default:
		return nil
	}
	if !ok {
		return httputil.BadJSON("creation_content.%s has the wrong type", key)
	}
	return nil
}

func isJSONObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return false
	}
	var obj map[string]json.RawMessage
	return json.Unmarshal(t, &obj) == nil
}

// events lists the room's initial events in the order the spec's createRoom
// section gives: create, the creator's join, power levels, canonical alias,
// the preset's rules, initial_state, name and topic, invites.
func (p *roomPlan) events(creator string, joinContent json.RawMessage) []rsapi.EventTemplate {
	state := func(evType, key string, content any) rsapi.EventTemplate {
		return rsapi.EventTemplate{Sender: creator, Type: evType, StateKey: stateKey(key), Content: mustJSON(content)}
	}
	overridden := map[gomatrixserverlib.StateKeyTuple]bool{}
	for _, ev := range p.initial {
		overridden[gomatrixserverlib.StateKeyTuple{EventType: ev.Type, StateKey: *ev.StateKey}] = true
	}

	evs := []rsapi.EventTemplate{
		state(spec.MRoomCreate, "", p.createContent(creator)),
		{Sender: creator, Type: spec.MRoomMember, StateKey: stateKey(creator), Content: joinContent},
		state(spec.MRoomPowerLevels, "", p.powerLevels(creator)),
	}
	if p.alias != "" {
		evs = append(evs, state(spec.MRoomCanonicalAlias, "", map[string]any{"alias": p.alias}))
	}

	joinRule, guestAccess := spec.Invite, "can_join"
	if p.preset == presetPublicChat {
		joinRule, guestAccess = spec.Public, "forbidden"
	}
	for _, ev := range []rsapi.EventTemplate{
		state(spec.MRoomJoinRules, "", map[string]any{"join_rule": joinRule}),
		state(spec.MRoomHistoryVisibility, "", map[string]any{"history_visibility": gomatrixserverlib.HistoryVisibilityShared}),
		state("m.room.guest_access", "", map[string]any{"guest_access": guestAccess}),
	} {
		if !overridden[gomatrixserverlib.StateKeyTuple{EventType: ev.Type, StateKey: ""}] {
			evs = append(evs, ev)
		}
	}

	for _, ev := range p.initial {
		ev.Sender = creator
		evs = append(evs, ev)
	}
	if p.req.Name != nil {
		evs = append(evs, state(spec.MRoomName, "", map[string]any{"name": *p.req.Name}))
	}
	if p.req.Topic != nil {
		evs = append(evs, state(spec.MRoomTopic, "", map[string]any{"topic": *p.req.Topic}))
	}
	for _, u := range p.invitees {
		if slices.Contains(p.remoteInvitees, u) {
			continue
		}
		c := map[string]any{"membership": visibility.Invite}
		if p.req.IsDirect {
			c["is_direct"] = true
		}
		evs = append(evs, state(spec.MRoomMember, u, c))
	}
	return evs
}

// createContent is creation_content with the keys the server owns set:
// room_version, and creator in room versions before 11 (v11 dropped it and
// takes the creator from the event's sender).
func (p *roomPlan) createContent(creator string) map[string]json.RawMessage {
	c := make(map[string]json.RawMessage, len(p.req.CreationContent)+2)
	for k, v := range p.req.CreationContent {
		c[k] = v
	}
	c["room_version"] = mustJSON(p.version)
	delete(c, "creator")
	if !versionAtLeast11(p.version) {
		c["creator"] = mustJSON(creator)
	}
	return c
}

// versionAtLeast11 says whether a stable room version follows the v11
// event format (no creator in m.room.create).
func versionAtLeast11(v gomatrixserverlib.RoomVersion) bool {
	switch v {
	case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
		gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
		gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
		gomatrixserverlib.RoomVersionV10:
		return false
	}
	return true
}

// powerLevels is the default m.room.power_levels content with
// power_level_content_override applied on top, key by key.
//
// The defaults give the creator 100 and everyone else 0; state needs 50,
// and the events that change who controls the room (power levels, history
// visibility, tombstone, server ACLs, encryption) need 100. In private
// presets any member may invite, as in the spec's default for a missing
// "invite" key; in public rooms, where anyone may join, inviting needs 50.
// trusted_private_chat gives every invitee the creator's level.
func (p *roomPlan) powerLevels(creator string) map[string]json.RawMessage {
	users := map[string]int{creator: 100}
	if p.preset == presetTrustedPrivateChat {
		for _, u := range p.invitees {
			users[u] = 100
		}
	}
	invite := 0
	if p.preset == presetPublicChat {
		invite = 50
	}
	pl := map[string]json.RawMessage{
		"users":         mustJSON(users),
		"users_default": mustJSON(0),
		"events": mustJSON(map[string]int{
			spec.MRoomName:              50,
			spec.MRoomPowerLevels:       100,
			spec.MRoomHistoryVisibility: 100,
			spec.MRoomCanonicalAlias:    50,
			"m.room.avatar":             50,
			"m.room.tombstone":          100,
			"m.room.server_acl":         100,
			"m.room.encryption":         100,
		}),
		"events_default": mustJSON(0),
		"state_default":  mustJSON(50),
		"ban":            mustJSON(50),
		"kick":           mustJSON(50),
		"redact":         mustJSON(50),
		"invite":         mustJSON(invite),
		"notifications":  mustJSON(map[string]int{"room": 50}),
	}
	for k, v := range p.req.PowerLevelContentOverride {
		pl[k] = v
	}
	return pl
}
