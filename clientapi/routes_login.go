package clientapi

import (
	"errors"
	"net/http"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Login" and §"Logout".

// maxDeviceIDLength and maxDeviceNameLength bound client-chosen device
// fields so one client cannot store arbitrary amounts per device.
const (
	maxDeviceIDLength   = 255
	maxDeviceNameLength = 1000
)

// accountLimits throttle password guessing and mass registration. Login
// is limited per client IP and per target user, so neither many IPs
// against one account nor one IP against many accounts gets far.
type accountLimits struct {
	login    *httputil.RateLimiter
	register *httputil.RateLimiter
}

func newAccountLimits(cfg *config.Config) accountLimits {
	if cfg == nil || !cfg.RateLimits.Enabled {
		return accountLimits{}
	}
	return accountLimits{
		login:    httputil.NewRateLimiter(cfg.RateLimits.PerSecond, cfg.RateLimits.Burst),
		register: httputil.NewRateLimiter(cfg.RateLimits.PerSecond, cfg.RateLimits.Burst),
	}
}

type loginRequest struct {
	Type                     string          `json:"type"`
	Identifier               *userIdentifier `json:"identifier"`
	User                     string          `json:"user"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	RefreshToken             bool            `json:"refresh_token"`
}

type loginResponse struct {
	UserID      string         `json:"user_id"`
	AccessToken string         `json:"access_token,omitempty"`
	DeviceID    string         `json:"device_id,omitempty"`
	HomeServer  string         `json:"home_server"`
	WellKnown   map[string]any `json:"well_known,omitempty"`
}

// handleGetLogin lists the login types: password only.
func (s *Server) handleGetLogin(w http.ResponseWriter, r *http.Request) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"flows": []map[string]any{{"type": authPassword}},
	})
}

// handleLogin is POST /login with m.login.password. Unknown users and wrong
// passwords get the same 403, so the answer does not reveal which
// accounts exist. refresh_token is accepted and ignored: the spec lets a
// server that does not support refresh tokens issue a plain token.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if err := s.limits.login.Allow("ip:" + httputil.ClientIP(r)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var req loginRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if req.Type != authPassword {
		httputil.WriteError(w, r, httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Unsupported login type %q", req.Type))
		return
	}
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	userID, err := s.identifiedUser(req.Identifier, req.User)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.limits.login.Allow("user:" + userID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	sess, err := s.users.Login(r.Context(), userapi.LoginRequest{
		UserID: userID, Password: req.Password,
		DeviceRequest: userapi.DeviceRequest{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, IP: httputil.ClientIP(r)},
	})
	if errors.Is(err, userapi.ErrInvalidCredentials) || errors.Is(err, userapi.ErrNotFound) {
		httputil.WriteError(w, r, httputil.Forbidden("Invalid username or password"))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, s.sessionResponse(sess))
}

func (s *Server) sessionResponse(sess *userapi.Session) loginResponse {
	resp := loginResponse{UserID: sess.UserID, AccessToken: sess.AccessToken, DeviceID: sess.DeviceID, HomeServer: s.cfg.ServerName}
	if u := s.cfg.WellKnown.ClientBaseURL; u != "" {
		resp.WellKnown = map[string]any{"m.homeserver": map[string]string{"base_url": u}}
	}
	return resp
}

func checkDeviceFields(deviceID, displayName string) error {
	if len(deviceID) > maxDeviceIDLength {
		return httputil.InvalidParam("device_id is longer than %d bytes", maxDeviceIDLength)
	}
	if len(displayName) > maxDeviceNameLength {
		return httputil.InvalidParam("The device display name is longer than %d bytes", maxDeviceNameLength)
	}
	return nil
}

// handleLogout deletes the caller's device and so its access token.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	if err := s.users.Logout(r.Context(), c.UserID, c.DeviceID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleLogoutAll deletes every device of the caller.
func (s *Server) handleLogoutAll(w http.ResponseWriter, r *http.Request) {
	c := httputil.CallerFrom(r.Context())
	if err := s.users.LogoutAll(r.Context(), c.UserID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
