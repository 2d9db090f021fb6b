package clientapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Published room directory" (GET/PUT
// /directory/list/room/{roomId}, GET/POST /publicRooms).

const (
	// defaultDirectoryLimit is the page size when the client gives none,
	// and maxDirectoryLimit the largest it may ask for.
	defaultDirectoryLimit = 100
	maxDirectoryLimit     = 500
	// maxDirectoryOffset bounds how far a pagination token may point, so
	// that a forged token cannot make the database skip arbitrarily far.
	maxDirectoryOffset = 1_000_000
)

const (
	directoryPublic  = "public"
	directoryPrivate = "private"
)

// publicRoomsChunk is the spec's PublicRoomsChunk.
type publicRoomsChunk struct {
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

func chunkFromSummary(s *rsapi.RoomSummary) publicRoomsChunk {
	return publicRoomsChunk{
		RoomID: s.RoomID, Name: s.Name, Topic: s.Topic, CanonicalAlias: s.CanonicalAlias,
		AvatarURL: s.AvatarURL, NumJoinedMembers: s.NumJoinedMembers, WorldReadable: s.WorldReadable(),
		GuestCanJoin: s.GuestCanJoin, JoinRule: s.JoinRule, RoomType: s.RoomType,
	}
}

type publicRoomsResponse struct {
	Chunk                  []publicRoomsChunk `json:"chunk"`
	NextBatch              string             `json:"next_batch,omitempty"`
	PrevBatch              string             `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                `json:"total_room_count_estimate"`
}

type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// GET /publicRooms; needs no access token.
func (s *Server) handleGetPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var req publicRoomsRequest
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	s.publicRooms(w, r, &req)
}

// POST /publicRooms
func (s *Server) handlePostPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req publicRoomsRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.publicRooms(w, r, &req)
}

func (s *Server) publicRooms(w http.ResponseWriter, r *http.Request, req *publicRoomsRequest) {
	if err := s.checkDirectoryServer(r.URL.Query().Get("server")); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	limit := defaultDirectoryLimit
	if req.Limit != nil {
		if *req.Limit <= 0 {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be positive"))
			return
		}
		limit = min(*req.Limit, maxDirectoryLimit)
	}
	offset, err := parseDirectoryToken(req.Since)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		httputil.WriteError(w, r, httputil.InvalidParam("third_party_instance_id cannot be used with include_all_networks"))
		return
	}
	resp := publicRoomsResponse{Chunk: []publicRoomsChunk{}}
	// This server has no application services, so it bridges no
	// third-party networks: the local directory is all networks, and any
	// one third-party network has no rooms.
	if req.ThirdPartyInstanceID != "" {
		httputil.WriteJSON(w, http.StatusOK, resp)
		return
	}
	query := &rsapi.PublishedRoomsRequest{Offset: offset, Limit: limit}
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
	page, err := s.rooms.QueryPublishedRooms(r.Context(), query)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	for i := range page.Rooms {
		resp.Chunk = append(resp.Chunk, chunkFromSummary(&page.Rooms[i]))
	}
	resp.TotalRoomCountEstimate = page.Total
	if offset+len(page.Rooms) < page.Total {
		resp.NextBatch = directoryToken(offset + len(page.Rooms))
	}
	if offset > 0 {
		resp.PrevBatch = directoryToken(max(offset-limit, 0))
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// checkDirectoryServer accepts the server query parameter when it names
// this server. Other servers' directories are fetched over federation
// (server-server spec §"Public Room Directory"), which the client API
// cannot do yet.
func (s *Server) checkDirectoryServer(server string) error {
	if server == "" || server == s.cfg.ServerName {
		return nil
	}
	if config.ValidateServerName(server) != nil {
		return httputil.InvalidParam("Invalid server name %q", server)
	}
	return httputil.NotFound("Fetching the room directory of %s is not supported yet: federation is not available to the client API", server)
}

// Directory pagination tokens are "d" and the offset of the page's first
// room in the directory's order (largest rooms first). The direction is in
// which token the client sends, next_batch or prev_batch.
func directoryToken(offset int) string { return "d" + strconv.Itoa(offset) }

func parseDirectoryToken(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	rest, ok := strings.CutPrefix(tok, "d")
	n, err := strconv.Atoi(rest)
	if !ok || err != nil || n < 0 || n > maxDirectoryOffset || strconv.Itoa(n) != rest {
		return 0, httputil.InvalidParam("Unknown pagination token %q", tok)
	}
	return n, nil
}

type directoryVisibility struct {
	Visibility string `json:"visibility"`
}

// GET /directory/list/room/{roomId}; needs no access token.
func (s *Server) handleGetRoomVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	published, err := s.rooms.QueryRoomPublished(r.Context(), roomID)
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	v := directoryPrivate
	if published {
		v = directoryPublic
	}
	httputil.WriteJSON(w, http.StatusOK, directoryVisibility{Visibility: v})
}

// PUT /directory/list/room/{roomId}. The spec leaves who may do this to
// the server: here a server admin, or a joined member who created the room
// or has the power to send state events (state_default).
func (s *Server) handleSetRoomVisibility(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	visibility := directoryPublic
	if body.Visibility != nil {
		visibility = *body.Visibility
	}
	if visibility != directoryPublic && visibility != directoryPrivate {
		httputil.WriteError(w, r, httputil.InvalidParam("visibility must be \"public\" or \"private\""))
		return
	}
	ctx := r.Context()
	if err := s.checkDirectoryPermission(ctx, roomID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.rooms.SetRoomPublished(ctx, roomID, visibility == directoryPublic); err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) checkDirectoryPermission(ctx context.Context, roomID string) error {
	caller := httputil.CallerFrom(ctx)
	p, err := s.powerOf(ctx, roomID, caller.UserID)
	if err != nil {
		return roomError(err, errUnknownRoom())
	}
	if p.create == nil {
		return errUnknownRoom()
	}
	if caller.Admin || p.joined && (p.creator || p.level >= p.levels.StateDefault) {
		return nil
	}
	return httputil.Forbidden("Only the room's creator, its moderators or a server admin may change its visibility in the directory")
}
