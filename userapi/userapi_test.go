package userapi

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/userapi/api"
)

func openService(t *testing.T, dbURL string) *Service {
	t.Helper()
	db, err := sqlutil.Open(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := config.Default()
	cfg.ServerName = "example.org"
	cfg.Accounts.BcryptCost = 4
	s, err := Open(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func wantUnknownToken(t *testing.T, s *Service, token string) {
	t.Helper()
	_, err := s.VerifyAccessToken(context.Background(), token)
	var me *httputil.Error
	if !errors.As(err, &me) || me.Status != 401 || me.Code != "M_UNKNOWN_TOKEN" || me.Extra["soft_logout"] != false {
		t.Fatalf("VerifyAccessToken(%q) = %v, want 401 M_UNKNOWN_TOKEN soft_logout=false", token, err)
	}
}

func TestAccountsAndTokens(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)

		userID, err := s.CreateAccount(ctx, "alice", "secret-password", true)
		if err != nil || userID != "@alice:example.org" {
			t.Fatalf("CreateAccount = %q, %v", userID, err)
		}
		if _, err := s.CreateAccount(ctx, "alice", "other", false); !errors.Is(err, api.ErrUserInUse) {
			t.Fatalf("duplicate CreateAccount: %v, want ErrUserInUse", err)
		}
		if _, err := s.CreateAccount(ctx, "Bad!", "x", false); !errors.Is(err, api.ErrInvalidUsername) {
			t.Fatalf("invalid localpart: %v, want ErrInvalidUsername", err)
		}
		if free, err := s.IsLocalpartAvailable(ctx, "alice"); err != nil || free {
			t.Fatalf("alice available = %v, %v", free, err)
		}
		if free, err := s.IsLocalpartAvailable(ctx, "bob"); err != nil || !free {
			t.Fatalf("bob available = %v, %v", free, err)
		}

		if _, err := s.Login(ctx, api.LoginRequest{UserID: userID, Password: "wrong"}); !errors.Is(err, api.ErrInvalidCredentials) {
			t.Fatalf("wrong password: %v", err)
		}
		if _, err := s.Login(ctx, api.LoginRequest{UserID: "@nobody:example.org", Password: "x"}); !errors.Is(err, api.ErrInvalidCredentials) {
			t.Fatalf("unknown user: %v", err)
		}
		sess, err := s.Login(ctx, api.LoginRequest{UserID: userID, Password: "secret-password",
			DeviceRequest: api.DeviceRequest{DeviceID: "PHONE", DisplayName: "My phone", IP: "10.0.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if sess.DeviceID != "PHONE" || len(sess.AccessToken) < 40 {
			t.Fatalf("session %+v", sess)
		}
		caller, err := s.VerifyAccessToken(ctx, sess.AccessToken)
		if err != nil || caller != (httputil.Caller{UserID: userID, DeviceID: "PHONE", Admin: true}) {
			t.Fatalf("VerifyAccessToken = %+v, %v", caller, err)
		}
		wantUnknownToken(t, s, sess.AccessToken+"x")

		// Logging in again with the same device ID replaces its token but
		// keeps the device and its name.
		sess2, err := s.Login(ctx, api.LoginRequest{UserID: userID, Password: "secret-password",
			DeviceRequest: api.DeviceRequest{DeviceID: "PHONE"}})
		if err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, sess.AccessToken)
		if _, err := s.VerifyAccessToken(ctx, sess2.AccessToken); err != nil {
			t.Fatal(err)
		}
		d, err := s.GetDevice(ctx, userID, "PHONE")
		if err != nil || d.DisplayName != "My phone" {
			t.Fatalf("GetDevice = %+v, %v", d, err)
		}

		// A device without an ID gets a random one.
		laptop, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: userID, DisplayName: "Laptop"})
		if err != nil || len(laptop.DeviceID) != 10 {
			t.Fatalf("CreateDevice = %+v, %v", laptop, err)
		}
		devices, err := s.ListDevices(ctx, userID)
		if err != nil || len(devices) != 2 {
			t.Fatalf("ListDevices = %+v, %v", devices, err)
		}

		if err := s.Logout(ctx, userID, "PHONE"); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, sess2.AccessToken)
		if _, err := s.GetDevice(ctx, userID, "PHONE"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("logged-out device: %v", err)
		}
		if _, err := s.VerifyAccessToken(ctx, laptop.AccessToken); err != nil {
			t.Fatalf("other device logged out too: %v", err)
		}
		if err := s.LogoutAll(ctx, userID); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, laptop.AccessToken)
	})
}

func TestPasswordChangeAndDeactivation(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		userID, err := s.CreateAccount(ctx, "bob", "first-password", false)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := s.CreateDevice(ctx, api.DeviceRequest{UserID: userID, DeviceID: "A"})
		b, _ := s.CreateDevice(ctx, api.DeviceRequest{UserID: userID, DeviceID: "B"})
		if err := s.SetPassword(ctx, userID, "second-password", true, "A"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.VerifyAccessToken(ctx, a.AccessToken); err != nil {
			t.Fatalf("kept device logged out: %v", err)
		}
		wantUnknownToken(t, s, b.AccessToken)
		if err := s.CheckPassword(ctx, userID, "first-password"); !errors.Is(err, api.ErrInvalidCredentials) {
			t.Fatalf("old password still works: %v", err)
		}
		if err := s.CheckPassword(ctx, userID, "second-password"); err != nil {
			t.Fatal(err)
		}
		// bcrypt reads only 72 bytes; passwords differing after that must differ.
		long := string(make([]byte, 100))
		if err := s.SetPassword(ctx, userID, long+"x", false, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.CheckPassword(ctx, userID, long+"y"); !errors.Is(err, api.ErrInvalidCredentials) {
			t.Fatalf("password compared only by prefix: %v", err)
		}

		if err := s.SetDisplayName(ctx, userID, "Bob"); err != nil {
			t.Fatal(err)
		}
		if err := s.Deactivate(ctx, userID); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, a.AccessToken)
		if err := s.CheckPassword(ctx, userID, long+"x"); !errors.Is(err, api.ErrInvalidCredentials) {
			t.Fatalf("deactivated user can log in: %v", err)
		}
		if _, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: userID}); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("device for deactivated user: %v", err)
		}
		if p, err := s.GetProfile(ctx, userID); err != nil || p.DisplayName != "" {
			t.Fatalf("profile after deactivation = %+v, %v", p, err)
		}
		if free, _ := s.IsLocalpartAvailable(ctx, "bob"); free {
			t.Fatal("deactivated localpart is available again")
		}
		if err := s.SetPassword(ctx, userID, "again", false, ""); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("SetPassword on deactivated account: %v", err)
		}
	})
}

func TestProfilesOpenIDSessionsNonces(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		clock := time.Unix(1_700_000_000, 0)
		s.now = func() time.Time { return clock }
		userID, err := s.CreateAccount(ctx, "carol", "", false)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CheckPassword(ctx, userID, ""); !errors.Is(err, api.ErrInvalidCredentials) {
			t.Fatalf("account without password accepts the empty one: %v", err)
		}

		if err := s.SetDisplayName(ctx, userID, "Carol"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetAvatarURL(ctx, userID, "mxc://example.org/abc"); err != nil {
			t.Fatal(err)
		}
		p, err := s.GetProfile(ctx, userID)
		if err != nil || *p != (api.Profile{DisplayName: "Carol", AvatarURL: "mxc://example.org/abc"}) {
			t.Fatalf("GetProfile = %+v, %v", p, err)
		}
		for _, id := range []string{"@nobody:example.org", "@carol:elsewhere.org", "carol"} {
			if _, err := s.GetProfile(ctx, id); !errors.Is(err, api.ErrNotFound) {
				t.Errorf("GetProfile(%q): %v, want ErrNotFound", id, err)
			}
		}
		if err := s.SetDisplayName(ctx, "@nobody:example.org", "x"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("SetDisplayName unknown user: %v", err)
		}

		tok, err := s.CreateOpenIDToken(ctx, userID)
		if err != nil || tok.TokenType != "Bearer" || tok.ExpiresIn != 3600 || tok.MatrixServerName != "example.org" {
			t.Fatalf("CreateOpenIDToken = %+v, %v", tok, err)
		}
		if got, err := s.LookupOpenIDToken(ctx, tok.AccessToken); err != nil || got != userID {
			t.Fatalf("LookupOpenIDToken = %q, %v", got, err)
		}
		clock = clock.Add(time.Hour + time.Second)
		if _, err := s.LookupOpenIDToken(ctx, tok.AccessToken); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("expired OpenID token: %v", err)
		}

		sess, err := s.CreateUIASession(ctx, "password", userID)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // completing a stage twice is harmless
			if sess, err = s.CompleteUIAStage(ctx, sess.ID, "m.login.password"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SetUIASessionResult(ctx, sess.ID, "done"); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetUIASession(ctx, sess.ID)
		if err != nil || got.Operation != "password" || got.UserID != userID || len(got.Completed) != 1 || got.Result != "done" {
			t.Fatalf("GetUIASession = %+v, %v", got, err)
		}
		if err := s.DeleteUIASession(ctx, sess.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetUIASession(ctx, sess.ID); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("deleted session: %v", err)
		}
		if err := s.SetUIASessionResult(ctx, sess.ID, "x"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("result of deleted session: %v", err)
		}
		old, _ := s.CreateUIASession(ctx, "register", "")
		clock = clock.Add(uiaSessionLifetime + time.Second)
		if _, err := s.CompleteUIAStage(ctx, old.ID, "m.login.dummy"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("expired session: %v", err)
		}

		nonce, err := s.CreateRegistrationNonce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ConsumeRegistrationNonce(ctx, nonce); err != nil {
			t.Fatal(err)
		}
		if err := s.ConsumeRegistrationNonce(ctx, nonce); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("nonce used twice: %v", err)
		}
		stale, _ := s.CreateRegistrationNonce(ctx)
		clock = clock.Add(nonceLifetime + time.Second)
		if err := s.ConsumeRegistrationNonce(ctx, stale); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("expired nonce: %v", err)
		}
	})
}

func TestLastSeenUpdatedOnVerify(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		clock := time.Unix(1_700_000_000, 0)
		s.now = func() time.Time { return clock }
		userID, _ := s.CreateAccount(ctx, "dave", "pw", false)
		sess, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: userID, DeviceID: "D", IP: "192.0.2.1"})
		if err != nil {
			t.Fatal(err)
		}
		clock = clock.Add(time.Hour)
		if _, err := s.VerifyAccessToken(ctx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
		d, _ := s.GetDevice(ctx, userID, "D")
		if d.LastSeenTS != clock.UnixMilli() || d.LastSeenIP != "192.0.2.1" {
			t.Fatalf("device %+v, want last seen %d", d, clock.UnixMilli())
		}
	})
}
