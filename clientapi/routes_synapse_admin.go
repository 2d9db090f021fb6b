package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Synapse's shared-secret registration API (/_synapse/admin/v1/register),
// which admin tooling and the Complement test suite use to create
// accounts. It is served only when registration.shared_secret is set.

type sharedSecretRegisterRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	MAC         string `json:"mac"`
	DisplayName string `json:"displayname"`
}

func (s *Server) sharedSecretEnabled(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Registration.SharedSecret == "" {
		httputil.WriteError(w, r, httputil.Forbidden("Shared-secret registration is not enabled"))
		return false
	}
	return true
}

// handleSharedSecretNonce is GET /_synapse/admin/v1/register: a
// single-use nonce to include in the MAC.
func (s *Server) handleSharedSecretNonce(w http.ResponseWriter, r *http.Request) {
	if !s.sharedSecretEnabled(w, r) {
		return
	}
	nonce, err := s.users.CreateRegistrationNonce(r.Context())
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"nonce": nonce})
}

// sharedSecretMAC is hex(HMAC-SHA1(secret, nonce NUL username NUL password
// NUL "admin"|"notadmin")), the MAC Synapse defines for this API.
func sharedSecretMAC(secret, nonce, username, password string, admin bool) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	role := "notadmin"
	if admin {
		role = "admin"
	}
	m.Write([]byte(nonce + "\x00" + username + "\x00" + password + "\x00" + role))
	return m.Sum(nil)
}

// handleSharedSecretRegister is POST /_synapse/admin/v1/register. The
// nonce is used up before the MAC is checked, so each nonce allows one
// guess at most.
func (s *Server) handleSharedSecretRegister(w http.ResponseWriter, r *http.Request) {
	if !s.sharedSecretEnabled(w, r) {
		return
	}
	var req sharedSecretRegisterRequest
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &req); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	for name, v := range map[string]string{"nonce": req.Nonce, "username": req.Username, "password": req.Password, "mac": req.MAC} {
		if v == "" {
			httputil.WriteError(w, r, httputil.MissingParam("Missing %s", name))
			return
		}
	}
	if len([]rune(req.DisplayName)) > maxDisplayNameLength {
		httputil.WriteError(w, r, httputil.InvalidParam("displayname is longer than %d characters", maxDisplayNameLength))
		return
	}
	ctx := r.Context()
	err := s.users.ConsumeRegistrationNonce(ctx, req.Nonce)
	if errors.Is(err, userapi.ErrNotFound) {
		httputil.WriteError(w, r, httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Unrecognised nonce"))
		return
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	got, err := hex.DecodeString(req.MAC)
	if err != nil || !hmac.Equal(got, sharedSecretMAC(s.cfg.Registration.SharedSecret, req.Nonce, req.Username, req.Password, req.Admin)) {
		httputil.WriteError(w, r, httputil.Forbidden("HMAC incorrect"))
		return
	}
	// Synapse lower-cases the requested name; tools rely on that.
	localpart := strings.ToLower(req.Username)
	userID, err := s.users.CreateAccount(ctx, localpart, req.Password, req.Admin)
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
	if req.DisplayName != "" {
		if err := s.users.SetDisplayName(ctx, userID, req.DisplayName); err != nil {
			httputil.WriteError(w, r, err)
			return
		}
	}
	sess, err := s.users.CreateDevice(ctx, userapi.DeviceRequest{UserID: userID, IP: httputil.ClientIP(r)})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, s.sessionResponse(sess))
}
