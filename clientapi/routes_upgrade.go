package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Room upgrades" (POST /rooms/{roomId}/upgrade).

const (
	typeTombstone  = "m.room.tombstone"
	typeSpaceChild = "m.space.child"
	roomTypeSpace  = "m.space"
)

// upgradeCopiedState are the state events (state key "") replicated into
// the new room: the spec's recommended list, and the canonical alias,
// whose aliases move with the room.
var upgradeCopiedState = []string{
	spec.MRoomJoinRules,
	spec.MRoomHistoryVisibility,
	"m.room.guest_access",
	spec.MRoomName,
	spec.MRoomTopic,
	"m.room.avatar",
	"m.room.encryption",
	"m.room.server_acl",
	spec.MRoomCanonicalAlias,
}

// POST /rooms/{roomId}/upgrade
func (s *Server) handleUpgradeRoom(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body struct {
		NewVersion *string `json:"new_version"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body.NewVersion == nil {
		httputil.WriteError(w, r, httputil.MissingParam("new_version is required"))
		return
	}
	version := gomatrixserverlib.RoomVersion(*body.NewVersion)
	if !gomatrixserverlib.StableRoomVersion(version) {
		httputil.WriteError(w, r, httputil.NewError(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "Room version %q is not supported by this server", *body.NewVersion))
		return
	}
	newRoomID, err := s.upgradeRoom(r.Context(), roomID, version)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"replacement_room": newRoomID})
}

// upgradeRoom follows the spec's server behaviour. One deviation in order:
// the tombstone is sent before the new room is created, so that the new
// room's predecessor names the old room's last event (the tombstone)
// exactly; the new room's ID is chosen beforehand and everything that
// could be refused is checked before the tombstone is sent.
func (s *Server) upgradeRoom(ctx context.Context, oldRoomID string, version gomatrixserverlib.RoomVersion) (string, error) {
	caller := httputil.CallerFrom(ctx).UserID
	p, err := s.powerOf(ctx, oldRoomID, caller)
	if err != nil {
		return "", roomError(err, errUnknownRoom())
	}
	if p.create == nil {
		return "", errUnknownRoom()
	}
	if !p.canSendState(typeTombstone) {
		return "", httputil.Forbidden("You need the power to send %s events to upgrade this room", typeTombstone)
	}

	tuples := make([]gomatrixserverlib.StateKeyTuple, len(upgradeCopiedState))
	for i, t := range upgradeCopiedState {
		tuples[i] = gomatrixserverlib.StateKeyTuple{EventType: t}
	}
	oldState, err := s.rooms.QueryCurrentState(ctx, oldRoomID, tuples)
	if err != nil {
		return "", roomError(err, errUnknownRoom())
	}
	byType := map[string]gomatrixserverlib.PDU{}
	for _, ev := range oldState {
		if ev.StateKeyEquals("") {
			byType[ev.Type()] = ev
		}
	}
	var oldCreate map[string]json.RawMessage
	if err := json.Unmarshal(p.create.Content(), &oldCreate); err != nil {
		return "", err
	}
	var roomType string
	_ = json.Unmarshal(oldCreate["type"], &roomType)
	var children []gomatrixserverlib.PDU
	if roomType == roomTypeSpace {
		// A space's children are what makes it a space; carry them over.
		if children, err = s.rooms.QueryCurrentStateOfType(ctx, oldRoomID, typeSpaceChild); err != nil {
			return "", err
		}
	}
	joinContent, err := s.memberContent(ctx, caller, visibility.Join, "")
	if err != nil {
		return "", err
	}

	// The new room's state, in order: whatever the upgrader sends needs
	// their power level to be high enough for it, so the power levels are
	// first copied with the upgrader raised as needed, and the copied
	// levels themselves sent last.
	var copied []rsapi.EventTemplate
	sentTypes := []string{spec.MRoomPowerLevels}
	state := func(evType, key string, content json.RawMessage) rsapi.EventTemplate {
		return rsapi.EventTemplate{Sender: caller, Type: evType, StateKey: stateKey(key), Content: content}
	}
	for _, t := range upgradeCopiedState {
		if ev := byType[t]; ev != nil && !isEmptyContent(ev.Content()) {
			copied = append(copied, state(t, "", ev.Content()))
			sentTypes = append(sentTypes, t)
		}
	}
	for _, ev := range children {
		if ev.StateKey() != nil && !isEmptyContent(ev.Content()) {
			copied = append(copied, state(typeSpaceChild, *ev.StateKey(), ev.Content()))
			sentTypes = append(sentTypes, typeSpaceChild)
		}
	}
	finalPL, initialPL := upgradePowerLevels(p, caller, sentTypes)

	newRoomID := s.newRoomID()
	tombstoneID, err := s.send(ctx, oldRoomID, state(typeTombstone, "", mustJSON(map[string]string{
		"body":             "This room has been replaced",
		"replacement_room": newRoomID,
	})), nil, errUnknownRoom())
	if err != nil {
		return "", err
	}

	createContent := map[string]json.RawMessage{
		"room_version": mustJSON(version),
		"predecessor":  mustJSON(map[string]string{"room_id": oldRoomID, "event_id": tombstoneID}),
	}
	if !versionAtLeast11(version) {
		createContent["creator"] = mustJSON(caller)
	}
	// Spec: the type is copied from the old room; so is m.federate, as a
	// room that must not federate stays so.
	for _, k := range []string{"type", "m.federate"} {
		if v, ok := oldCreate[k]; ok {
			createContent[k] = v
		}
	}
	events := []rsapi.EventTemplate{
		state(spec.MRoomCreate, "", mustJSON(createContent)),
		{Sender: caller, Type: spec.MRoomMember, StateKey: stateKey(caller), Content: joinContent},
		state(spec.MRoomPowerLevels, "", initialPL),
	}
	events = append(events, copied...)
	if finalPL != nil {
		events = append(events, state(spec.MRoomPowerLevels, "", finalPL))
	}
	if _, err := s.rooms.CreateRoom(ctx, &rsapi.CreateRoomRequest{RoomID: newRoomID, RoomVersion: version, Events: events}); err != nil {
		return "", createRoomError(err)
	}

	if err := s.moveToReplacement(ctx, oldRoomID, newRoomID, byType[spec.MRoomCanonicalAlias] != nil); err != nil {
		return "", err
	}
	s.restrictOldRoom(ctx, oldRoomID, caller, p)
	return newRoomID, nil
}

// moveToReplacement moves the old room's local aliases and its place in
// the directory to the new room, and clears the old room's canonical alias
// (its aliases now lead elsewhere).
func (s *Server) moveToReplacement(ctx context.Context, oldRoomID, newRoomID string, hadCanonicalAlias bool) error {
	caller := httputil.CallerFrom(ctx).UserID
	if _, err := s.rooms.MoveRoomAliases(ctx, oldRoomID, newRoomID); err != nil {
		return err
	}
	if hadCanonicalAlias {
		_, err := s.send(ctx, oldRoomID, rsapi.EventTemplate{
			Sender: caller, Type: spec.MRoomCanonicalAlias, StateKey: stateKey(""), Content: json.RawMessage(`{}`),
		}, nil, errUnknownRoom())
		if err := ignoreNotAllowed(err); err != nil {
			return err
		}
	}
	published, err := s.rooms.QueryRoomPublished(ctx, oldRoomID)
	if err != nil || !published {
		return err
	}
	if err := s.rooms.SetRoomPublished(ctx, newRoomID, true); err != nil {
		return err
	}
	return s.rooms.SetRoomPublished(ctx, oldRoomID, false)
}

// restrictOldRoom raises the old room's events_default and invite levels
// to the greater of 50 and users_default+1, as the spec suggests, so that
// ordinary members stop talking there and nobody is invited. It is "if
// possible": an upgrader without the power to change power levels leaves
// them as they are.
func (s *Server) restrictOldRoom(ctx context.Context, roomID, caller string, p *roomPower) {
	restricted := max(50, p.levels.UsersDefault+1)
	content := map[string]json.RawMessage{}
	if p.powerLevels != nil {
		if err := json.Unmarshal(p.powerLevels.Content(), &content); err != nil {
			return
		}
	} else {
		_ = json.Unmarshal(mustJSON(p.levels), &content)
	}
	content["events_default"] = mustJSON(max(p.levels.EventsDefault, restricted))
	content["invite"] = mustJSON(max(p.levels.Invite, restricted))
	_, err := s.send(ctx, roomID, rsapi.EventTemplate{
		Sender: caller, Type: spec.MRoomPowerLevels, StateKey: stateKey(""), Content: mustJSON(content),
	}, nil, errUnknownRoom())
	if err := ignoreNotAllowed(err); err != nil {
		logrus.WithError(err).WithField("room_id", roomID).Warn("clientapi: restrict power levels of an upgraded room")
	}
}

// upgradePowerLevels returns the power levels content to start the new
// room with (the old room's, with the upgrader raised to the highest level
// any of sentTypes needs) and, if that differs from the old room's, the
// old room's content to send once the state is copied (else nil). Levels
// are written as integers, which room versions 10 and later require.
func upgradePowerLevels(p *roomPower, caller string, sentTypes []string) (final, initial json.RawMessage) {
	content := map[string]json.RawMessage{}
	if p.powerLevels != nil {
		_ = json.Unmarshal(p.powerLevels.Content(), &content)
	}
	lv := p.levels
	for k, v := range map[string]any{
		"ban": lv.Ban, "invite": lv.Invite, "kick": lv.Kick, "redact": lv.Redact,
		"users": lv.Users, "users_default": lv.UsersDefault, "events": lv.Events,
		"events_default": lv.EventsDefault, "state_default": lv.StateDefault, "notifications": lv.Notifications,
	} {
		content[k] = mustJSON(v)
	}
	needed := p.level
	for _, t := range sentTypes {
		needed = max(needed, lv.EventLevel(t, true))
	}
	if needed == p.level {
		return nil, mustJSON(content)
	}
	users := make(map[string]int64, len(lv.Users)+1)
	for u, l := range lv.Users {
		users[u] = l
	}
	users[caller] = needed
	raised := make(map[string]json.RawMessage, len(content))
	for k, v := range content {
		raised[k] = v
	}
	raised["users"] = mustJSON(users)
	return mustJSON(content), mustJSON(raised)
}

// isEmptyContent says whether state content is {} (for example a removed
// space child or a cleared alias), which need not be copied.
func isEmptyContent(c json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(c, &m) == nil && len(m) == 0
}

// ignoreNotAllowed drops an auth-rules refusal, for best-effort sends.
func ignoreNotAllowed(err error) error {
	var he *httputil.Error
	if errors.As(err, &he) && he.Code == "M_FORBIDDEN" {
		return nil
	}
	return err
}
