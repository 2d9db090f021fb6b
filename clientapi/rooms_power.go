package clientapi

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/visibility"
)

// roomPower is what a room's current state says about one user's standing:
// for endpoints whose permission check the spec leaves to the server or
// words as "has permission to send X" (room directory, upgrades).
type roomPower struct {
	joined  bool
	creator bool
	level   int64
	levels  gomatrixserverlib.PowerLevelContent
	// create and powerLevels are the current events (powerLevels nil if
	// the room has none).
	create      gomatrixserverlib.PDU
	powerLevels gomatrixserverlib.PDU
}

// powerOf reads userID's membership and power level in a room from its
// current state, with the spec's defaults when there is no
// m.room.power_levels (the creator has 100).
func (s *Server) powerOf(ctx context.Context, roomID, userID string) (*roomPower, error) {
	evs, err := s.rooms.QueryCurrentState(ctx, roomID, []gomatrixserverlib.StateKeyTuple{
		{EventType: spec.MRoomCreate},
		{EventType: spec.MRoomPowerLevels},
		{EventType: spec.MRoomMember, StateKey: userID},
	})
	if err != nil {
		return nil, err
	}
	p := &roomPower{}
	authEvents := gomatrixserverlib.NewAuthEvents(evs)
	if p.create, _ = authEvents.Create(); p.create == nil {
		return p, nil
	}
	p.powerLevels, _ = authEvents.PowerLevels()
	if member, _ := authEvents.Member(spec.SenderID(userID)); member != nil {
		m, _ := member.Membership()
		p.joined = m == visibility.Join
	}
	creator := string(p.create.SenderID())
	p.creator = creator == userID
	if p.levels, err = gomatrixserverlib.NewPowerLevelContentFromAuthEvents(&authEvents, creator); err != nil {
		// Unparseable power levels let nobody do anything they guard.
		p.levels = gomatrixserverlib.PowerLevelContent{}
		p.levels.Defaults()
		p.level = -1
		return p, nil
	}
	p.level = p.levels.UserLevel(spec.SenderID(userID))
	return p, nil
}

// canSendState says whether the user is joined with the power to send
// state events of evType.
func (p *roomPower) canSendState(evType string) bool {
	return p.joined && p.level >= p.levels.EventLevel(evType, true)
}
