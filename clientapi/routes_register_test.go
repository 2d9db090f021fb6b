package clientapi_test

import (
	"strings"
	"testing"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/testdb"
)

const registerPath = "/_matrix/client/v3/register"

func TestRegisterVariants(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), nil)

	// No username: a random localpart is picked.
	resp := e.do(request{Method: "POST", Path: registerPath, Body: map[string]any{
		"password": "password1", "auth": map[string]any{"type": "m.login.dummy"}, "initial_device_display_name": "Laptop",
	}})
	expect(t, "random username", resp, 200, "")
	if !strings.HasPrefix(resp.str("user_id"), "@") || !strings.HasSuffix(resp.str("user_id"), ":test.local") {
		t.Fatalf("random username answer %s", resp.Raw)
	}
	dev := e.do(request{Method: "GET", Path: "/_matrix/client/v3/devices/" + resp.str("device_id"), Token: resp.str("access_token")})
	if dev.str("display_name") != "Laptop" {
		t.Fatalf("initial_device_display_name not kept: %s", dev.Raw)
	}

	// Capitals are lowered, as Synapse does.
	resp = e.do(request{Method: "POST", Path: registerPath, Body: map[string]any{
		"username": "Carol", "password": "password1", "auth": map[string]any{"type": "m.login.dummy"},
	}})
	expect(t, "upper-case username", resp, 200, "")
	if resp.str("user_id") != "@carol:test.local" {
		t.Fatalf("upper-case username answer %s", resp.Raw)
	}

	// inhibit_login: an account but no device or token.
	resp = e.do(request{Method: "POST", Path: registerPath, Body: map[string]any{
		"username": "quiet", "password": "password1", "inhibit_login": true, "auth": map[string]any{"type": "m.login.dummy"},
	}})
	expect(t, "inhibit_login", resp, 200, "")
	if resp.str("user_id") != "@quiet:test.local" || resp.Body["access_token"] != nil || resp.Body["device_id"] != nil {
		t.Fatalf("inhibit_login answer %s", resp.Raw)
	}
	e.login("quiet", "password1", "")

	// The second registration of a name loses, before and after auth.
	expect(t, "taken name", e.do(request{Method: "POST", Path: registerPath, Body: map[string]any{"username": "quiet", "password": "password1"}}), 400, "M_USER_IN_USE")

	resp = e.do(request{Method: "GET", Path: registerPath + "/available?username=free.name"})
	if resp.Status != 200 || resp.Body["available"] != true {
		t.Fatalf("available %s", resp.Raw)
	}
}

func TestRegisterWithToken(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) {
		c.Registration.RequireToken = true
		c.Registration.Tokens = []string{"let-me-in"}
	})
	validity := "/_matrix/client/v1/register/m.login.registration_token/validity?token="
	if resp := e.do(request{Method: "GET", Path: validity + "let-me-in"}); resp.Status != 200 || resp.Body["valid"] != true {
		t.Fatalf("valid token: %s", resp.Raw)
	}
	if resp := e.do(request{Method: "GET", Path: validity + "nope"}); resp.Status != 200 || resp.Body["valid"] != false {
		t.Fatalf("invalid token: %s", resp.Raw)
	}

	body := map[string]any{"username": "alice", "password": "password1"}
	first := e.do(request{Method: "POST", Path: registerPath, Body: body})
	expect(t, "first", first, 401, "")
	if !strings.Contains(first.Raw, "m.login.registration_token") || strings.Contains(first.Raw, "m.login.dummy") {
		t.Fatalf("flows %s", first.Raw)
	}
	session := first.str("session")
	// The dummy stage is not offered, so it cannot be used.
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": session}
	expect(t, "dummy stage", e.do(request{Method: "POST", Path: registerPath, Body: body}), 400, "M_UNRECOGNIZED")
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "wrong", "session": session}
	resp := e.do(request{Method: "POST", Path: registerPath, Body: body})
	expect(t, "wrong token", resp, 401, "M_FORBIDDEN")
	if resp.str("session") != session || resp.Body["flows"] == nil {
		t.Fatalf("failed stage %s", resp.Raw)
	}
	body["auth"] = map[string]any{"type": "m.login.registration_token", "token": "let-me-in", "session": session}
	expect(t, "right token", e.do(request{Method: "POST", Path: registerPath, Body: body}), 200, "")
}

func TestRegistrationDisabled(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) { c.Registration.Enabled = false })
	expect(t, "register", e.do(request{Method: "POST", Path: registerPath, Body: map[string]any{
		"username": "alice", "password": "password1", "auth": map[string]any{"type": "m.login.dummy"}}}), 403, "M_FORBIDDEN")
	expect(t, "token validity", e.do(request{Method: "GET", Path: "/_matrix/client/v1/register/m.login.registration_token/validity?token=x"}), 403, "M_FORBIDDEN")
	// Accounts made by an admin can still log in.
	if _, err := e.users.CreateAccount(t.Context(), "alice", "password1", false); err != nil {
		t.Fatal(err)
	}
	e.login("alice", "password1", "")
}
