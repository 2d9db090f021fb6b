package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"testing"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/testdb"
)

const adminRegisterPath = "/_synapse/admin/v1/register"

// synapseMAC computes the MAC the way Synapse's register_new_matrix_user does.
func synapseMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func TestSharedSecretRegistration(t *testing.T) {
	e := newAccountEnv(t, testdb.URL(t, "sqlite"), func(c *config.Config) {
		c.Registration.Enabled = false // the admin API works regardless
		c.Registration.SharedSecret = "s3cret"
	})
	nonce := func() string {
		resp := e.do(request{Method: "GET", Path: adminRegisterPath})
		expect(t, "nonce", resp, 200, "")
		return resp.str("nonce")
	}

	n := nonce()
	resp := e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": n, "username": "Admin", "password": "pw", "admin": true, "displayname": "The Admin",
		"mac": synapseMAC("s3cret", n, "Admin", "pw", true),
	}})
	expect(t, "register admin", resp, 200, "")
	if resp.str("user_id") != "@admin:test.local" || resp.str("home_server") != "test.local" || resp.str("device_id") == "" {
		t.Fatalf("answer %s", resp.Raw)
	}
	caller, err := e.users.VerifyAccessToken(t.Context(), resp.str("access_token"))
	if err != nil || !caller.Admin {
		t.Fatalf("caller %+v, %v: want an admin", caller, err)
	}
	if p := e.do(request{Method: "GET", Path: "/_matrix/client/v3/profile/@admin:test.local/displayname"}); p.str("displayname") != "The Admin" {
		t.Fatalf("displayname %s", p.Raw)
	}

	// A nonce is single-use.
	resp = e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": n, "username": "other", "password": "pw", "mac": synapseMAC("s3cret", n, "other", "pw", false),
	}})
	expect(t, "reused nonce", resp, 400, "M_UNKNOWN")

	// A MAC over different fields (here: admin flipped) is refused.
	n = nonce()
	resp = e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": n, "username": "sneaky", "password": "pw", "admin": true, "mac": synapseMAC("s3cret", n, "sneaky", "pw", false),
	}})
	expect(t, "wrong MAC", resp, 403, "M_FORBIDDEN")
	n = nonce()
	resp = e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": n, "username": "sneaky", "password": "pw", "mac": "not hex",
	}})
	expect(t, "malformed MAC", resp, 403, "M_FORBIDDEN")
	n = nonce()
	resp = e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": n, "username": "bad name", "password": "pw", "mac": synapseMAC("s3cret", n, "bad name", "pw", false),
	}})
	expect(t, "invalid username", resp, 400, "M_INVALID_USERNAME")
	n = nonce()
	resp = e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": n, "username": "admin", "password": "pw", "mac": synapseMAC("s3cret", n, "admin", "pw", false),
	}})
	expect(t, "taken username", resp, 400, "M_USER_IN_USE")
	expect(t, "missing mac", e.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{
		"nonce": nonce(), "username": "x", "password": "pw"}}), 400, "M_MISSING_PARAM")

	off := newAccountEnv(t, testdb.URL(t, "sqlite"), nil)
	expect(t, "disabled nonce", off.do(request{Method: "GET", Path: adminRegisterPath}), 403, "M_FORBIDDEN")
	expect(t, "disabled register", off.do(request{Method: "POST", Path: adminRegisterPath, Body: map[string]any{}}), 403, "M_FORBIDDEN")
}
