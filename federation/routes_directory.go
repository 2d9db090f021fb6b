package federation

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: server-server §"Public Room Directory". Another server's users
// browse this server's published rooms; rsapi.AnswerPublicRooms makes the
// pages for both APIs, so a token from either works with both.

// handleGetPublicRooms serves GET /_matrix/federation/v1/publicRooms.
func (s *Service) handleGetPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := rsapi.PublicRoomsRequest{Since: q.Get("since"), ThirdPartyInstanceID: q.Get("third_party_instance_id")}
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
	var req rsapi.PublicRoomsRequest
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.publicRooms(w, r, &req)
}

func (s *Service) publicRooms(w http.ResponseWriter, r *http.Request, req *rsapi.PublicRoomsRequest) {
	resp, err := rsapi.AnswerPublicRooms(r.Context(), s.rooms, req)
	var bad *rsapi.InvalidParamError
	if errors.As(err, &bad) {
		err = httputil.InvalidParam("%s", bad.Reason)
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
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
