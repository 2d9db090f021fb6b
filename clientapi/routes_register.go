package clientapi

import (
	"crypto/rand"
	"errors"
	"net/http"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"Account registration and management".

type registerRequest struct {
	Auth                     *authDict `json:"auth"`
	Username                 string    `json:"username"`
	Password                 string    `json:"password"`
	DeviceID                 string    `json:"device_id"`
	InitialDeviceDisplayName string    `json:"initial_device_display_name"`
	InhibitLogin             bool      `json:"inhibit_login"`
	RefreshToken             bool      `json:"refresh_token"`
}

// registerFlows is the one flow new accounts go through: a registration
// token when the config demands one, otherwise the dummy stage.
func (s *Server) registerFlows() [][]string {
	if s.cfg.Registration.RequireToken {
		return [][]string{{authRegistrationToken}}
	}
	return [][]string{{authDummy}}
}

func errInvalidUsername(err error) *httputil.Error {
	return httputil.NewError(http.StatusBadRequest, "M_INVALID_USERNAME", "%v", err)
}

func errUserInUse() *httputil.Error {
	return httputil.NewError(http.StatusBadRequest, "M_USER_IN_USE", "That user ID is already taken")
}

// checkNewPassword enforces the configured minimum length (M_WEAK_PASSWORD).
func (s *Server) checkNewPassword(password string) error {
	if len([]rune(password)) < s.cfg.Accounts.MinPasswordLength {
		return httputil.NewError(http.StatusBadRequest, "M_WEAK_PASSWORD", "The password must be at least %d characters long", s.cfg.Accounts.MinPasswordLength)
	}
	return nil
}

// handleRegister is POST /register. The username and password are checked
// before authentication so the client learns of a taken or invalid name
// before the user completes any stage; the name is checked again when the
// account is created, since someone else may have taken it meanwhile.
// Like Synapse, the username is lower-cased first: clients and test suites
// expect "Alice" to register @alice.
func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		httputil.WriteError(w, r, httputil.NewError(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not enabled on this server"))
		return
	default:
		httputil.WriteError(w, r, httputil.InvalidParam("Unknown kind %q", kind))
		return
	}
	if !s.cfg.Registration.Enabled {
		httputil.WriteError(w, r, httputil.Forbidden("Registration is disabled on this server"))
		return
	}
	if err := s.limits.register.Allow("ip:" + httputil.ClientIP(r)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	var req registerRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := checkDeviceFields(req.DeviceID, req.InitialDeviceDisplayName); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	// Registration is idempotent per UIA session: repeating the request
	// that created an account (say, after a lost response) answers for
	// that account instead of failing with M_USER_IN_USE. The repeat must
	// carry the account's password, so the session ID alone is no login.
	if req.Auth != nil && req.Auth.Session != "" {
		sess, err := s.users.GetUIASession(ctx, req.Auth.Session)
		if err == nil && sess.Operation == opRegister && sess.Result != "" {
			if s.users.CheckPassword(ctx, sess.Result, req.Password) != nil {
				httputil.WriteError(w, r, httputil.Forbidden("This session has already registered an account"))
				return
			}
			s.finishRegistration(w, r, &req, sess.Result)
			return
		}
	}
	req.Username = strings.ToLower(req.Username)
	if req.Username != "" {
		if err := userapi.ValidateNewLocalpart(req.Username, s.cfg.ServerName); err != nil {
			httputil.WriteError(w, r, errInvalidUsername(err))
			return
		}
		free, err := s.users.IsLocalpartAvailable(ctx, req.Username)
		if err != nil {
			httputil.WriteError(w, r, err)
			return
		}
		if !free {
			httputil.WriteError(w, r, errUserInUse())
			return
		}
	}
	if req.Password != "" {
		if err := s.checkNewPassword(req.Password); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	sess, err := s.checkUIA(ctx, opRegister, "", s.registerFlows(), req.Auth)
	if err != nil {
		writeUIAError(w, r, err)
		return
	}
	if req.Password == "" {
		httputil.WriteError(w, r, httputil.MissingParam("Missing password"))
		return
	}
	var userID string
	if req.Username != "" {
		userID, err = s.users.CreateAccount(ctx, req.Username, req.Password, false)
	} else {
		userID, err = s.createRandomAccount(r, req.Password)
	}
	switch {
	case errors.Is(err, userapi.ErrUserInUse):
		httputil.WriteError(w, r, errUserInUse())
		return
	case errors.Is(err, userapi.ErrInvalidUsername):
		httputil.WriteError(w, r, errInvalidUsername(err))
		return
	case err != nil:
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.users.SetUIASessionResult(ctx, sess.ID, userID); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.finishRegistration(w, r, &req, userID)
}

// finishRegistration logs the new account in unless inhibit_login says not to.
func (s *Server) finishRegistration(w http.ResponseWriter, r *http.Request, req *registerRequest, userID string) {
	if req.InhibitLogin {
		httputil.WriteJSON(w, http.StatusOK, loginResponse{UserID: userID, HomeServer: s.cfg.ServerName})
		return
	}
	login, err := s.users.CreateDevice(r.Context(), userapi.DeviceRequest{
		UserID: userID, DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, IP: httputil.ClientIP(r),
	})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, s.sessionResponse(login))
}

// createRandomAccount picks a localpart when the client asked for none.
// Twelve random characters of a 36-letter alphabet make a collision so
// unlikely that a few retries cover it.
func (s *Server) createRandomAccount(r *http.Request, password string) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var err error
	for range 5 {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		for i := range b {
			b[i] = alphabet[int(b[i])%len(alphabet)]
		}
		var userID string
		userID, err = s.users.CreateAccount(r.Context(), "u"+string(b), password, false)
		if !errors.Is(err, userapi.ErrUserInUse) {
			return userID, err
		}
	}
	return "", err
}

// handleRegisterAvailable is GET /register/available?username=.
func (s *Server) handleRegisterAvailable(w http.ResponseWriter, r *http.Request) {
	if err := s.limits.register.Allow("ip:" + httputil.ClientIP(r)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	username := strings.ToLower(r.URL.Query().Get("username"))
	if username == "" {
		httputil.WriteError(w, r, httputil.MissingParam("Missing username"))
		return
	}
	if err := userapi.ValidateNewLocalpart(username, s.cfg.ServerName); err != nil {
		httputil.WriteError(w, r, errInvalidUsername(err))
		return
	}
	free, err := s.users.IsLocalpartAvailable(r.Context(), username)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if !free {
		httputil.WriteError(w, r, errUserInUse())
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
}

// handleRegistrationTokenValidity is GET
// /v1/register/m.login.registration_token/validity (client-server spec
// §"Token-authenticated registration").
func (s *Server) handleRegistrationTokenValidity(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Registration.Enabled {
		httputil.WriteError(w, r, httputil.Forbidden("Registration is disabled on this server"))
		return
	}
	if err := s.limits.register.Allow("ip:" + httputil.ClientIP(r)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		httputil.WriteError(w, r, httputil.MissingParam("Missing token"))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]bool{"valid": s.validRegistrationToken(token)})
}
