package clientapi_test

import (
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestChangePassword(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		_, _, token := e.register("alice", "old-password")
		_, other := e.login("alice", "old-password", "OTHER")
		path := "/_matrix/client/v3/account/password"

		// A wrong password fails the stage: 401 with the flows, the same
		// session and M_FORBIDDEN.
		first := e.do(request{Method: "POST", Path: path, Token: token, Body: map[string]any{"new_password": "new-password"}})
		expect(t, "no auth", first, 401, "")
		wrong := e.do(request{Method: "POST", Path: path, Token: token, Body: map[string]any{
			"new_password": "new-password", "auth": passwordAuth("alice", "nope", first.str("session")),
		}})
		expect(t, "wrong password", wrong, 401, "M_FORBIDDEN")
		if wrong.str("session") != first.str("session") || wrong.Body["flows"] == nil {
			t.Fatalf("failed stage answer lacks session or flows: %s", wrong.Raw)
		}
		ok := e.do(request{Method: "POST", Path: path, Token: token, Body: map[string]any{
			"new_password": "new-password", "auth": passwordAuth("alice", "old-password", first.str("session")),
		}})
		expect(t, "change password", ok, 200, "")

		// The requesting device stays; the other one is logged out.
		expect(t, "own device", e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: token}), 200, "")
		expect(t, "other device", e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: other}), 401, "M_UNKNOWN_TOKEN")
		resp := e.do(request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{
			"type": "m.login.password", "user": "alice", "password": "old-password"}})
		expect(t, "old password", resp, 403, "M_FORBIDDEN")
		_, third := e.login("alice", "new-password", "THIRD")

		// logout_devices: false keeps the other devices.
		resp = e.completeUIA("POST", path, token, "alice", "new-password", map[string]any{"new_password": "newer-password", "logout_devices": false})
		expect(t, "change without logout", resp, 200, "")
		expect(t, "kept device", e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: third}), 200, "")
	})
}

func TestDeactivate(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		userID, _, token := e.register("alice", "password1")
		expect(t, "set name", e.do(request{Method: "PUT", Path: "/_matrix/client/v3/profile/" + userID + "/displayname", Token: token,
			Body: map[string]any{"displayname": "Alice"}}), 200, "")

		resp := e.completeUIA("POST", "/_matrix/client/v3/account/deactivate", token, "alice", "password1", map[string]any{})
		expect(t, "deactivate", resp, 200, "")
		if resp.str("id_server_unbind_result") != "no-support" {
			t.Fatalf("deactivate answer %s", resp.Raw)
		}
		expect(t, "token after deactivation", e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: token}), 401, "M_UNKNOWN_TOKEN")
		expect(t, "login after deactivation", e.do(request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{
			"type": "m.login.password", "user": "alice", "password": "password1"}}), 403, "M_FORBIDDEN")
		expect(t, "name reuse", e.do(request{Method: "GET", Path: "/_matrix/client/v3/register/available?username=alice"}), 400, "M_USER_IN_USE")
		resp = e.do(request{Method: "GET", Path: "/_matrix/client/v3/profile/" + userID})
		expect(t, "profile after deactivation", resp, 200, "")
		if resp.Body["displayname"] != nil {
			t.Fatalf("profile kept after deactivation: %s", resp.Raw)
		}
	})
}
