package clientapi

import (
	"errors"
	"net/http"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Leaving rooms" (POST /rooms/{roomId}/forget). The
// sync API leaves forgotten rooms out (roomserver QueryForgotten).

// POST /rooms/{roomId}/forget (client-server spec §"Leaving rooms").
func (s *Server) handleForgetRoom(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var body struct{}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	caller := httputil.CallerFrom(r.Context()).UserID
	err = s.rooms.ForgetRoom(r.Context(), roomID, caller)
	if errors.Is(err, rsapi.ErrStillInRoom) {
		err = httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "You must leave the room before forgetting it")
	}
	if err != nil {
		httputil.WriteError(w, r, roomError(err, errUnknownRoom()))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
