package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestProfiles(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		alice, _, token := e.register("alice", "password1")
		base := "/_matrix/client/v3/profile/" + alice

		resp := e.do(request{Method: "GET", Path: base})
		expect(t, "empty profile", resp, 200, "")
		if len(resp.Body) != 0 {
			t.Fatalf("empty profile %s", resp.Raw)
		}
		expect(t, "set name", e.do(request{Method: "PUT", Path: base + "/displayname", Token: token, Body: map[string]any{"displayname": "Alice"}}), 200, "")
		expect(t, "set avatar", e.do(request{Method: "PUT", Path: base + "/avatar_url", Token: token, Body: map[string]any{"avatar_url": "mxc://test.local/abc"}}), 200, "")

		// Escaped user IDs in the path work as well as plain ones.
		escaped := "/_matrix/client/v3/profile/" + url.PathEscape(alice)
		for _, p := range []string{base, escaped} {
			resp = e.do(request{Method: "GET", Path: p})
			if resp.Status != 200 || resp.str("displayname") != "Alice" || resp.str("avatar_url") != "mxc://test.local/abc" {
				t.Fatalf("GET %s: %s", p, resp.Raw)
			}
		}
		resp = e.do(request{Method: "GET", Path: base + "/displayname"})
		if resp.Status != 200 || resp.str("displayname") != "Alice" || resp.Body["avatar_url"] != nil {
			t.Fatalf("GET displayname: %s", resp.Raw)
		}
		resp = e.do(request{Method: "GET", Path: escaped + "/avatar_url"})
		if resp.Status != 200 || resp.str("avatar_url") != "mxc://test.local/abc" || resp.Body["displayname"] != nil {
			t.Fatalf("GET avatar_url: %s", resp.Raw)
		}

		// null removes a field.
		expect(t, "remove avatar", e.do(request{Method: "PUT", Path: base + "/avatar_url", Token: token, Body: `{"avatar_url": null}`}), 200, "")
		resp = e.do(request{Method: "GET", Path: base})
		if resp.Body["avatar_url"] != nil || resp.str("displayname") != "Alice" {
			t.Fatalf("after removal: %s", resp.Raw)
		}
	})
}
