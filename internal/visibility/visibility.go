// Package visibility decides which room events and which room state a user
// may read, following client-server spec §"Room History Visibility"
// (server behaviour). The rules themselves (Reader.Allowed) are pure so
// that every component applies the same ones; the loaders fetch what they
// need from the roomserver API.
package visibility

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Memberships, as in m.room.member content.
const (
	Join   = "join"
	Invite = "invite"
	Leave  = "leave"
	Ban    = "ban"
	Knock  = "knock"
)

// MaxHistory bounds how many of a reader's past membership changes are
// walked to answer "did the user join after this event". A reader who
// changed membership more often than this in one room is judged on the
// most recent changes only.
const MaxHistory = 32

// Point is what the rules need to know about a room at one event.
type Point struct {
	// HistoryVisibility in force at the event; "" or an unknown value means
	// shared, as the spec says.
	HistoryVisibility gomatrixserverlib.HistoryVisibility
	// Membership of the reader at the event ("" if they had none) and the
	// ID of the m.room.member event that set it.
	Membership        string
	MembershipEventID string
}

// Change is one of a reader's membership events.
type Change struct {
	EventID    string
	Membership string
}

// Reader is the user asking, with their membership history in the room.
type Reader struct {
	UserID string
	// History lists the reader's membership events newest first: History[0]
	// is the current membership. Empty if the user never had one. It may
	// be cut short (see MaxHistory).
	History []Change
}

// Membership is the reader's current membership ("" if none).
func (r *Reader) Membership() string {
	if len(r.History) == 0 {
		return ""
	}
	return r.History[0].Membership
}

// MembershipEventID is the event that set the current membership.
func (r *Reader) MembershipEventID() string {
	if len(r.History) == 0 {
		return ""
	}
	return r.History[0].EventID
}

// Allowed applies the spec's rules for one event given the room at that
// event:
//  1. world_readable: allow.
//  2. the reader's membership was join: allow.
//  3. shared, and the reader joined at any point after the event: allow.
//  4. the reader's membership was invite and the visibility invited: allow.
//  5. otherwise deny.
func (r *Reader) Allowed(p Point) bool {
	hv := normalize(p.HistoryVisibility)
	if hv == gomatrixserverlib.HistoryVisibilityWorldReadable || p.Membership == Join {
		return true
	}
	switch hv {
	case gomatrixserverlib.HistoryVisibilityShared:
		return r.joinedAfter(p.MembershipEventID)
	case gomatrixserverlib.HistoryVisibilityInvited:
		return p.Membership == Invite
	}
	return false
}

// joinedAfter says whether the reader has a join newer than the membership
// event eventID ("" meaning: before the reader's first membership event).
func (r *Reader) joinedAfter(eventID string) bool {
	for _, c := range r.History {
		if eventID != "" && c.EventID == eventID {
			return false
		}
		if c.Membership == Join {
			return true
		}
	}
	return false
}

func normalize(hv gomatrixserverlib.HistoryVisibility) gomatrixserverlib.HistoryVisibility {
	switch hv {
	case gomatrixserverlib.HistoryVisibilityWorldReadable, gomatrixserverlib.HistoryVisibilityInvited,
		gomatrixserverlib.HistoryVisibilityJoined:
		return hv
	}
	return gomatrixserverlib.HistoryVisibilityShared
}

// Rooms is the part of the roomserver API the loaders use.
type Rooms interface {
	QueryCurrentState(ctx context.Context, roomID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	QueryStateAfterEvent(ctx context.Context, roomID, eventID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	QueryEventsByID(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error)
	QueryMembership(ctx context.Context, roomID, userID string) (*rsapi.Membership, error)
}

// LoadReader fetches userID's membership history in roomID. Only a user
// who is not joined now needs more than the current membership: the
// history is walked back through each membership event's auth events,
// which name the target's previous m.room.member event (server-server
// spec §"Auth events selection").
func LoadReader(ctx context.Context, rooms Rooms, roomID, userID string) (*Reader, error) {
	r := &Reader{UserID: userID}
	m, err := rooms.QueryMembership(ctx, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("query membership of %s in %s: %w", userID, roomID, err)
	}
	if m == nil || m.Membership == "" || m.EventID == "" {
		return r, nil
	}
	r.History = append(r.History, Change{EventID: m.EventID, Membership: m.Membership})
	if m.Membership == Join {
		return r, nil
	}
	eventID := m.EventID
	for len(r.History) < MaxHistory {
		prev, err := previousMembership(ctx, rooms, eventID, userID)
		if err != nil {
			return nil, err
		}
		if prev == nil {
			break
		}
		membership, err := prev.Membership()
		if err != nil {
			break
		}
		r.History = append(r.History, Change{EventID: prev.EventID(), Membership: membership})
		eventID = prev.EventID()
	}
	return r, nil
}

// previousMembership returns the user's membership event that the given
// membership event replaced, or nil.
func previousMembership(ctx context.Context, rooms Rooms, eventID, userID string) (gomatrixserverlib.PDU, error) {
	evs, err := rooms.QueryEventsByID(ctx, []string{eventID})
	if err != nil {
		return nil, fmt.Errorf("load membership event %s: %w", eventID, err)
	}
	if len(evs) == 0 {
		return nil, nil
	}
	auth, err := rooms.QueryEventsByID(ctx, evs[0].AuthEventIDs())
	if err != nil {
		return nil, fmt.Errorf("load auth events of %s: %w", eventID, err)
	}
	for _, a := range auth {
		if a.Type() == spec.MRoomMember && a.StateKeyEquals(userID) {
			return a, nil
		}
	}
	return nil, nil
}

// pointFrom reads the history visibility and userID's membership out of
// state events (as returned for the tuples pointTuples gives).
func pointFrom(state []gomatrixserverlib.PDU, userID string) Point {
	var p Point
	for _, ev := range state {
		switch {
		case ev.Type() == spec.MRoomHistoryVisibility && ev.StateKeyEquals(""):
			var c struct {
				HistoryVisibility gomatrixserverlib.HistoryVisibility `json:"history_visibility"`
			}
			if json.Unmarshal(ev.Content(), &c) == nil {
				p.HistoryVisibility = c.HistoryVisibility
			}
		case ev.Type() == spec.MRoomMember && ev.StateKeyEquals(userID):
			p.Membership, _ = ev.Membership()
			p.MembershipEventID = ev.EventID()
		}
	}
	return p
}

func pointTuples(userID string) []gomatrixserverlib.StateKeyTuple {
	return []gomatrixserverlib.StateKeyTuple{
		{EventType: spec.MRoomHistoryVisibility, StateKey: ""},
		{EventType: spec.MRoomMember, StateKey: userID},
	}
}

// CanSeeEvent says whether the reader may see ev. The rules use the room
// state at ev; for history visibility events and the reader's own
// membership events the state before or after the event may allow it,
// so both are tried.
func CanSeeEvent(ctx context.Context, rooms Rooms, r *Reader, ev gomatrixserverlib.PDU) (bool, error) {
	roomID := ev.RoomID().String()
	after, err := rooms.QueryStateAfterEvent(ctx, roomID, ev.EventID(), pointTuples(r.UserID))
	if err != nil {
		return false, fmt.Errorf("state after %s: %w", ev.EventID(), err)
	}
	if r.Allowed(pointFrom(after, r.UserID)) {
		return true, nil
	}
	changesRule := ev.Type() == spec.MRoomHistoryVisibility && ev.StateKeyEquals("") ||
		ev.Type() == spec.MRoomMember && ev.StateKeyEquals(r.UserID)
	if !changesRule {
		return false, nil
	}
	prevs := ev.PrevEventIDs()
	if len(prevs) == 0 {
		return r.Allowed(Point{}), nil
	}
	for _, prev := range prevs {
		before, err := rooms.QueryStateAfterEvent(ctx, roomID, prev, pointTuples(r.UserID))
		if err != nil {
			return false, fmt.Errorf("state after %s: %w", prev, err)
		}
		if r.Allowed(pointFrom(before, r.UserID)) {
			return true, nil
		}
	}
	return false, nil
}

// StateAt says from which point the reader may read the room's state:
// current is true for the current state; otherwise eventID names the event
// after which to read it (the reader's last visible membership change, so
// that a user who left reads the state as it was when they left); ok is
// false if they may read none of it (client-server spec GET
// /rooms/{roomId}/state: 403 for users who are not and were not members).
func StateAt(ctx context.Context, rooms Rooms, roomID string, r *Reader) (current bool, eventID string, ok bool, err error) {
	if r.Membership() == Join {
		return true, "", true, nil
	}
	now, err := rooms.QueryCurrentState(ctx, roomID, pointTuples(r.UserID))
	if err != nil {
		return false, "", false, fmt.Errorf("current state of %s: %w", roomID, err)
	}
	if r.Allowed(pointFrom(now, r.UserID)) {
		return true, "", true, nil
	}
	id := r.MembershipEventID()
	if id == "" {
		return false, "", false, nil
	}
	evs, err := rooms.QueryEventsByID(ctx, []string{id})
	if err != nil {
		return false, "", false, fmt.Errorf("load membership event %s: %w", id, err)
	}
	if len(evs) == 0 {
		return false, "", false, nil
	}
	visible, err := CanSeeEvent(ctx, rooms, r, evs[0])
	if err != nil || !visible {
		return false, "", false, err
	}
	return false, id, true, nil
}
