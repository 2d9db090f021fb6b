package clientapi

import (
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
)

// Spec: client-server §"Account registration and management" (whoami,
// password, deactivation).

// handleWhoami is GET /account/whoami.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id":   c.UserID,
		"device_id": c.DeviceID,
		"is_guest":  false,
	})
}
