package api

import (
	"context"
	"errors"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
)

// ClientRoomsAPI is the part of RoomserverAPI behind the client API's room
// discovery and housekeeping endpoints: the published room directory
// (client-server spec §"Published room directory"), room summaries for it
// and for spaces (§"Spaces"), alias moves for room upgrades (§"Room
// upgrades"), content reports (§"Reporting content") and forgotten rooms
// (§"Leaving rooms").
type ClientRoomsAPI interface {
	// QueryRoomSummary describes a room from its current state.
	QueryRoomSummary(ctx context.Context, roomID string) (*RoomSummary, error)
	// QueryCurrentStateOfType returns the current state events of one
	// type, whatever their state keys (for example a space's m.space.child
	// events), ordered by state key.
	QueryCurrentStateOfType(ctx context.Context, roomID, eventType string) ([]gomatrixserverlib.PDU, error)

	// SetRoomPublished adds a room to the server's published room directory
	// or takes it out. Who may do so is the caller's decision.
	SetRoomPublished(ctx context.Context, roomID string, published bool) error
	// QueryRoomPublished says whether a known room is in the directory.
	QueryRoomPublished(ctx context.Context, roomID string) (bool, error)
	// QueryPublishedRooms lists a page of the directory, largest rooms
	// first, as summaries of the rooms' current state.
	QueryPublishedRooms(ctx context.Context, req *PublishedRoomsRequest) (*PublishedRoomsResponse, error)

	// MoveRoomAliases points every local alias of fromRoomID at toRoomID
	// and returns them.
	MoveRoomAliases(ctx context.Context, fromRoomID, toRoomID string) ([]string, error)

	// ReportEvent stores a user's report about an event for the server's
	// administrators. The caller has checked that the user may see it.
	ReportEvent(ctx context.Context, report *EventReport) error
	// QueryEventReports lists reports with IDs above afterID, oldest first.
	QueryEventReports(ctx context.Context, afterID int64, limit int) ([]EventReport, error)

	// ForgetRoom records that userID forgot a room they have left or were
	// banned from; ErrStillInRoom if their membership is join, invite or
	// knock. The room stays forgotten until their membership changes.
	ForgetRoom(ctx context.Context, roomID, userID string) error
	// QueryForgotten returns which of roomIDs userID has forgotten (with
	// no roomIDs: all rooms they have forgotten), in room ID order.
	QueryForgotten(ctx context.Context, userID string, roomIDs []string) ([]string, error)
}

// ErrStillInRoom: ForgetRoom was asked by a user who has not left the room.
var ErrStillInRoom = errors.New("user has not left the room")

// RoomSummary is what the directory and the space hierarchy show of a room
// (client-server spec PublicRoomsChunk), taken from its current state.
type RoomSummary struct {
	RoomID string
	// RoomType is the m.room.create "type" ("" for none).
	RoomType       string
	Name           string
	Topic          string
	CanonicalAlias string
	AvatarURL      string
	// JoinRule is m.room.join_rules' join_rule ("" if the room has none).
	JoinRule string
	// AllowRoomIDs are the rooms named by a restricted join rule's allow list.
	AllowRoomIDs      []string
	HistoryVisibility gomatrixserverlib.HistoryVisibility
	GuestCanJoin      bool
	NumJoinedMembers  int
}

// WorldReadable says whether anyone may read the room without joining.
func (s *RoomSummary) WorldReadable() bool {
	return s.HistoryVisibility == gomatrixserverlib.HistoryVisibilityWorldReadable
}

// PublishedRoomsRequest asks for one page of the directory.
type PublishedRoomsRequest struct {
	// SearchTerm, if set, keeps rooms whose name, topic or aliases contain
	// it, ignoring case.
	SearchTerm string
	// FilterRoomTypes keeps only rooms whose type is in RoomTypes, where
	// "" stands for rooms without a type.
	FilterRoomTypes bool
	RoomTypes       []string
	// Offset and Limit select the page.
	Offset int
	Limit  int
}

// PublishedRoomsResponse is one page of the directory.
type PublishedRoomsResponse struct {
	Rooms []RoomSummary
	// Total counts the rooms that match the request, on all pages.
	Total int
}

// EventReport is a user's report about an event.
type EventReport struct {
	// ID is assigned when the report is stored.
	ID       int64
	RoomID   string
	EventID  string
	Reporter string
	Reason   string
	// Score from -100 (most offensive) to 0, if the reporter gave one.
	Score      *int
	ReceivedAt time.Time
}
