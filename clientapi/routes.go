package clientapi

import (
	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/internal/httputil"
)

// Register adds every client API route to r: the route table of this
// component, in the order of the client-server spec's sections.
func (s *Server) Register(r chi.Router) {
	auth := httputil.RequireAuth(s.users)
	_ = auth

	// Spec: client-server §2 "API Standards" (versions).

	// Spec: client-server §5 "Client authentication" (login, register, logout, accounts).

	// Spec: client-server §7 "Capabilities".

	// Spec: client-server §9 "Rooms" (creation, aliases, membership, events, state).

	// Spec: client-server §10 "User data" (profiles).

	// Spec: client-server §14 "Modules" (devices, openid, ...).
}
