package api

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
)

// FederationMembershipAPI is the part of FederationRoomserverAPI behind the
// membership handshakes and the history endpoints of the server-server API
// (spec §"Joining Rooms", §"Leaving Rooms", §"Inviting to a room",
// §"Backfilling and retrieving missing events", §"Retrieving events").
type FederationMembershipAPI interface {
	// JoinRemoteRoom stores what a send_join handshake returned: the auth
	// chain and the state (signatures already verified) as outliers, each
	// checked against its auth events, then the join event on top of that
	// state as the room's only forward extremity. The room is created here
	// if it is not known (or only as a stub); a room this server had left
	// starts again from the returned state. Everything is published, the
	// outliers first, so consumers see the room's whole state with the join.
	JoinRemoteRoom(ctx context.Context, req *JoinRemoteRoomRequest) error
	// StoreRemoteMembership records a local user's membership event in a
	// room this server has no state for (an invite received over
	// federation, or the leave that rejects it) as an outlier that sets
	// the user's membership; the room becomes a stub room if unknown. For a
	// room with state here it is input like any federated event.
	StoreRemoteMembership(ctx context.Context, roomVersion gomatrixserverlib.RoomVersion, event gomatrixserverlib.PDU) error
	// BuildEventTemplate fills in prev_events, auth_events and depth of
	// proto from the room's forward extremities and current state, for an
	// event another server will sign (make_join, make_leave). It returns the
	// room version and the current state events that authorise the event.
	BuildEventTemplate(ctx context.Context, proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.RoomVersion, []gomatrixserverlib.PDU, error)

	// QueryStateBeforeEvent returns the room state before an event (the
	// spec's "state at" an event for /state and /state_ids).
	QueryStateBeforeEvent(ctx context.Context, roomID, eventID string) ([]gomatrixserverlib.PDU, error)
	// QueryAuthChain returns the auth events of the given events and all of
	// theirs, as far as they are stored, ordered so each comes after its
	// own auth events.
	QueryAuthChain(ctx context.Context, roomID string, eventIDs []string) ([]gomatrixserverlib.PDU, error)
	// QueryBackfill walks prev_events back from the given events (which
	// are included) and returns up to limit events, deepest first.
	QueryBackfill(ctx context.Context, roomID string, fromEventIDs []string, limit int) ([]gomatrixserverlib.PDU, error)
	// QueryMissingEvents walks prev_events back from the latest events
	// (not included), not past the earliest ones nor below minDepth, and
	// returns up to limit events, oldest first (server-server spec
	// §"POST /get_missing_events").
	QueryMissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error)
	// QueryServerInRoom counts a server's users currently joined to the
	// room, and says whether it had one that has since left or was banned.
	QueryServerInRoom(ctx context.Context, roomID, serverName string) (*ServerInRoom, error)
	// QueryServerVisibility says which of the room's events a server may
	// see (server-server spec §"Backfilling and retrieving missing
	// events", with the history visibility rules of client-server spec
	// §"Room History Visibility" applied to a server's users): all with
	// shared or world_readable visibility before the event; with joined
	// (invited) visibility only if one of its users was joined (or
	// invited) then. Events not stored here are left out.
	QueryServerVisibility(ctx context.Context, roomID, serverName string, eventIDs []string) (map[string]bool, error)
	// QueryForwardExtremities returns the room's forward extremities
	// (none for a stub room).
	QueryForwardExtremities(ctx context.Context, roomID string) ([]gomatrixserverlib.PDU, error)
}

// JoinRemoteRoomRequest is a checked send_join response with its join.
type JoinRemoteRoomRequest struct {
	RoomID      string
	RoomVersion gomatrixserverlib.RoomVersion
	// JoinEvent is the local user's join, as the resident server returned
	// it (with its signatures added) or as sent.
	JoinEvent gomatrixserverlib.PDU
	// StateEvents are the room state before the join; AuthChain the auth
	// events of those and of the join.
	StateEvents []gomatrixserverlib.PDU
	AuthChain   []gomatrixserverlib.PDU
}

// ServerInRoom is a server's presence in a room.
type ServerInRoom struct {
	JoinedMembers int
	WasJoined     bool
}
