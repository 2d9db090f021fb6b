package clientapi_test

import (
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

// fuzzAccountRoute sends arbitrary bodies to one unauthenticated route of
// a real server and fails on a 500 or a non-JSON answer (a panic fails the
// fuzz run by itself). The seeds run as part of go test.
func fuzzAccountRoute(f *testing.F, path string, seeds []string) {
	e := newAccountEnv(f, testdb.URL(f, "sqlite"), nil)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		e.t = t
		resp := e.do(request{Method: "POST", Path: path, Body: body})
		if resp.Status >= 500 {
			t.Fatalf("%s answered %d %s for %q", path, resp.Status, resp.Raw, body)
		}
		if resp.Status >= 400 && resp.Status != 401 && resp.str("errcode") == "" {
			t.Fatalf("%s answered %d without errcode for %q: %s", path, resp.Status, body, resp.Raw)
		}
	})
}

func FuzzRegisterRequest(f *testing.F) {
	fuzzAccountRoute(f, "/_matrix/client/v3/register", []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"username": 1}`,
		`{"username": "fuzz", "password": "password1"}`,
		`{"username": "fuzz2", "password": "password1", "auth": {"type": "m.login.dummy"}}`,
		`{"username": "fuzz3", "password": "password1", "auth": {"type": "m.login.dummy", "session": "x"}}`,
		`{"password": "password1", "auth": {"type": "m.login.dummy"}, "inhibit_login": true}`,
		`{"username": "Ünïcode", "password": "p"}`,
		`{"username": "a", "password": "password1", "device_id": "` + string(make([]byte, 300)) + `"}`,
		`{"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@:"}}}`,
		`{"auth": {"type": "m.login.registration_token", "token": null}}`,
		`{"username": "x", "auth": []}`,
	})
}

func FuzzDecodeLogin(f *testing.F) {
	fuzzAccountRoute(f, "/_matrix/client/v3/login", []string{
		``, `{}`, `[1]`, `{"type": "m.login.password"}`,
		`{"type": "m.login.password", "user": "alice", "password": "x"}`,
		`{"type": "m.login.password", "user": "@alice:test.local:8", "password": "x"}`,
		`{"type": "m.login.password", "user": "@", "password": "x"}`,
		`{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "@a:[::1"}, "password": "x"}`,
		`{"type": "m.login.password", "identifier": {"type": "m.id.phone"}}`,
		`{"type": "m.login.password", "identifier": null, "user": "` + string([]byte{0xff, 0xfe}) + `"}`,
		`{"type": "m.login.token", "token": "abc"}`,
		`{"type": "m.login.password", "user": "alice", "password": "x", "device_id": 5}`,
	})
}
