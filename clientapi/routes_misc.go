package clientapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
)

// specVersions are the client-server spec versions this server speaks
// (client-server spec §"API Standards", GET /versions). Clients refuse
// servers that do not list the version they need.
var specVersions = []string{
	"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6",
	"v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
}

// handleVersions is GET /_matrix/client/versions; it needs no access token.
func (s *Server) handleVersions(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          specVersions,
		"unstable_features": map[string]bool{},
	})
}
