package syncapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
)

// Bounds of POST /user_directory/search.
const (
	defaultDirectoryLimit = 10
	maxDirectoryLimit     = 50
	maxSearchTermLength   = 256
)

type directoryResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// handleUserDirectorySearch serves POST /user_directory/search
// (client-server spec §"User Directory"): users whose ID or display name
// contains the search term and who either share a room with the caller or
// are joined to a public room. The directory is this component's own table,
// kept from member and join-rule events on the roomserver's output stream;
// display names are the ones in users' latest join events.
func (s *Service) handleUserDirectorySearch(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller := httputil.CallerFrom(r.Context())
		var body struct {
			SearchTerm *string `json:"search_term"`
			Limit      *int    `json:"limit"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		if body.SearchTerm == nil {
			return httputil.BadJSON("search_term is required")
		}
		if len(*body.SearchTerm) > maxSearchTermLength {
			return httputil.InvalidParam("search_term is longer than %d bytes", maxSearchTermLength)
		}
		limit := defaultDirectoryLimit
		if body.Limit != nil {
			if *body.Limit < 0 {
				return httputil.InvalidParam("limit must not be negative")
			}
			limit = min(*body.Limit, maxDirectoryLimit)
		}
		found, err := s.db.SearchDirectory(r.Context(), caller.UserID, *body.SearchTerm, limit)
		if err != nil {
			return err
		}
		limited := len(found) > limit
		if limited {
			found = found[:limit]
		}
		results := make([]directoryResult, 0, len(found))
		for _, e := range found {
			results = append(results, directoryResult{UserID: e.UserID, DisplayName: e.DisplayName, AvatarURL: e.AvatarURL})
		}
		httputil.WriteJSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
	}
}
