package userapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/userapi/api"
)

// Every way of ending a token in this process takes effect on the very
// next request, although verified tokens are cached.
func TestCachedTokensEndImmediately(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		login := func(user, device string) string {
			t.Helper()
			sess, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: user, DeviceID: device})
			if err != nil {
				t.Fatal(err)
			}
			if c, err := s.VerifyAccessToken(ctx, sess.AccessToken); err != nil || c.UserID != user || c.DeviceID != sess.DeviceID {
				t.Fatalf("fresh token: %+v, %v", c, err)
			}
			if _, ok := s.tokens.get([32]byte(hashToken(sess.AccessToken)), s.now()); !ok {
				t.Fatal("a verified token is not cached")
			}
			return sess.AccessToken
		}
		user, err := s.CreateAccount(ctx, "alice", "password-one", false)
		if err != nil {
			t.Fatal(err)
		}

		tok := login(user, "A")
		if err := s.Logout(ctx, user, "A"); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, tok)

		a, b := login(user, "A"), login(user, "B")
		if err := s.DeleteDevices(ctx, user, []string{"B"}); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, b)
		if _, err := s.VerifyAccessToken(ctx, a); err != nil {
			t.Fatalf("a device that was not deleted: %v", err)
		}

		old := login(user, "C")
		login(user, "C") // the same device ID again: a new token replaces the old
		wantUnknownToken(t, s, old)

		a, b = login(user, "A"), login(user, "B")
		if err := s.LogoutAll(ctx, user); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, a)
		wantUnknownToken(t, s, b)

		a, b = login(user, "A"), login(user, "B")
		if err := s.SetPassword(ctx, user, "password-two", true, "A"); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, b)
		if _, err := s.VerifyAccessToken(ctx, a); err != nil {
			t.Fatalf("the device kept on password change: %v", err)
		}

		if err := s.Deactivate(ctx, user); err != nil {
			t.Fatal(err)
		}
		wantUnknownToken(t, s, a)
	})
}

// A change made behind this process's back (another process sharing the
// database) is seen once the cached entry expires, after at most a minute.
func TestCachedTokenExpires(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		now := time.Now()
		s.now = func() time.Time { return now }
		user, err := s.CreateAccount(ctx, "bob", "password", false)
		if err != nil {
			t.Fatal(err)
		}
		sess, err := s.CreateDevice(ctx, api.DeviceRequest{UserID: user, DeviceID: "D"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.VerifyAccessToken(ctx, sess.AccessToken); err != nil {
			t.Fatal(err)
		}
		if err := s.store.DeleteDevices(ctx, user, []string{"D"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.VerifyAccessToken(ctx, sess.AccessToken); err != nil {
			t.Fatalf("within the cache lifetime: %v", err)
		}
		now = now.Add(tokenCacheTTL + time.Second)
		wantUnknownToken(t, s, sess.AccessToken)
	})
}

// A lookup that read the database before a logout and finishes after it
// must not cache what it read.
func TestTokenLookupRacingALogoutIsNotCached(t *testing.T) {
	c := newUserCache[[32]byte, verifiedToken]()
	now := time.Now()
	hash := [32]byte(hashToken("tok"))
	v := verifiedToken{caller: httputil.Caller{UserID: "@u:x", DeviceID: "D"}}
	epoch := c.begin()
	c.forgetUser("@u:x")
	c.put(epoch, hash, "@u:x", v, now)
	if _, ok := c.get(hash, now); ok {
		t.Fatal("a lookup that raced an invalidation was cached")
	}
	c.put(c.begin(), hash, "@u:x", v, now)
	if _, ok := c.get(hash, now); !ok {
		t.Fatal("an undisturbed lookup was not cached")
	}
	if _, ok := c.get(hash, now.Add(tokenCacheTTL+time.Millisecond)); ok {
		t.Fatal("an expired entry was returned")
	}
	if len(c.entries) != 0 || len(c.byUser) != 0 || len(c.owner) != 0 {
		t.Fatalf("expired entry left behind: %d entries, %d users", len(c.entries), len(c.byUser))
	}
}

// A device's cached one-time key counts follow uploads, claims and the
// device's deletion at once.
func TestCachedKeyCountsFollowChanges(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		s := openService(t, dbURL)
		alice := newUserWithDevice(t, s, "alice", "A")
		count := func() int {
			t.Helper()
			c, err := s.OneTimeKeyCounts(ctx, alice, "A")
			if err != nil {
				t.Fatal(err)
			}
			return c.Counts["curve25519"]
		}
		upload := func(ids ...string) {
			t.Helper()
			otks := map[string]json.RawMessage{}
			for _, id := range ids {
				otks["curve25519:"+id] = json.RawMessage(`"key` + id + `"`)
			}
			if _, err := s.UploadKeys(ctx, &api.UploadKeysRequest{UserID: alice, DeviceID: "A", OneTimeKeys: otks}); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(); n != 0 {
			t.Fatalf("fresh device has %d keys", n)
		}
		upload("K1", "K2", "K3")
		if n := count(); n != 3 {
			t.Fatalf("after uploading 3: %d", n)
		}
		if _, err := s.ClaimKeys(ctx, &api.ClaimKeysRequest{OneTimeKeys: map[string]map[string]string{alice: {"A": "curve25519"}}}); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 2 {
			t.Fatalf("after a claim: %d", n)
		}
		upload("K4")
		if n := count(); n != 3 {
			t.Fatalf("after uploading one more: %d", n)
		}
		if err := s.DeleteDevices(ctx, alice, []string{"A"}); err != nil {
			t.Fatal(err)
		}
		if n := count(); n != 0 {
			t.Fatalf("after deleting the device: %d", n)
		}
	})
}
