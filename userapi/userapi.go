// Package userapi implements the user API (userapi/api.UserAPI): accounts,
// passwords, devices and their access tokens, profiles, OpenID tokens and
// user-interactive authentication sessions, over its own tables.
package userapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/userapi/api"
	"github.com/parley-chat/parley/userapi/storage"
)

const (
	// accessTokenPrefix marks Parley access tokens so that a leaked one is
	// recognisable by secret scanners.
	accessTokenPrefix = "pa_"
	// openIDTokenLifetime is expires_in of OpenID tokens (client-server
	// spec §"OpenID").
	openIDTokenLifetime = time.Hour
	uiaSessionLifetime  = 30 * time.Minute
	nonceLifetime       = 5 * time.Minute
	// lastSeenGranularity bounds how often token verification writes a
	// device's last-seen time: at most once per interval per device, so a
	// busy client does not turn every request into a write.
	lastSeenGranularity = 5 * time.Minute
)

// Service is the in-process user API.
type Service struct {
	cfg   *config.Config
	store *storage.Storage
	now   func() time.Time

	dummyHashOnce sync.Once
	dummyHash     []byte

	keys keyState
	// tokens caches verified access tokens and keyCounts the devices'
	// one-time key counts (tokencache.go).
	tokens    *tokenCache
	keyCounts *keyCountCache
}

var _ api.UserAPI = (*Service)(nil)

// Open migrates the user API's tables in db and returns the service.
func Open(ctx context.Context, db *sqlutil.DB, cfg *config.Config) (*Service, error) {
	st, err := storage.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("open user API storage: %w", err)
	}
	return &Service{cfg: cfg, store: st, now: time.Now, keys: newKeyState(),
		tokens: newUserCache[[sha256.Size]byte, verifiedToken](), keyCounts: newUserCache[[2]string, api.OneTimeKeyCounts]()}, nil
}

func (s *Service) nowMS() int64 { return s.now().UnixMilli() }

// localUser checks that userID is a valid user ID of this server.
func (s *Service) localUser(userID string) error {
	_, err := api.LocalUserID(userID, s.cfg.ServerName)
	return err
}

// passwordInput is what bcrypt hashes: bcrypt reads at most 72 bytes and
// stops at NUL, so the password is first reduced to a fixed-length digest
// that keeps every byte of it significant.
func passwordInput(password string) []byte {
	sum := sha256.Sum256([]byte(password))
	return []byte(base64.StdEncoding.EncodeToString(sum[:]))
}

func (s *Service) hashPassword(password string) (string, error) {
	if password == "" {
		return "", nil
	}
	h, err := bcrypt.GenerateFromPassword(passwordInput(password), s.cfg.Accounts.BcryptCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CreateAccount implements api.UserAPI. The `parley create-account` command
// calls it directly; it is safe while a server uses the same database.
func (s *Service) CreateAccount(ctx context.Context, localpart, password string, admin bool) (string, error) {
	if err := api.ValidateNewLocalpart(localpart, s.cfg.ServerName); err != nil {
		return "", err
	}
	userID := "@" + localpart + ":" + s.cfg.ServerName
	hash, err := s.hashPassword(password)
	if err != nil {
		return "", err
	}
	err = s.store.CreateAccount(ctx, storage.Account{UserID: userID, PasswordHash: hash, Admin: admin, CreatedTS: s.nowMS()})
	if errors.Is(err, storage.ErrExists) {
		return "", api.ErrUserInUse
	}
	if err != nil {
		return "", err
	}
	return userID, nil
}

// IsLocalpartAvailable implements api.UserAPI.
func (s *Service) IsLocalpartAvailable(ctx context.Context, localpart string) (bool, error) {
	_, err := s.store.GetAccount(ctx, "@"+localpart+":"+s.cfg.ServerName)
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil
	}
	return false, err
}

// CheckPassword implements api.UserAPI. Unknown users cost a bcrypt
// comparison too, so response times do not reveal which accounts exist.
func (s *Service) CheckPassword(ctx context.Context, userID, password string) error {
	var hash []byte
	if s.localUser(userID) == nil {
		acc, err := s.store.GetAccount(ctx, userID)
		switch {
		case err == nil && !acc.Deactivated && acc.PasswordHash != "":
			hash = []byte(acc.PasswordHash)
		case err != nil && !errors.Is(err, storage.ErrNotFound):
			return err
		}
	}
	if hash == nil {
		_ = bcrypt.CompareHashAndPassword(s.dummyPasswordHash(), passwordInput(password))
		return api.ErrInvalidCredentials
	}
	if bcrypt.CompareHashAndPassword(hash, passwordInput(password)) != nil {
		return api.ErrInvalidCredentials
	}
	return nil
}

func (s *Service) dummyPasswordHash() []byte {
	s.dummyHashOnce.Do(func() {
		s.dummyHash, _ = bcrypt.GenerateFromPassword([]byte("parley timing equaliser"), s.cfg.Accounts.BcryptCost)
	})
	return s.dummyHash
}

// Login implements api.UserAPI.
func (s *Service) Login(ctx context.Context, req api.LoginRequest) (*api.Session, error) {
	if err := s.CheckPassword(ctx, req.UserID, req.Password); err != nil {
		return nil, err
	}
	req.DeviceRequest.UserID = req.UserID
	return s.CreateDevice(ctx, req.DeviceRequest)
}

// CreateDevice implements api.UserAPI.
func (s *Service) CreateDevice(ctx context.Context, req api.DeviceRequest) (*api.Session, error) {
	acc, err := s.store.GetAccount(ctx, req.UserID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && acc.Deactivated {
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	deviceID := req.DeviceID
	if deviceID == "" {
		deviceID = randomDeviceID()
	}
	token := accessTokenPrefix + randomString(32)
	err = s.store.UpsertDevice(ctx, storage.Device{
		UserID: req.UserID, DeviceID: deviceID, DisplayName: req.DisplayName,
		LastSeenIP: req.IP, LastSeenTS: s.nowMS(),
	}, hashToken(token))
	if err != nil {
		return nil, err
	}
	// A re-created device's old token no longer works.
	s.tokens.forgetUser(req.UserID)
	return &api.Session{UserID: req.UserID, DeviceID: deviceID, AccessToken: token}, nil
}

// VerifyAccessToken implements httputil.TokenVerifier with one indexed
// lookup, or none while the token is in the verified-token cache
// (tokencache.go). Unknown, logged-out and deactivated users' tokens all
// get M_UNKNOWN_TOKEN with soft_logout false (client-server spec §"Soft
// logout"): the client must log in again.
func (s *Service) VerifyAccessToken(ctx context.Context, token string) (httputil.Caller, error) {
	hash := [sha256.Size]byte(hashToken(token))
	now := s.now()
	cached, ok := s.tokens.get(hash, now)
	caller, lastSeen := cached.caller, cached.lastSeen
	if !ok {
		epoch := s.tokens.begin()
		owner, err := s.store.TokenOwner(ctx, hash[:])
		if errors.Is(err, storage.ErrNotFound) {
			e := httputil.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown access token")
			e.Extra = map[string]any{"soft_logout": false}
			return httputil.Caller{}, e
		}
		if err != nil {
			return httputil.Caller{}, err
		}
		caller, lastSeen = httputil.Caller{UserID: owner.UserID, DeviceID: owner.DeviceID, Admin: owner.Admin}, owner.LastSeenTS
		s.tokens.put(epoch, hash, caller.UserID, verifiedToken{caller: caller, lastSeen: lastSeen}, now)
	}
	if nowMS := now.UnixMilli(); nowMS-lastSeen > lastSeenGranularity.Milliseconds() {
		// Last-seen is informational; failing the request over it would
		// be worse than a stale timestamp.
		if err := s.store.TouchDevice(ctx, caller.UserID, caller.DeviceID, nowMS); err != nil {
			logrus.WithError(err).Warn("update device last seen")
		}
		s.tokens.modify(hash, func(v *verifiedToken) { v.lastSeen = nowMS })
	}
	return caller, nil
}

// Logout implements api.UserAPI.
func (s *Service) Logout(ctx context.Context, userID, deviceID string) error {
	return s.devicesRemoved(ctx, userID, s.store.DeleteDevices(ctx, userID, []string{deviceID}))
}

// LogoutAll implements api.UserAPI.
func (s *Service) LogoutAll(ctx context.Context, userID string) error {
	return s.devicesRemoved(ctx, userID, s.store.DeleteDevices(ctx, userID, nil))
}

// DeleteDevices implements api.UserAPI.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if deviceIDs == nil {
		deviceIDs = []string{}
	}
	return s.devicesRemoved(ctx, userID, s.store.DeleteDevices(ctx, userID, deviceIDs))
}

// ListDevices implements api.UserAPI.
func (s *Service) ListDevices(ctx context.Context, userID string) ([]api.Device, error) {
	ds, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]api.Device, len(ds))
	for i, d := range ds {
		out[i] = api.Device(d)
	}
	return out, nil
}

// GetDevice implements api.UserAPI.
func (s *Service) GetDevice(ctx context.Context, userID, deviceID string) (*api.Device, error) {
	d, err := s.store.GetDevice(ctx, userID, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, api.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := api.Device(*d)
	return &out, nil
}

// UpdateDevice implements api.UserAPI.
func (s *Service) UpdateDevice(ctx context.Context, userID, deviceID, displayName string) error {
	return mapNotFound(s.store.SetDeviceDisplayName(ctx, userID, deviceID, displayName))
}

// SetPassword implements api.UserAPI.
func (s *Service) SetPassword(ctx context.Context, userID, newPassword string, logoutDevices bool, keepDeviceID string) error {
	hash, err := s.hashPassword(newPassword)
	if err != nil {
		return err
	}
	return s.devicesRemoved(ctx, userID, mapNotFound(s.store.SetPassword(ctx, userID, hash, logoutDevices, keepDeviceID)))
}

// Deactivate implements api.UserAPI.
func (s *Service) Deactivate(ctx context.Context, userID string) error {
	return s.devicesRemoved(ctx, userID, mapNotFound(s.store.Deactivate(ctx, userID)))
}

// GetProfile implements api.UserAPI.
func (s *Service) GetProfile(ctx context.Context, userID string) (*api.Profile, error) {
	if err := s.localUser(userID); err != nil {
		return nil, api.ErrNotFound
	}
	name, avatar, err := s.store.GetProfile(ctx, userID)
	if err != nil {
		return nil, mapNotFound(err)
	}
	return &api.Profile{DisplayName: name, AvatarURL: avatar}, nil
}

// SetDisplayName implements api.UserAPI.
func (s *Service) SetDisplayName(ctx context.Context, userID, displayName string) error {
	return mapNotFound(s.store.SetProfileField(ctx, userID, "displayname", displayName))
}

// SetAvatarURL implements api.UserAPI.
func (s *Service) SetAvatarURL(ctx context.Context, userID, avatarURL string) error {
	return mapNotFound(s.store.SetProfileField(ctx, userID, "avatar_url", avatarURL))
}

// CreateOpenIDToken implements api.UserAPI. Only the token's hash is kept.
func (s *Service) CreateOpenIDToken(ctx context.Context, userID string) (*api.OpenIDToken, error) {
	token := randomString(32)
	now := s.now()
	if err := s.store.InsertOpenIDToken(ctx, hashToken(token), userID,
		now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return nil, err
	}
	return &api.OpenIDToken{
		AccessToken:      token,
		TokenType:        "Bearer",
		MatrixServerName: s.cfg.ServerName,
		ExpiresIn:        int64(openIDTokenLifetime / time.Second),
	}, nil
}

// LookupOpenIDToken implements api.UserAPI.
func (s *Service) LookupOpenIDToken(ctx context.Context, token string) (string, error) {
	userID, err := s.store.OpenIDTokenOwner(ctx, hashToken(token), s.nowMS())
	return userID, mapNotFound(err)
}

// CreateUIASession implements api.UserAPI.
func (s *Service) CreateUIASession(ctx context.Context, operation, userID string) (*api.UIASession, error) {
	sess := storage.UIASession{ID: randomString(24), Operation: operation, UserID: userID}
	now := s.now()
	if err := s.store.InsertUIASession(ctx, sess, now.Add(uiaSessionLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return nil, err
	}
	return &api.UIASession{ID: sess.ID, Operation: operation, UserID: userID, Completed: []string{}}, nil
}

// GetUIASession implements api.UserAPI.
func (s *Service) GetUIASession(ctx context.Context, sessionID string) (*api.UIASession, error) {
	sess, err := s.store.GetUIASession(ctx, sessionID, s.nowMS())
	if err != nil {
		return nil, mapNotFound(err)
	}
	out := api.UIASession(*sess)
	return &out, nil
}

// CompleteUIAStage implements api.UserAPI.
func (s *Service) CompleteUIAStage(ctx context.Context, sessionID, stage string) (*api.UIASession, error) {
	if _, err := s.GetUIASession(ctx, sessionID); err != nil {
		return nil, err
	}
	if err := s.store.AddUIAStage(ctx, sessionID, stage); err != nil {
		return nil, err
	}
	return s.GetUIASession(ctx, sessionID)
}

// SetUIASessionResult implements api.UserAPI.
func (s *Service) SetUIASessionResult(ctx context.Context, sessionID, result string) error {
	return mapNotFound(s.store.SetUIASessionResult(ctx, sessionID, result))
}

// DeleteUIASession implements api.UserAPI.
func (s *Service) DeleteUIASession(ctx context.Context, sessionID string) error {
	return s.store.DeleteUIASession(ctx, sessionID)
}

// CreateRegistrationNonce implements api.UserAPI.
func (s *Service) CreateRegistrationNonce(ctx context.Context) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	now := s.now()
	if err := s.store.InsertNonce(ctx, nonce, now.Add(nonceLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return "", err
	}
	return nonce, nil
}

// ConsumeRegistrationNonce implements api.UserAPI.
func (s *Service) ConsumeRegistrationNonce(ctx context.Context, nonce string) error {
	return mapNotFound(s.store.ConsumeNonce(ctx, nonce, s.nowMS()))
}

func mapNotFound(err error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return api.ErrNotFound
	}
	return err
}

// hashToken is how access and OpenID tokens are stored: a database leak
// must not hand out working tokens.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// randomString returns n random bytes (n >= 16 gives >= 128 bits) as
// unpadded base64url.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// randomDeviceID returns ten upper-case letters, the shape clients are used to.
func randomDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
