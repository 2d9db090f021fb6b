package clientapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/testdb"
)

// accountEndpoint is one route of the account API with a body of the
// wrong shape for it.
type accountEndpoint struct {
	method, path string
	auth         bool
	// wrongTypes has a field of the wrong JSON type; "" if the route
	// reads no body.
	wrongTypes string
}

// TestAccountRoutesRejectBadInput sends every account route malformed
// JSON, wrongly typed fields, oversized bodies and missing or unknown
// access tokens, and checks each gets its Matrix error and never a 500.
func TestAccountRoutesRejectBadInput(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) {
		c.Client.MaxBodyBytes = 65536
		c.Registration.SharedSecret = "s3cret"
	})
	alice, device, token := e.register("alice", "password1")
	endpoints := []accountEndpoint{
		{"POST", "/_matrix/client/v3/login", false, `{"type": "m.login.password", "password": 5}`},
		{"POST", "/_matrix/client/v3/register", false, `{"username": ["alice"]}`},
		{"POST", "/_matrix/client/v3/logout", true, ""},
		{"POST", "/_matrix/client/v3/logout/all", true, ""},
		{"GET", "/_matrix/client/v3/account/whoami", true, ""},
		{"POST", "/_matrix/client/v3/account/password", true, `{"new_password": "password2", "logout_devices": "yes"}`},
		{"POST", "/_matrix/client/v3/account/deactivate", true, `{"auth": "password1"}`},
		{"GET", "/_matrix/client/v3/capabilities", true, ""},
		{"GET", "/_matrix/client/v3/devices", true, ""},
		{"GET", "/_matrix/client/v3/devices/" + device, true, ""},
		{"PUT", "/_matrix/client/v3/devices/" + device, true, `{"display_name": 7}`},
		{"DELETE", "/_matrix/client/v3/devices/" + device, true, `{"auth": {"type": 1}}`},
		{"POST", "/_matrix/client/v3/delete_devices", true, `{"devices": "ABC"}`},
		{"PUT", "/_matrix/client/v3/profile/" + alice + "/displayname", true, `{"displayname": 5}`},
		{"PUT", "/_matrix/client/v3/profile/" + alice + "/avatar_url", true, `{"avatar_url": {"url": "mxc://x/y"}}`},
		{"POST", "/_matrix/client/v3/user/" + alice + "/openid/request_token", true, `[]`},
		{"POST", "/_synapse/admin/v1/register", false, `{"nonce": "n", "username": "u", "password": "p", "mac": "m", "admin": "yes"}`},
	}
	oversize := `{"x": "` + strings.Repeat("a", 70000) + `"}`
	for _, ep := range endpoints {
		name := ep.method + " " + ep.path
		if ep.auth {
			expect(t, name+" without token", e.do(request{Method: ep.method, Path: ep.path}), 401, "M_MISSING_TOKEN")
			expect(t, name+" with unknown token", e.do(request{Method: ep.method, Path: ep.path, Token: "pa_nope"}), 401, "M_UNKNOWN_TOKEN")
		}
		if ep.wrongTypes == "" {
			continue
		}
		expect(t, name+" with malformed JSON", e.do(request{Method: ep.method, Path: ep.path, Token: token, Body: `{"a": `}), 400, "M_NOT_JSON")
		expect(t, name+" with wrong types", e.do(request{Method: ep.method, Path: ep.path, Token: token, Body: ep.wrongTypes}), 400, "M_BAD_JSON")
		expect(t, name+" oversized", e.do(request{Method: ep.method, Path: ep.path, Token: token, Body: oversize}), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	}
	// The token is still good: nothing above changed the account.
	expect(t, "whoami", e.do(request{Method: "GET", Path: "/_matrix/client/v3/account/whoami", Token: token}), 200, "")
}

// TestAccountRoutesRejectBadRequests covers the well-formed requests each
// route must refuse.
func TestAccountRoutesRejectBadRequests(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), nil)
	alice, device, token := e.register("alice", "password1")
	bob, _, bobToken := e.register("bob", "password2")
	longName := strings.Repeat("a", 250)
	pwSession := func(path, method string) string {
		return e.do(request{Method: method, Path: path, Token: token, Body: map[string]any{"new_password": "password3", "devices": []string{}}}).str("session")
	}

	cases := []struct {
		name    string
		req     request
		status  int
		errcode string
	}{
		// Login.
		{"login: unknown type", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.magic"}}, 400, "M_UNKNOWN"},
		{"login: no user", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password", "password": "x"}}, 400, "M_MISSING_PARAM"},
		{"login: third-party identifier", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "x"}}, 400, "M_UNKNOWN"},
		{"login: unknown user", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password", "user": "nobody", "password": "x"}}, 403, "M_FORBIDDEN"},
		{"login: remote user", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password", "user": "@alice:elsewhere", "password": "password1"}}, 403, "M_FORBIDDEN"},
		{"login: malformed user ID", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password", "user": "@alice", "password": "password1"}}, 403, "M_FORBIDDEN"},
		{"login: wrong password", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password", "user": "alice", "password": "x"}}, 403, "M_FORBIDDEN"},
		{"login: device ID too long", request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{"type": "m.login.password", "user": "alice", "password": "password1", "device_id": strings.Repeat("D", 300)}}, 400, "M_INVALID_PARAM"},

		// Registration.
		{"register: guest", request{Method: "POST", Path: "/_matrix/client/v3/register?kind=guest", Body: map[string]any{}}, 403, "M_GUEST_ACCESS_FORBIDDEN"},
		{"register: unknown kind", request{Method: "POST", Path: "/_matrix/client/v3/register?kind=robot", Body: map[string]any{}}, 400, "M_INVALID_PARAM"},
		{"register: bad character", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carol!", "password": "password1"}}, 400, "M_INVALID_USERNAME"},
		{"register: colon", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carol:x", "password": "password1"}}, 400, "M_INVALID_USERNAME"},
		{"register: non-ASCII", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carolé", "password": "password1"}}, 400, "M_INVALID_USERNAME"},
		{"register: too long", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": longName, "password": "password1"}}, 400, "M_INVALID_USERNAME"},
		{"register: in use", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "alice", "password": "password1"}}, 400, "M_USER_IN_USE"},
		{"register: in use, other case", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "ALICE", "password": "password1"}}, 400, "M_USER_IN_USE"},
		{"register: weak password", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carol", "password": "short"}}, 400, "M_WEAK_PASSWORD"},
		{"register: no password", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carol", "auth": map[string]any{"type": "m.login.dummy"}}}, 400, "M_MISSING_PARAM"},
		{"register: unknown stage", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carol", "password": "password1", "auth": map[string]any{"type": "m.login.email.identity"}}}, 400, "M_UNRECOGNIZED"},
		{"register: unknown session", request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{"username": "carol", "password": "password1", "auth": map[string]any{"type": "m.login.dummy", "session": "nope"}}}, 400, "M_UNKNOWN"},
		{"available: missing", request{Method: "GET", Path: "/_matrix/client/v3/register/available"}, 400, "M_MISSING_PARAM"},
		{"available: invalid", request{Method: "GET", Path: "/_matrix/client/v3/register/available?username=a%20b"}, 400, "M_INVALID_USERNAME"},
		{"available: taken", request{Method: "GET", Path: "/_matrix/client/v3/register/available?username=alice"}, 400, "M_USER_IN_USE"},
		{"available: taken, other case", request{Method: "GET", Path: "/_matrix/client/v3/register/available?username=Alice"}, 400, "M_USER_IN_USE"},
		{"token validity: missing", request{Method: "GET", Path: "/_matrix/client/v1/register/m.login.registration_token/validity"}, 400, "M_MISSING_PARAM"},

		// Password change and deactivation.
		{"password: missing", request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: token, Body: map[string]any{}}, 400, "M_MISSING_PARAM"},
		{"password: weak", request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: token, Body: map[string]any{"new_password": "x"}}, 400, "M_WEAK_PASSWORD"},
		{"password: wrong current password", request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: token, Body: map[string]any{
			"new_password": "password3", "auth": passwordAuth("alice", "wrong", "")}}, 401, "M_FORBIDDEN"},
		{"password: another user's password", request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: token, Body: map[string]any{
			"new_password": "password3", "auth": passwordAuth("bob", "password2", "")}}, 403, "M_FORBIDDEN"},
		{"password: session of another operation", request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: token, Body: map[string]any{
			"new_password": "password3", "auth": passwordAuth("alice", "password1", pwSession("/_matrix/client/v3/delete_devices", "POST"))}}, 400, "M_INVALID_PARAM"},
		{"password: session of another user", request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: bobToken, Body: map[string]any{
			"new_password": "password3", "auth": passwordAuth("bob", "password2", pwSession("/_matrix/client/v3/account/password", "POST"))}}, 400, "M_INVALID_PARAM"},
		{"deactivate: wrong password", request{Method: "POST", Path: "/_matrix/client/v3/account/deactivate", Token: token, Body: map[string]any{
			"auth": passwordAuth("alice", "wrong", "")}}, 401, "M_FORBIDDEN"},

		// Devices.
		{"device: unknown", request{Method: "GET", Path: "/_matrix/client/v3/devices/NOPE", Token: token}, 404, "M_NOT_FOUND"},
		{"device: another user's", request{Method: "GET", Path: "/_matrix/client/v3/devices/" + device, Token: bobToken}, 404, "M_NOT_FOUND"},
		{"device: rename unknown", request{Method: "PUT", Path: "/_matrix/client/v3/devices/NOPE", Token: token, Body: map[string]any{"display_name": "x"}}, 404, "M_NOT_FOUND"},
		{"device: name too long", request{Method: "PUT", Path: "/_matrix/client/v3/devices/" + device, Token: token, Body: map[string]any{"display_name": strings.Repeat("n", 1001)}}, 400, "M_INVALID_PARAM"},
		{"device: delete unknown", request{Method: "DELETE", Path: "/_matrix/client/v3/devices/NOPE", Token: token}, 404, "M_NOT_FOUND"},
		{"device: delete wrong password", request{Method: "DELETE", Path: "/_matrix/client/v3/devices/" + device, Token: token, Body: map[string]any{"auth": passwordAuth("alice", "wrong", "")}}, 401, "M_FORBIDDEN"},
		{"delete_devices: missing list", request{Method: "POST", Path: "/_matrix/client/v3/delete_devices", Token: token, Body: map[string]any{}}, 400, "M_MISSING_PARAM"},
		{"delete_devices: too many", request{Method: "POST", Path: "/_matrix/client/v3/delete_devices", Token: token, Body: map[string]any{"devices": make([]string, 1001)}}, 400, "M_INVALID_PARAM"},

		// Profiles.
		{"profile: unknown user", request{Method: "GET", Path: "/_matrix/client/v3/profile/@nobody:test.local"}, 404, "M_NOT_FOUND"},
		{"profile: remote user", request{Method: "GET", Path: "/_matrix/client/v3/profile/@alice:elsewhere.example"}, 404, "M_NOT_FOUND"},
		{"profile: malformed user ID", request{Method: "GET", Path: "/_matrix/client/v3/profile/alice"}, 400, "M_INVALID_PARAM"},
		{"displayname: unknown user", request{Method: "GET", Path: "/_matrix/client/v3/profile/@nobody:test.local/displayname"}, 404, "M_NOT_FOUND"},
		{"avatar_url: unknown user", request{Method: "GET", Path: "/_matrix/client/v3/profile/@nobody:test.local/avatar_url"}, 404, "M_NOT_FOUND"},
		{"displayname: someone else's", request{Method: "PUT", Path: "/_matrix/client/v3/profile/" + bob + "/displayname", Token: token, Body: map[string]any{"displayname": "Bobby"}}, 403, "M_FORBIDDEN"},
		{"avatar_url: someone else's", request{Method: "PUT", Path: "/_matrix/client/v3/profile/" + bob + "/avatar_url", Token: token, Body: map[string]any{"avatar_url": "mxc://x/y"}}, 403, "M_FORBIDDEN"},
		{"displayname: missing", request{Method: "PUT", Path: "/_matrix/client/v3/profile/" + alice + "/displayname", Token: token, Body: map[string]any{}}, 400, "M_MISSING_PARAM"},
		{"displayname: too long", request{Method: "PUT", Path: "/_matrix/client/v3/profile/" + alice + "/displayname", Token: token, Body: map[string]any{"displayname": strings.Repeat("x", 257)}}, 400, "M_INVALID_PARAM"},

		// OpenID.
		{"openid: another user", request{Method: "POST", Path: "/_matrix/client/v3/user/" + bob + "/openid/request_token", Token: token, Body: map[string]any{}}, 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		expect(t, c.name, e.do(c.req), c.status, c.errcode)
	}
	// None of the refused requests changed anything.
	e.login("alice", "password1", "")
	if _, err := e.users.GetDevice(t.Context(), alice, device); err != nil {
		t.Fatalf("device gone: %v", err)
	}
}

func TestLoginAndRegisterRateLimits(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) {
		c.RateLimits = config.RateLimits{Enabled: true, PerSecond: 0.001, Burst: 3}
	})
	login := func(ip, user string) response {
		return e.do(request{Method: "POST", Path: "/_matrix/client/v3/login", IP: ip, Body: map[string]any{
			"type": "m.login.password", "user": user, "password": "wrong"}})
	}
	// Per IP: the burst of three, then 429 with a wait.
	for i := range 3 {
		expect(t, "login within burst", login("192.0.2.1", []string{"a", "b", "c"}[i]), 403, "M_FORBIDDEN")
	}
	resp := login("192.0.2.1", "d")
	expect(t, "login past burst", resp, 429, "M_LIMIT_EXCEEDED")
	if ms, _ := resp.Body["retry_after_ms"].(float64); ms <= 0 {
		t.Fatalf("no retry_after_ms: %s", resp.Raw)
	}
	// Per user: three more IPs guessing one password.
	for _, ip := range []string{"192.0.2.2", "192.0.2.3", "192.0.2.4"} {
		expect(t, "login of one user", login(ip, "victim"), 403, "M_FORBIDDEN")
	}
	expect(t, "login of one user past burst", login("192.0.2.5", "victim"), 429, "M_LIMIT_EXCEEDED")
	expect(t, "other user from a fresh IP", login("192.0.2.6", "someone"), 403, "M_FORBIDDEN")

	// The password stage of UIA counts against the same per-user limit.
	_, _, token := e.register("guessed", "password1")
	for i := range 4 {
		resp := e.do(request{Method: "POST", Path: "/_matrix/client/v3/account/password", Token: token, IP: "203.0.113.1", Body: map[string]any{
			"new_password": "password2", "auth": passwordAuth("guessed", "wrong", "")}})
		if i < 3 {
			expect(t, "password stage within burst", resp, 401, "M_FORBIDDEN")
		} else {
			expect(t, "password stage past burst", resp, 429, "M_LIMIT_EXCEEDED")
		}
	}

	for range 3 {
		e.do(request{Method: "GET", Path: "/_matrix/client/v3/register/available?username=x", IP: "198.51.100.1"})
	}
	expect(t, "register past burst", e.do(request{Method: "POST", Path: "/_matrix/client/v3/register", IP: "198.51.100.1", Body: map[string]any{}}), 429, "M_LIMIT_EXCEEDED")
}
