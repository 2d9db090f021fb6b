package federation

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: server-server §"Public Room Directory". Another server's users
// browse this server's published rooms; the pages and tokens are those of
// the client API's directory ("d" and an offset), so a token from either
// works with both.
const (
	defaultDirectoryLimit = 100
	maxDirectoryLimit     = 500
	maxDirectoryOffset    = 1_000_000
)

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

// publicRoomsChunk is the spec's PublishedRoomsChunk.
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

type publicRoomsResponse struct {
	Chunk                  []publicRoomsChunk `json:"chunk"`
	NextBatch              string             `json:"next_batch,omitempty"`
	PrevBatch              string             `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                `json:"total_room_count_estimate"`
}

// handleGetPublicRooms serves GET /_matrix/federation/v1/publicRooms.
func (s *Service) handleGetPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := publicRoomsRequest{Since: q.Get("since"), ThirdPartyInstanceID: q.Get("third_party_instance_id")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	if v := q.Get("include_all_networks"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			httputil.WriteError(w, r, httputil.InvalidParam("include_all_networks must be true or false"))
			return
		}
		req.IncludeAllNetworks = b
	}
	s.publicRooms(w, r, &req)
}

// handlePostPublicRooms serves POST /_matrix/federation/v1/publicRooms.
func (s *Service) handlePostPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req publicRoomsRequest
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.publicRooms(w, r, &req)
}

func (s *Service) publicRooms(w http.ResponseWriter, r *http.Request, req *publicRoomsRequest) {
	limit := defaultDirectoryLimit
	if req.Limit != nil {
		if *req.Limit <= 0 {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be positive"))
			return
		}
		limit = min(*req.Limit, maxDirectoryLimit)
	}
	offset := 0
	if req.Since != "" {
		rest, ok := strings.CutPrefix(req.Since, "d")
		n, err := strconv.Atoi(rest)
		if !ok || err != nil || n < 0 || n > maxDirectoryOffset || strconv.Itoa(n) != rest {
			httputil.WriteError(w, r, httputil.InvalidParam("Unknown pagination token %q", req.Since))
			return
		}
		offset = n
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		httputil.WriteError(w, r, httputil.InvalidParam("third_party_instance_id cannot be used with include_all_networks"))
		return
	}
	resp := publicRoomsResponse{Chunk: []publicRoomsChunk{}}
	// No application services bridge third-party networks here: any one
	// third-party network has no rooms.
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
				// null stands for rooms without a type.
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
	for _, sum := range page.Rooms {
		resp.Chunk = append(resp.Chunk, publicRoomsChunk{
			RoomID: sum.RoomID, Name: sum.Name, Topic: sum.Topic, CanonicalAlias: sum.CanonicalAlias,
			AvatarURL: sum.AvatarURL, NumJoinedMembers: sum.NumJoinedMembers, WorldReadable: sum.WorldReadable(),
			GuestCanJoin: sum.GuestCanJoin, JoinRule: sum.JoinRule, RoomType: sum.RoomType,
		})
	}
	resp.TotalRoomCountEstimate = page.Total
	if offset+len(page.Rooms) < page.Total {
		resp.NextBatch = "d" + strconv.Itoa(offset+len(page.Rooms))
	}
	if offset > 0 {
		resp.PrevBatch = "d" + strconv.Itoa(max(offset-limit, 0))
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// handleOpenIDUserInfo serves GET /_matrix/federation/v1/openid/userinfo
// (server-server spec §"OpenID"): a third party exchanges the token a user
// gave it for the user's ID. It is not X-Matrix authenticated: the token
// is the credential.
func (s *Service) handleOpenIDUserInfo(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		httputil.WriteError(w, r, httputil.MissingParam("access_token is required"))
		return
	}
	userID, err := s.users.LookupOpenIDToken(r.Context(), token)
	if errors.Is(err, userapi.ErrNotFound) {
		httputil.WriteError(w, r, httputil.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown or expired OpenID token"))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"sub": userID})
}
