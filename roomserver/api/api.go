// Package api is the roomserver's boundary: the only way other components
// read or change rooms. It has an in-process implementation (package
// roomserver) and, for split deployments, a NATS request/reply one.
//
// Events cross this boundary as gomatrixserverlib.PDU values; a remote
// implementation carries them as {room_version, event JSON}.
package api

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
)

// RoomserverAPI is implemented by the roomserver. All methods are safe for
// concurrent use. Writes are serialized per room and parallel across rooms;
// a method that changes a room returns only after the change is committed.
type RoomserverAPI interface {
	// CreateRoom builds, signs, authorises and stores the initial events of
	// a new room in order, atomically: either all are stored or none.
	CreateRoom(ctx context.Context, req *CreateRoomRequest) (*CreateRoomResponse, error)
	// SendEvent builds an event from a local user's template on top of the
	// room's current forward extremities and state, signs it, checks it
	// against the auth rules and stores it. With a TransactionID the call is
	// idempotent: a repeat returns the first event's ID.
	SendEvent(ctx context.Context, req *SendEventRequest) (*SendEventResponse, error)

	// QueryRoomInfo says whether the room is known here and its version.
	QueryRoomInfo(ctx context.Context, roomID string) (*RoomInfo, error)
	// QueryCurrentState returns current state events; with no tuples, all of them.
	QueryCurrentState(ctx context.Context, roomID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	// QueryStateAfterEvent returns the room state after the given event
	// (including the event itself if it is a state event); with no tuples,
	// all of it.
	QueryStateAfterEvent(ctx context.Context, roomID, eventID string, tuples []gomatrixserverlib.StateKeyTuple) ([]gomatrixserverlib.PDU, error)
	// QueryEventsByID returns the events found among eventIDs (missing ones
	// are left out), redacted where a redaction applies.
	QueryEventsByID(ctx context.Context, eventIDs []string) ([]gomatrixserverlib.PDU, error)
	// QueryMembership returns a user's current membership in a room
	// ("join", "invite", "leave", "ban", "knock", or "" if never a member).
	QueryMembership(ctx context.Context, roomID, userID string) (*Membership, error)
	// QueryRoomsForUser lists rooms where userID's current membership is one of memberships.
	QueryRoomsForUser(ctx context.Context, userID string, memberships []string) ([]string, error)

	// Aliases (client-server spec §"Room aliases").
	SetRoomAlias(ctx context.Context, alias, roomID, creatorUserID string) error
	GetRoomIDForAlias(ctx context.Context, alias string) (string, error)
	RemoveRoomAlias(ctx context.Context, alias, requesterUserID string) error
	GetAliasesForRoom(ctx context.Context, roomID string) ([]string, error)

	// Directory, summaries, reports and forgotten rooms (clientrooms.go).
	ClientRoomsAPI
}

// FederationRoomserverAPI is what the federation component needs on top
// of RoomserverAPI: input of events built by other servers. It is a
// separate interface so that RoomserverAPI stays stable for its callers.
type FederationRoomserverAPI interface {
	RoomserverAPI
	// InputFederationEvents stores events of a known room received from
	// other servers, authorising each against its auth events, the state
	// before it (resolving forks at its prev_events) and the current state
	// (server-server spec §"Checks performed on receipt of a PDU"). The
	// caller has already checked signatures and hashes.
	InputFederationEvents(ctx context.Context, req *InputFederationEventsRequest) (*InputFederationEventsResponse, error)
	// Joins, invites, history and queries of other servers (federation.go).
	FederationMembershipAPI
}

// InputFederationEventsRequest carries events of one room, ordered so that
// each event's prev_events and auth_events are stored or come before it.
type InputFederationEventsRequest struct {
	RoomID string
	// Outliers are stored first, in order (each after its auth events),
	// without being placed in the DAG: state and auth events fetched to
	// fill a gap. Each is checked against its own auth events only.
	Outliers []gomatrixserverlib.PDU
	Events   []gomatrixserverlib.PDU
	// StateBefore gives, by event ID, the state before those Events whose
	// prev_events are not all known here (the answer of /state_ids about
	// the event), as IDs of events stored here or among Outliers. Such an
	// event starts from that state.
	StateBefore map[string][]string
}

// InputFederationEventsResponse has one result per input event, in order.
type InputFederationEventsResponse struct {
	Results []InputEventResult
}

// InputEventResult says what became of one input event.
type InputEventResult struct {
	EventID string
	// Rejected events failed auth against their auth events or the state
	// before them; they are stored as rejected and never published.
	Rejected bool
	// SoftFailed events passed those checks but not the current state; they
	// are stored and published with SoftFailed set, and are not extremities.
	SoftFailed bool
	// Error, if set, says why the event was not processed at all (for
	// example unknown prev_events); nothing was stored for it.
	Error string
	// MissingPrevEvents lists the prev_events that are not known here (or
	// are outliers with no state); the event was not stored. The caller
	// may fetch them, or the state before the event, and input it again.
	MissingPrevEvents []string
}

// CreateRoomRequest carries the initial events of a new room, already in
// the order the spec's createRoom section gives (create, creator's join,
// power levels, aliases, presets' rules, initial_state, name, topic, invites).
type CreateRoomRequest struct {
	RoomID      string
	RoomVersion gomatrixserverlib.RoomVersion
	Events      []EventTemplate
}

// CreateRoomResponse lists the stored events' IDs in order.
type CreateRoomResponse struct {
	EventIDs []string
}

// EventTemplate is an event before the roomserver fills in prev_events,
// auth_events, depth, hashes and signatures.
type EventTemplate struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// OriginServerTS overrides the timestamp (milliseconds); 0 means now.
	OriginServerTS int64
}

// TransactionID identifies a client's send for idempotency
// (client-server spec §"Transaction identifiers").
type TransactionID struct {
	DeviceID string `json:"device_id"`
	TxnID    string `json:"txn_id"`
}

// SendEventRequest asks for one local event.
type SendEventRequest struct {
	RoomID        string
	Event         EventTemplate
	TransactionID *TransactionID
}

// SendEventResponse names the stored event.
type SendEventResponse struct {
	EventID string
}

// RoomInfo describes a known room.
type RoomInfo struct {
	RoomID      string
	RoomVersion gomatrixserverlib.RoomVersion
	// Stub rooms are known only through memberships of local users that
	// came over federation (an invite, its rejection): no state, no DAG.
	// Joining one goes through another server.
	Stub bool
}

// Membership is a user's membership with the event that set it.
type Membership struct {
	Membership string
	EventID    string
}

// Errors the roomserver returns; callers map them to Matrix errors.
var (
	// ErrRoomNotFound: the room is not known on this server.
	ErrRoomNotFound = errors.New("room not found")
	// ErrAliasInUse: the alias already points at a room.
	ErrAliasInUse = errors.New("alias already in use")
	// ErrAliasNotFound: no such alias.
	ErrAliasNotFound = errors.New("alias not found")
	// ErrRoomExists: CreateRoom was given an ID that already exists.
	ErrRoomExists = errors.New("room already exists")
	// ErrEventNotFound: the event is not known in that room.
	ErrEventNotFound = errors.New("event not found")
)

// NotAllowedError says an event failed the auth rules; Reason is safe to
// show to the client.
type NotAllowedError struct{ Reason string }

func (e *NotAllowedError) Error() string { return "not allowed: " + e.Reason }

// BadEventError says an event template could not become a valid event
// (bad content, too large, unknown room version); Reason is safe to show.
type BadEventError struct {
	Reason   string
	TooLarge bool
}

func (e *BadEventError) Error() string { return "bad event: " + e.Reason }

// OutputStream is the bus stream the roomserver publishes to, and
// OutputSubject its subject. Every stored event is published once it is
// committed, in commit order per room.
const (
	OutputStream  = "roomserver_output"
	OutputSubject = "roomserver.output"
)

// OutputEvent is one message on the output stream.
type OutputEvent struct {
	// RoomID and RoomVersion of the event.
	RoomID      string                        `json:"room_id"`
	RoomVersion gomatrixserverlib.RoomVersion `json:"room_version"`
	// Event is the full event JSON as stored (signed, hashed).
	Event json.RawMessage `json:"event"`
	// EventID of Event.
	EventID string `json:"event_id"`
	// RoomPosition increases by one per event stored in the room; consumers
	// use (room_id, room_position) to ignore a redelivered message.
	RoomPosition int64 `json:"room_position"`
	// AddsStateEventIDs and RemovesStateEventIDs change the room's current
	// state: applying them in stream order rebuilds the current state.
	AddsStateEventIDs    []string `json:"adds_state_event_ids,omitempty"`
	RemovesStateEventIDs []string `json:"removes_state_event_ids,omitempty"`
	// SoftFailed events are stored but must not be shown to clients.
	SoftFailed bool `json:"soft_failed,omitempty"`
	// Outlier events (state and auth events of a room joined over
	// federation, an invite to a room this server is not in) are not part
	// of the room's timeline here; they are also marked SoftFailed so that
	// consumers store them, apply their state changes and never show them
	// as timeline events. They come before any event whose
	// AddsStateEventIDs name them.
	Outlier bool `json:"outlier,omitempty"`
	// TransactionID is set for a local client's send, so that client's
	// device can be told which of its sends this is.
	TransactionID *TransactionID `json:"transaction_id,omitempty"`
	// Sender's user ID (the event's sender, resolved for pseudo-ID rooms).
	Sender string `json:"sender"`
}
