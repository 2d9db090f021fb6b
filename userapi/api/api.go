// Package api is the user API's boundary: accounts, devices, access tokens
// and profiles, as other components may use them.
//
// User IDs cross this boundary in full (@localpart:server). Failures a
// caller must tell apart are the sentinel errors below; callers turn them
// into Matrix errors at their HTTP edge. VerifyAccessToken is the exception:
// it answers with a ready *httputil.Error, as httputil.RequireAuth expects.
package api

import (
	"context"
	"errors"

	"github.com/parley-chat/parley/internal/httputil"
)

// UserAPI is implemented by package userapi. Every component that serves
// authenticated HTTP routes uses it to resolve access tokens. All methods
// are safe for concurrent use.
type UserAPI interface {
	httputil.TokenVerifier
	KeyAPI

	// CreateAccount registers a local account with the given localpart (a
	// new-style localpart, see ValidateNewLocalpart) and password ("" means
	// no password login). It returns ErrUserInUse if the localpart is taken,
	// including by a deactivated account.
	CreateAccount(ctx context.Context, localpart, password string, admin bool) (userID string, err error)
	// IsLocalpartAvailable says whether no account, live or deactivated,
	// has this localpart.
	IsLocalpartAvailable(ctx context.Context, localpart string) (bool, error)
	// CheckPassword returns nil if userID is an active local account whose
	// password is password, and ErrInvalidCredentials otherwise.
	CheckPassword(ctx context.Context, userID, password string) error
	// Login checks the password and then does what CreateDevice does.
	// Unknown users, deactivated users and wrong passwords all give
	// ErrInvalidCredentials.
	Login(ctx context.Context, req LoginRequest) (*Session, error)
	// CreateDevice starts a session for an existing active account without
	// checking a password (after registration). An existing device with the
	// same ID keeps its identity but its old access token stops working
	// (client-server spec §"Login", device_id). An empty DeviceID gets a
	// random one.
	CreateDevice(ctx context.Context, req DeviceRequest) (*Session, error)

	// Logout deletes one device and so its access token.
	Logout(ctx context.Context, userID, deviceID string) error
	// LogoutAll deletes every device of the user.
	LogoutAll(ctx context.Context, userID string) error
	// DeleteDevices deletes the listed devices of the user; unknown IDs are
	// ignored.
	DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error
	// ListDevices returns the user's devices ordered by device ID.
	ListDevices(ctx context.Context, userID string) ([]Device, error)
	// GetDevice returns one device of the user, or ErrNotFound.
	GetDevice(ctx context.Context, userID, deviceID string) (*Device, error)
	// UpdateDevice sets a device's display name, or returns ErrNotFound.
	UpdateDevice(ctx context.Context, userID, deviceID, displayName string) error

	// SetPassword replaces the user's password. With logoutDevices, every
	// device except keepDeviceID ("" for none) is logged out in the same
	// transaction.
	SetPassword(ctx context.Context, userID, newPassword string, logoutDevices bool, keepDeviceID string) error
	// Deactivate permanently disables the account: its password and
	// devices are removed and its profile is cleared. The localpart is
	// never handed out again.
	Deactivate(ctx context.Context, userID string) error

	// GetProfile returns a local user's profile, or ErrNotFound for users
	// that do not exist here.
	GetProfile(ctx context.Context, userID string) (*Profile, error)
	// SetDisplayName and SetAvatarURL change a local user's profile; ""
	// removes the field. ErrNotFound for unknown users.
	SetDisplayName(ctx context.Context, userID, displayName string) error
	SetAvatarURL(ctx context.Context, userID, avatarURL string) error

	// CreateOpenIDToken issues a token a third party can exchange for the
	// user's ID through the federation OpenID userinfo endpoint.
	CreateOpenIDToken(ctx context.Context, userID string) (*OpenIDToken, error)
	// LookupOpenIDToken returns the user behind an unexpired OpenID token,
	// or ErrNotFound.
	LookupOpenIDToken(ctx context.Context, token string) (userID string, err error)

	// UIA sessions (client-server spec §"User-Interactive Authentication
	// API") live in the user API's database so that any client API
	// instance can continue a session another one started.

	// CreateUIASession starts a session bound to one operation and, for
	// operations on an existing account, one user.
	CreateUIASession(ctx context.Context, operation, userID string) (*UIASession, error)
	// GetUIASession returns an unexpired session, or ErrNotFound.
	GetUIASession(ctx context.Context, sessionID string) (*UIASession, error)
	// CompleteUIAStage records a completed stage and returns the session
	// with its updated list, or ErrNotFound if it expired.
	CompleteUIAStage(ctx context.Context, sessionID, stage string) (*UIASession, error)
	// SetUIASessionResult records what the session's operation produced
	// (for registration: the new user ID), so that a client repeating the
	// completed request gets the same answer instead of an error.
	SetUIASessionResult(ctx context.Context, sessionID, result string) error
	// DeleteUIASession ends a session once its operation succeeded.
	DeleteUIASession(ctx context.Context, sessionID string) error

	// CreateRegistrationNonce issues a single-use nonce for the
	// shared-secret admin registration API.
	CreateRegistrationNonce(ctx context.Context) (string, error)
	// ConsumeRegistrationNonce uses up a nonce; ErrNotFound if it is
	// unknown, used or expired.
	ConsumeRegistrationNonce(ctx context.Context, nonce string) error
}

// LoginRequest is a password login.
type LoginRequest struct {
	UserID   string
	Password string
	DeviceRequest
}

// DeviceRequest asks for a device and access token for UserID.
type DeviceRequest struct {
	UserID      string
	DeviceID    string
	DisplayName string
	// IP is the client address, kept as the device's last-seen IP.
	IP string
}

// Session is what a client gets after logging in or registering.
type Session struct {
	UserID      string
	DeviceID    string
	AccessToken string
}

// Device is one of a user's logged-in devices.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	LastSeenIP  string
	// LastSeenTS is milliseconds since the epoch, 0 if unknown.
	LastSeenTS int64
}

// Profile is a user's public profile; empty fields are unset.
type Profile struct {
	DisplayName string
	AvatarURL   string
}

// OpenIDToken is the answer of client-server spec §"OpenID"
// (POST /user/{userId}/openid/request_token).
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// UIASession is one user-interactive authentication session.
type UIASession struct {
	ID        string
	Operation string
	// UserID is the account the operation acts on; "" for registration.
	UserID    string
	Completed []string
	// Result is what SetUIASessionResult recorded, "" until then.
	Result string
}

// Errors the user API returns.
var (
	// ErrUserInUse: the localpart belongs to an account, live or not.
	ErrUserInUse = errors.New("user ID already taken")
	// ErrInvalidCredentials: unknown user, deactivated user or wrong password.
	ErrInvalidCredentials = errors.New("invalid username or password")
	// ErrNotFound: no such user, device, token or session.
	ErrNotFound = errors.New("not found")
	// ErrInvalidUsername: the localpart or user ID breaks the grammar.
	ErrInvalidUsername = errors.New("invalid username")
	// ErrNotLocal: the user ID belongs to another server.
	ErrNotLocal = errors.New("user is not local to this server")
)
