package clientapi_test

import (
	"context"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestVersionsCapabilitiesOpenID(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), nil)
	resp := e.do(request{Method: "GET", Path: "/_matrix/client/versions"})
	expect(t, "versions", resp, 200, "")
	versions, _ := resp.Body["versions"].([]any)
	if len(versions) == 0 || versions[len(versions)-1] != "v1.12" || resp.Body["unstable_features"] == nil {
		t.Fatalf("versions %s", resp.Raw)
	}

	userID, _, token := e.register("alice", "password1")
	resp = e.do(request{Method: "GET", Path: "/_matrix/client/v3/capabilities", Token: token})
	expect(t, "capabilities", resp, 200, "")
	caps, _ := resp.Body["capabilities"].(map[string]any)
	rv, _ := caps["m.room_versions"].(map[string]any)
	available, _ := rv["available"].(map[string]any)
	if rv["default"] != e.cfg.Rooms.DefaultVersion || available["1"] != "stable" || available["11"] != "stable" {
		t.Fatalf("room versions %s", resp.Raw)
	}
	for name, want := range map[string]bool{"m.change_password": true, "m.set_displayname": true, "m.set_avatar_url": true, "m.3pid_changes": false} {
		if c, _ := caps[name].(map[string]any); c["enabled"] != want {
			t.Errorf("%s = %v, want enabled %v", name, caps[name], want)
		}
	}

	resp = e.do(request{Method: "POST", Path: "/_matrix/client/v3/user/" + userID + "/openid/request_token", Token: token, Body: map[string]any{}})
	expect(t, "openid", resp, 200, "")
	if resp.str("token_type") != "Bearer" || resp.str("matrix_server_name") != "test.local" || resp.Body["expires_in"] != float64(3600) {
		t.Fatalf("openid %s", resp.Raw)
	}
	if got, err := e.users.LookupOpenIDToken(context.Background(), resp.str("access_token")); err != nil || got != userID {
		t.Fatalf("LookupOpenIDToken = %q, %v", got, err)
	}
}
