package api

import (
	"context"
	"strconv"
	"strings"
)

// The published room directory as the client-server API (§"Published room
// directory") and the server-server API (§"Public Room Directory") present
// it: the same request, page and pagination tokens, so a token from either
// works with both.

// PublicRoomsRequest is the body of POST /publicRooms (and what GET's query
// parameters fill in).
type PublicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// PublicRoomsChunk is the spec's PublishedRoomsChunk.
type PublicRoomsChunk struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	NumJoinedMembers int    `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
}

// PublicRoomsResponse is one page of the directory.
type PublicRoomsResponse struct {
	Chunk                  []PublicRoomsChunk `json:"chunk"`
	NextBatch              string             `json:"next_batch,omitempty"`
	PrevBatch              string             `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                `json:"total_room_count_estimate"`
}

// ChunkFromSummary is a room's directory entry (also the base of a space
// hierarchy entry).
func ChunkFromSummary(s *RoomSummary) PublicRoomsChunk {
	return PublicRoomsChunk{
		RoomID: s.RoomID, Name: s.Name, Topic: s.Topic, CanonicalAlias: s.CanonicalAlias,
		AvatarURL: s.AvatarURL, NumJoinedMembers: s.NumJoinedMembers, WorldReadable: s.WorldReadable(),
		GuestCanJoin: s.GuestCanJoin, JoinRule: s.JoinRule, RoomType: s.RoomType,
	}
}

// InvalidParamError says a directory request is malformed; Reason is safe
// to show (M_INVALID_PARAM).
type InvalidParamError struct{ Reason string }

func (e *InvalidParamError) Error() string { return e.Reason }

const (
	// DefaultDirectoryLimit is the page size when the request gives none,
	// and MaxDirectoryLimit the largest it may ask for.
	DefaultDirectoryLimit = 100
	MaxDirectoryLimit     = 500
	// maxDirectoryOffset bounds how far a pagination token may point, so a
	// forged token cannot make the database skip arbitrarily far.
	maxDirectoryOffset = 1_000_000
)

// AnswerPublicRooms answers a directory request from the rooms published
// here. Pagination tokens are "d" and the offset of the page's first room
// in the directory's order (largest rooms first); the direction is in
// which token the client sends back, next_batch or prev_batch.
func AnswerPublicRooms(ctx context.Context, rooms ClientRoomsAPI, req *PublicRoomsRequest) (*PublicRoomsResponse, error) {
	limit := DefaultDirectoryLimit
	if req.Limit != nil {
		if *req.Limit <= 0 {
			return nil, &InvalidParamError{Reason: "limit must be positive"}
		}
		limit = min(*req.Limit, MaxDirectoryLimit)
	}
	offset, err := parseDirectoryToken(req.Since)
	if err != nil {
		return nil, err
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return nil, &InvalidParamError{Reason: "third_party_instance_id cannot be used with include_all_networks"}
	}
	resp := &PublicRoomsResponse{Chunk: []PublicRoomsChunk{}}
	// No application services bridge third-party networks here: the local
	// directory is all networks, and any one third-party network is empty.
	if req.ThirdPartyInstanceID != "" {
		return resp, nil
	}
	query := &PublishedRoomsRequest{Offset: offset, Limit: limit}
	if f := req.Filter; f != nil {
		query.SearchTerm = strings.TrimSpace(f.GenericSearchTerm)
		if f.RoomTypes != nil {
			query.FilterRoomTypes = true
			for _, t := range f.RoomTypes {
				// null in room_types stands for rooms without a type.
				if t == nil {
					query.RoomTypes = append(query.RoomTypes, "")
				} else {
					query.RoomTypes = append(query.RoomTypes, *t)
				}
			}
		}
	}
	page, err := rooms.QueryPublishedRooms(ctx, query)
	if err != nil {
		return nil, err
	}
	for i := range page.Rooms {
		resp.Chunk = append(resp.Chunk, ChunkFromSummary(&page.Rooms[i]))
	}
	resp.TotalRoomCountEstimate = page.Total
	if offset+len(page.Rooms) < page.Total {
		resp.NextBatch = directoryToken(offset + len(page.Rooms))
	}
	if offset > 0 {
		resp.PrevBatch = directoryToken(max(offset-limit, 0))
	}
	return resp, nil
}

func directoryToken(offset int) string { return "d" + strconv.Itoa(offset) }

func parseDirectoryToken(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	rest, ok := strings.CutPrefix(tok, "d")
	n, err := strconv.Atoi(rest)
	if !ok || err != nil || n < 0 || n > maxDirectoryOffset || strconv.Itoa(n) != rest {
		return 0, &InvalidParamError{Reason: "Unknown pagination token " + strconv.Quote(tok)}
	}
	return n, nil
}
