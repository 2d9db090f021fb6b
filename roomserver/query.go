package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

// CreateRoom implements api.RoomserverAPI.
func (s *Service) CreateRoom(ctx context.Context, req *api.CreateRoomRequest) (*api.CreateRoomResponse, error) {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return nil, &api.BadEventError{Reason: fmt.Sprintf("invalid room ID %q", req.RoomID)}
	}
	if len(req.Events) == 0 || req.Events[0].Type != spec.MRoomCreate {
		return nil, &api.BadEventError{Reason: "a room starts with its m.room.create event"}
	}
	t := &task{kind: taskCreate, create: req}
	if err := s.submit(ctx, req.RoomID, t); err != nil {
		return nil, err
	}
	return &api.CreateRoomResponse{EventIDs: t.eventIDs}, nil
}

// SendEvent implements api.RoomserverAPI.
func (s *Service) SendEvent(ctx context.Context, req *api.SendEventRequest) (*api.SendEventResponse, error) {
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return nil, api.ErrRoomNotFound
	}
	t := &task{kind: taskSend, send: req}
	if err := s.submit(ctx, req.RoomID, t); err != nil {
		return nil, err
	}
	return &api.SendEventResponse{EventID: t.eventIDs[0]}, nil
}

// InputFederationEvents implements api.FederationRoomserverAPI.
func (s *Service) InputFederationEvents(ctx context.Context, req *api.InputFederationEventsRequest) (*api.InputFederationEventsResponse, error) {
	if len(req.Events) == 0 && len(req.Outliers) == 0 {
		return &api.InputFederationEventsResponse{}, nil
	}
	t := &task{kind: taskInput, events: req.Events, outliers: req.Outliers, stateBefore: req.StateBefore}
	if err := s.submit(ctx, req.RoomID, t); err != nil {
		return nil, err
	}
	return &api.InputFederationEventsResponse{Results: t.results}, nil
}

// pickCurrentState returns a room and the event NIDs pick chooses from
// its current state map: the actor's cached map when the room has one,
// else the map of the room's current snapshot.
func (s *Service) pickCurrentState(ctx context.Context, roomID string, pick func(stateMap) []int64) (*storage.Room, gomatrixserverlib.IRoomVersion, []int64, error) {
	sh := s.shardFor(roomID)
	sh.mu.Lock()
	a := sh.rooms[roomID]
	sh.mu.Unlock()
	if a != nil {
		a.stateMu.RLock()
		if rs := a.state; rs != nil {
			room, verImpl, nids := rs.room, rs.verImpl, pick(rs.current)
			a.stateMu.RUnlock()
			return &room, verImpl, nids, nil
		}
		a.stateMu.RUnlock()
	}
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, nil, nil, err
	}
	state, _, err := loadSnapshot(ctx, s.db, s.db.DB, room.NID, room.Snapshot)
	if err != nil {
		return nil, nil, nil, err
	}
	return room, verImpl, pick(state), nil
}

// reader gives queries the event loaders of a room, outside any batch.
func (s *Service) reader(room *storage.Room, verImpl gomatrixserverlib.IRoomVersion) *batch {
	return &batch{s: s, q: s.db.DB, rs: &roomState{room: *room, verImpl: verImpl}, room: *room}
}

// roomWithState returns a room and the event NIDs of the given keys of
// its current state (all of it with no keys), from the room's cached
// state when its actor has one.
func (s *Service) roomWithState(ctx context.Context, roomID string, tuples []tuple) (*storage.Room, gomatrixserverlib.IRoomVersion, []int64, error) {
	pick := func(state stateMap) []int64 {
		var nids []int64
		if len(tuples) == 0 {
			for _, n := range state {
				nids = append(nids, n)
			}
			return nids
		}
		for _, t := range tuples {
			if n, ok := state[t]; ok {
				nids = append(nids, n)
			}
		}
		return nids
	}
	return s.pickCurrentState(ctx, roomID, pick)
}

func (s *Service) room(ctx context.Context, roomID string) (*storage.Room, gomatrixserverlib.IRoomVersion, error) {
	room, err := s.db.SelectRoom(ctx, s.db.DB, roomID)
	if err != nil {
		return nil, nil, err
	}
	if room == nil {
		return nil, nil, api.ErrRoomNotFound
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, nil, err
	}
	return room, verImpl, nil
}

func (s *Service) pdusByNID(ctx context.Context, room *storage.Room, verImpl gomatrixserverlib.IRoomVersion, nids []int64) ([]gomatrixserverlib.PDU, error) {
	evs, err := s.reader(room, verImpl).eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.PDU, 0, len(nids))
	for _, n := range nids {
		if e := evs[n]; e != nil {
			out = append(out, e.pdu)
		}
	}
	return out, nil
}

// QueryRoomInfo implements api.RoomserverAPI.
func (s *Service) QueryRoomInfo(ctx context.Context, roomID string) (*api.RoomInfo, error) {
	room, _, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return &api.RoomInfo{RoomID: room.RoomID, RoomVersion: gomatrixserverlib.RoomVersion(room.Version), Stub: len(room.Extremities) == 0}, nil
}

// QueryCurrentState implements api.RoomserverAPI.
func (s *Service) QueryCurrentState(ctx context.Context, roomID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, nids, err := s.roomWithState(ctx, roomID, tuples)
	if err != nil {
		return nil, err
	}
	return s.pdusByNID(ctx, room, verImpl, nids)
}

// QueryStateAfterEvent implements api.RoomserverAPI.
func (s *Service) QueryStateAfterEvent(ctx context.Context, roomID, eventID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.SelectEventsByID(ctx, s.db.DB, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || rows[0].RoomNID != room.NID || rows[0].Rejected {
		return nil, api.ErrEventNotFound
	}
	state, _, err := loadSnapshot(ctx, s.db, s.db.DB, room.NID, rows[0].StateAfter)
	if err != nil {
		return nil, err
	}
	var nids []int64
	if len(tuples) == 0 {
		for _, n := range state {
			nids = append(nids, n)
		}
	} else {
		for _, t := range tuples {
			if n, ok := state[t]; ok {
				nids = append(nids, n)
			}
		}
	}
	return s.pdusByNID(ctx, room, verImpl, nids)
}

// QueryEventsByID implements api.RoomserverAPI. Rejected events are left
// out; redacted ones are returned in their redacted form, as stored.
func (s *Service) QueryEventsByID(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error) {
	rows, err := s.db.SelectEventsByID(ctx, s.db.DB, eventIDs)
	if err != nil {
		return nil, err
	}
	var roomNIDs []int64
	for _, r := range rows {
		roomNIDs = append(roomNIDs, r.RoomNID)
	}
	rooms, err := s.db.SelectRoomsByNID(ctx, roomNIDs)
	if err != nil {
		return nil, err
	}
	byID := map[string]gomatrixserverlib.PDU{}
	for _, r := range rows {
		room := rooms[r.RoomNID]
		if r.Rejected || room == nil {
			continue
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
		if err != nil {
			return nil, err
		}
		e, err := toMeta(r, verImpl)
		if err != nil {
			return nil, err
		}
		byID[r.EventID] = e.pdu
	}
	out := make([]gomatrixserverlib.PDU, 0, len(byID))
	for _, id := range eventIDs {
		if p, ok := byID[id]; ok {
			out = append(out, p)
			delete(byID, id)
		}
	}
	return out, nil
}

// QueryMembership implements api.RoomserverAPI.
func (s *Service) QueryMembership(ctx context.Context, roomID, userID string) (*api.Membership, error) {
	room, _, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	membership, eventID, err := s.db.SelectMembership(ctx, room.NID, userID)
	if err != nil {
		return nil, err
	}
	return &api.Membership{Membership: membership, EventID: eventID}, nil
}

// QueryRoomsForUser implements api.RoomserverAPI.
func (s *Service) QueryRoomsForUser(ctx context.Context, userID string, memberships []string) ([]string, error) {
	return s.db.SelectRoomsForUser(ctx, userID, memberships)
}

// SetRoomAlias implements api.RoomserverAPI.
func (s *Service) SetRoomAlias(ctx context.Context, alias, roomID, creatorUserID string) error {
	if _, _, err := s.room(ctx, roomID); err != nil {
		return err
	}
	err := s.db.InsertAlias(ctx, alias, roomID, creatorUserID)
	if errors.Is(err, storage.ErrAliasExists) {
		return api.ErrAliasInUse
	}
	return err
}

// GetRoomIDForAlias implements api.RoomserverAPI.
func (s *Service) GetRoomIDForAlias(ctx context.Context, alias string) (string, error) {
	roomID, _, found, err := s.db.SelectAlias(ctx, alias)
	if err != nil {
		return "", err
	}
	if !found {
		return "", api.ErrAliasNotFound
	}
	return roomID, nil
}

// RemoveRoomAlias implements api.RoomserverAPI. Client-server spec
// §"Room aliases": the alias's creator may remove it, and so may a member
// of the room with the power to send m.room.canonical_alias.
func (s *Service) RemoveRoomAlias(ctx context.Context, alias, requesterUserID string) error {
	roomID, creator, found, err := s.db.SelectAlias(ctx, alias)
	if err != nil {
		return err
	}
	if !found {
		return api.ErrAliasNotFound
	}
	if creator != requesterUserID {
		allowed, err := s.canSendState(ctx, roomID, requesterUserID, spec.MRoomCanonicalAlias)
		if err != nil && !errors.Is(err, api.ErrRoomNotFound) {
			return err
		}
		if !allowed {
			return &api.NotAllowedError{Reason: "only the alias's creator or a room moderator may remove it"}
		}
	}
	removed, err := s.db.DeleteAlias(ctx, alias)
	if err != nil {
		return err
	}
	if !removed {
		return api.ErrAliasNotFound
	}
	return nil
}

// canSendState says whether userID is joined to the room with the power
// level to send state events of eventType.
func (s *Service) canSendState(ctx context.Context, roomID, userID, eventType string) (bool, error) {
	tuples := []tuple{
		{EventType: spec.MRoomCreate},
		{EventType: spec.MRoomPowerLevels},
		{EventType: spec.MRoomMember, StateKey: userID},
	}
	evs, err := s.QueryCurrentState(ctx, roomID, tuples)
	if err != nil {
		return false, err
	}
	authEvents := gomatrixserverlib.NewAuthEvents(evs)
	member, _ := authEvents.Member(spec.SenderID(userID))
	if member == nil {
		return false, nil
	}
	var content struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(member.Content(), &content) != nil || content.Membership != spec.Join {
		return false, nil
	}
	create, _ := authEvents.Create()
	creator := ""
	if create != nil {
		creator = string(create.SenderID())
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(&authEvents, creator)
	if err != nil {
		return false, nil
	}
	return pl.UserLevel(spec.SenderID(userID)) >= pl.EventLevel(eventType, true), nil
}

// GetAliasesForRoom implements api.RoomserverAPI.
func (s *Service) GetAliasesForRoom(ctx context.Context, roomID string) ([]string, error) {
	return s.db.SelectAliasesForRoom(ctx, roomID)
}
