package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Account registration and management" (whoami,
// password, deactivation).

// passwordFlows is the UIA flow of operations on an existing account: the
// user proves they still know the password.
var passwordFlows = [][]string{{authPassword}}

// handleWhoami is GET /account/whoami.
func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id":   c.UserID,
		"device_id": c.DeviceID,
		"is_guest":  false,
	})
}

type changePasswordRequest struct {
	Auth          *authDict `json:"auth"`
	NewPassword   string    `json:"new_password"`
	LogoutDevices *bool     `json:"logout_devices"`
}

// handleChangePassword is POST /account/password. By default every other
// device is logged out; the one making the request stays logged in.
func (s *Server) handleChangePassword(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	var req changePasswordRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.NewPassword == "" {
		httputil.WriteError(w, r, httputil.MissingParam("Missing new_password"))
		return
	}
	if err := s.checkNewPassword(req.NewPassword); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	sess, err := s.checkUIA(r.Context(), opPassword, c.UserID, passwordFlows, req.Auth)
	if err != nil {
		writeUIAError(w, r, err)
		return
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := s.users.SetPassword(r.Context(), c.UserID, req.NewPassword, logout, c.DeviceID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.users.DeleteUIASession(r.Context(), sess.ID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

type deactivateRequest struct {
	Auth     *authDict `json:"auth"`
	IDServer string    `json:"id_server"`
	Erase    bool      `json:"erase"`
}

// handleDeactivate is POST /account/deactivate. The server has no
// third-party identifiers to unbind, hence "no-support".
func (s *Server) handleDeactivate(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	var req deactivateRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	sess, err := s.checkUIA(r.Context(), opDeactivate, c.UserID, passwordFlows, req.Auth)
	if err != nil {
		writeUIAError(w, r, err)
		return
	}
	if err := s.users.Deactivate(r.Context(), c.UserID); err != nil && !errors.Is(err, userapi.ErrNotFound) {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.users.DeleteUIASession(r.Context(), sess.ID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.leaveAllRooms(r.Context(), c.UserID)
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// leaveAllRooms makes a deactivated user leave (or reject invites to)
// every room, as the spec's deactivation section asks. The deactivation
// itself is committed already; rooms that refuse are logged.
func (s *Server) leaveAllRooms(ctx context.Context, userID string) {
	if s.rooms == nil {
		return
	}
	log := logrus.WithField("user_id", userID)
	roomIDs, err := s.rooms.QueryRoomsForUser(ctx, userID, []string{"join", "invite", "knock"})
	if err != nil {
		log.WithError(err).Warn("deactivation: list rooms")
		return
	}
	stateKey := userID
	for _, roomID := range roomIDs {
		_, err := s.rooms.SendEvent(ctx, &rsapi.SendEventRequest{RoomID: roomID, Event: rsapi.EventTemplate{
			Sender: userID, Type: "m.room.member", StateKey: &stateKey, Content: []byte(`{"membership":"leave"}`),
		}})
		if err != nil {
			log.WithError(err).WithField("room_id", roomID).Warn("deactivation: leave room")
		}
	}
}
