package clientapi_test

import (
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestRegisterLoginWhoamiLogout(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)

		// The first call without auth starts a UIA session.
		resp := e.do(request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "alice", "password": "correct horse"}})
		expect(t, "register without auth", resp, 401, "")
		session := resp.str("session")
		flows, _ := resp.Body["flows"].([]any)
		if session == "" || len(flows) != 1 || resp.Body["params"] == nil {
			t.Fatalf("UIA challenge %s", resp.Raw)
		}
		resp = e.do(request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{
			"username": "alice", "password": "correct horse", "device_id": "FIRST",
			"auth": map[string]any{"type": "m.login.dummy", "session": session},
		}})
		expect(t, "register with dummy stage", resp, 200, "")
		if resp.str("user_id") != "@alice:test.local" || resp.str("device_id") != "FIRST" || resp.str("access_token") == "" || resp.str("home_server") != "test.local" {
			t.Fatalf("register answer %s", resp.Raw)
		}
		// Repeating the completed request answers for the same account
		// with a new device; it cannot make a second account.
		repeat := e.do(request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{
			"username": "alice", "password": "correct horse", "auth": map[string]any{"type": "m.login.dummy", "session": session},
		}})
		expect(t, "repeated registration", repeat, 200, "")
		if repeat.str("user_id") != "@alice:test.local" || repeat.str("access_token") == resp.str("access_token") {
			t.Fatalf("repeated registration answer %s", repeat.Raw)
		}
		resp = e.do(request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{
			"username": "alice2", "password": "other password", "auth": map[string]any{"type": "m.login.dummy", "session": session},
		}})
		expect(t, "second account from one session", resp, 403, "M_FORBIDDEN")
		if free, _ := e.users.IsLocalpartAvailable(t.Context(), "alice2"); !free {
			t.Fatal("a used session registered a second account")
		}

		resp = e.do(request{Method: "GET", Path: "/_matrix/client/v3/login"})
		expect(t, "GET login", resp, 200, "")

		for _, ident := range []map[string]any{
			{"identifier": map[string]any{"type": "m.id.user", "user": "alice"}},
			{"identifier": map[string]any{"type": "m.id.user", "user": "@alice:test.local"}},
			{"identifier": map[string]any{"type": "m.id.user", "user": "ALICE"}},
			{"user": "alice"},
		} {
			body := map[string]any{"type": "m.login.password", "password": "correct horse", "initial_device_display_name": "phone"}
			for k, v := range ident {
				body[k] = v
			}
			resp = e.do(request{Method: "POST", Path: "/_matrix/client/v3/login", Body: body})
			expect(t, "login", resp, 200, "")
			token := resp.str("access_token")
			who := e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: token})
			expect(t, "whoami", who, 200, "")
			if who.str("user_id") != "@alice:test.local" || who.str("device_id") != resp.str("device_id") || who.Body["is_guest"] != false {
				t.Fatalf("whoami %s", who.Raw)
			}
			expect(t, "logout", e.do(request{Method: "POST", Path: "/_matrix/client/v3/logout", Token: token}), 200, "")
			expect(t, "whoami after logout", e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: token}), 401, "M_UNKNOWN_TOKEN")
		}

		resp = e.do(request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong",
		}})
		expect(t, "wrong password", resp, 403, "M_FORBIDDEN")
	})
}
