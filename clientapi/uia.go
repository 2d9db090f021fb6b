package clientapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Spec: client-server §"User-Interactive Authentication API".

// Authentication types this server offers as UIA stages or login types.
const (
	authPassword          = "m.login.password"
	authDummy             = "m.login.dummy"
	authRegistrationToken = "m.login.registration_token"
)

// UIA operations: a session is bound to the operation that started it, so a
// session completed for one request cannot authorise another.
const (
	opRegister      = "register"
	opPassword      = "password"
	opDeactivate    = "deactivate"
	opDeleteDevices = "delete_devices"
)

// authDict is the "auth" object of a UIA request; the fields of every
// stage this server supports are present, each stage reads its own.
type authDict struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	// m.login.password
	Identifier *userIdentifier `json:"identifier"`
	User       string          `json:"user"`
	Password   string          `json:"password"`
	// m.login.registration_token
	Token string `json:"token"`
}

// userIdentifier is client-server spec §"Identifier types".
type userIdentifier struct {
	Type string `json:"type"`
	User string `json:"user"`
}

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// uiaChallenge is the 401 body that tells the client which stages remain
// (and, after a failed stage, why it failed). Unlike other errors it
// carries no errcode unless a stage failed, so it is written by
// writeUIAError rather than httputil.WriteError.
type uiaChallenge struct {
	Flows     []uiaFlow      `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session"`
	Completed []string       `json:"completed"`
	Errcode   string         `json:"errcode,omitempty"`
	Message   string         `json:"error,omitempty"`
}

func (c *uiaChallenge) Error() string { return "user-interactive authentication required" }

// writeUIAError answers a UIA challenge with its 401 body, and any other
// error as httputil.WriteError does.
func writeUIAError(w http.ResponseWriter, r *http.Request, err error) {
	var c *uiaChallenge
	if errors.As(err, &c) {
		httputil.WriteJSON(w, http.StatusUnauthorized, c)
		return
	}
	httputil.WriteError(w, r, err)
}

// checkUIA runs one round of user-interactive authentication for operation
// on behalf of userID ("" for registration). It returns the session once
// every stage of one of flows is complete; until then it returns a
// *uiaChallenge. The caller deletes the session after its operation
// succeeded (or, for registration, records the result), so a completed
// session authorises its operation once.
func (s *Server) checkUIA(ctx context.Context, operation, userID string, flows [][]string, auth *authDict) (*userapi.UIASession, error) {
	challenge := func(sess *userapi.UIASession, code, msg string) error {
		c := &uiaChallenge{Params: map[string]any{}, Session: sess.ID, Completed: sess.Completed, Errcode: code, Message: msg}
		for _, f := range flows {
			c.Flows = append(c.Flows, uiaFlow{Stages: f})
		}
		return c
	}
	var sess *userapi.UIASession
	var err error
	if auth == nil || auth.Session == "" {
		// A client may attempt a stage without a session (common for
		// m.login.dummy); it gets one on the fly.
		sess, err = s.users.CreateUIASession(ctx, operation, userID)
	} else {
		sess, err = s.users.GetUIASession(ctx, auth.Session)
		if errors.Is(err, userapi.ErrNotFound) {
			return nil, httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Unknown or expired UIA session %q", auth.Session)
		}
		if err == nil && (sess.Operation != operation || sess.UserID != userID) {
			return nil, httputil.InvalidParam("UIA session %q belongs to a different request", auth.Session)
		}
	}
	if err != nil {
		return nil, err
	}
	if auth == nil || auth.Type == "" {
		return nil, challenge(sess, "", "")
	}
	if !slices.ContainsFunc(flows, func(f []string) bool { return slices.Contains(f, auth.Type) }) {
		return nil, httputil.NewError(http.StatusBadRequest, "M_UNRECOGNIZED", "Authentication type %q is not offered here", auth.Type)
	}
	passed, err := s.runStage(ctx, userID, auth)
	if err != nil {
		return nil, err
	}
	if !passed {
		msg := "Invalid username or password"
		if auth.Type == authRegistrationToken {
			msg = "Invalid registration token"
		}
		return nil, challenge(sess, "M_FORBIDDEN", msg)
	}
	if sess, err = s.users.CompleteUIAStage(ctx, sess.ID, auth.Type); err != nil {
		return nil, err
	}
	for _, f := range flows {
		if !slices.ContainsFunc(f, func(stage string) bool { return !slices.Contains(sess.Completed, stage) }) {
			return sess, nil
		}
	}
	return nil, challenge(sess, "", "")
}

// runStage checks one stage's credentials. A stage that fails is
// (false, nil), reported in the 401; an error ends the request.
func (s *Server) runStage(ctx context.Context, userID string, auth *authDict) (bool, error) {
	switch auth.Type {
	case authDummy:
		return true, nil
	case authRegistrationToken:
		// Spec: client-server §"Token-authenticated registration".
		return s.validRegistrationToken(auth.Token), nil
	case authPassword:
		claimed, err := s.identifiedUser(auth.Identifier, auth.User)
		if err != nil {
			return false, nil
		}
		if claimed != userID {
			// Authenticating as someone else cannot authorise acting on
			// this account; like Synapse, refuse outright (403) rather
			// than check the other user's password.
			return false, httputil.Forbidden("Authenticated user does not match the requesting user")
		}
		// The password stage is a password guess like a login, so it
		// shares the login limit for the account.
		if err := s.limits.login.Allow("user:" + userID); err != nil {
			return false, err
		}
		if err := s.users.CheckPassword(ctx, userID, auth.Password); err != nil {
			if errors.Is(err, userapi.ErrInvalidCredentials) {
				return false, nil
			}
			return false, err
		}
		return true, nil
	}
	return false, nil
}

// validRegistrationToken compares in constant time, so timing does not
// reveal how much of a token an attacker has guessed.
func (s *Server) validRegistrationToken(token string) bool {
	if token == "" {
		return false
	}
	ok := false
	for _, t := range s.cfg.Registration.Tokens {
		if subtle.ConstantTimeCompare([]byte(t), []byte(token)) == 1 {
			ok = true
		}
	}
	return ok
}

// identifiedUser resolves the identifier of a login or m.login.password
// stage (or the deprecated top-level "user") to a local user ID. Parley
// creates only lower-case localparts, so the localpart is matched
// case-insensitively as users expect.
func (s *Server) identifiedUser(id *userIdentifier, legacyUser string) (string, error) {
	user := legacyUser
	if id != nil {
		if id.Type != "m.id.user" {
			return "", httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "Unsupported identifier type %q", id.Type)
		}
		user = id.User
	}
	if user == "" {
		return "", httputil.MissingParam("Missing identifier.user")
	}
	if !strings.HasPrefix(user, "@") {
		user = "@" + user + ":" + s.cfg.ServerName
	}
	localpart, err := userapi.LocalUserID(user, s.cfg.ServerName)
	if err != nil {
		return "", httputil.Forbidden("Invalid username or password")
	}
	return "@" + strings.ToLower(localpart) + ":" + s.cfg.ServerName, nil
}
