package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/parley-chat/parley/clientapi"
	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/userapi"
)

// accountEnv is the client API's account routes over a real user API on
// a fresh database, without a roomserver.
type accountEnv struct {
	t       testing.TB
	cfg     *config.Config
	users   *userapi.Service
	handler http.Handler
}

func newAccountEnv(t testing.TB, dbURL string, configure func(*config.Config)) *accountEnv {
	t.Helper()
	db, err := sqlutil.Open(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := config.Default()
	cfg.ServerName = "test.local"
	cfg.Accounts.BcryptCost = 4
	cfg.Registration.Enabled = true
	cfg.RateLimits.Enabled = false
	if configure != nil {
		configure(cfg)
	}
	users, err := userapi.Open(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := chi.NewRouter()
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNotFound) })
	clientapi.New(clientapi.Deps{Config: cfg, Users: users}).Register(r)
	return &accountEnv{t: t, cfg: cfg, users: users, handler: r}
}

// request describes one HTTP call; Body is sent as is when it is a string,
// JSON-encoded otherwise.
type request struct {
	Method, Path, Token string
	Body                any
	IP                  string
}

// response is a decoded JSON answer.
type response struct {
	Status int
	Body   map[string]any
	Raw    string
}

func (r response) str(key string) string { s, _ := r.Body[key].(string); return s }

func (e *accountEnv) do(req request) response {
	e.t.Helper()
	var body io.Reader = http.NoBody
	switch b := req.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	hr := httptest.NewRequest(req.Method, req.Path, body)
	if req.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.Token)
	}
	if req.IP != "" {
		hr.RemoteAddr = req.IP + ":4321"
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, hr)
	resp := response{Status: rec.Code, Raw: rec.Body.String()}
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &resp.Body); err != nil {
			e.t.Fatalf("%s %s: answer is not a JSON object: %q", req.Method, req.Path, rec.Body.String())
		}
	}
	return resp
}

// expect fails unless resp has the status and, if errcode is not "", that errcode.
func expect(t testing.TB, what string, resp response, status int, errcode string) {
	t.Helper()
	if resp.Status != status || resp.str("errcode") != errcode {
		t.Fatalf("%s: got %d %s, want %d %s", what, resp.Status, resp.Raw, status, errcode)
	}
}

// register creates an account through POST /register with the dummy stage
// and returns its user ID, device ID and access token.
func (e *accountEnv) register(localpart, password string) (userID, deviceID, token string) {
	e.t.Helper()
	resp := e.do(request{Method: "POST", Path: "/_matrix/client/v3/register", Body: map[string]any{
		"username": localpart, "password": password, "auth": map[string]any{"type": "m.login.dummy"},
	}})
	expect(e.t, "register "+localpart, resp, 200, "")
	return resp.str("user_id"), resp.str("device_id"), resp.str("access_token")
}

// login logs localpart in with a password and returns the device ID and
// access token.
func (e *accountEnv) login(localpart, password, deviceID string) (string, string) {
	e.t.Helper()
	resp := e.do(request{Method: "POST", Path: "/_matrix/client/v3/login", Body: map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password": password, "device_id": deviceID,
	}})
	expect(e.t, "login "+localpart, resp, 200, "")
	return resp.str("device_id"), resp.str("access_token")
}

// passwordAuth is an m.login.password auth dict for localpart.
func passwordAuth(localpart, password, session string) map[string]any {
	return map[string]any{
		"type": "m.login.password", "session": session, "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": localpart},
	}
}

// completeUIA sends body (without auth) to get a session, then again with
// an m.login.password stage for localpart, and returns the final answer.
func (e *accountEnv) completeUIA(method, path, token, localpart, password string, body map[string]any) response {
	e.t.Helper()
	first := e.do(request{Method: method, Path: path, Token: token, Body: body})
	expect(e.t, method+" "+path+" without auth", first, 401, "")
	if first.str("session") == "" || first.Body["flows"] == nil {
		e.t.Fatalf("%s %s: UIA challenge without session or flows: %s", method, path, first.Raw)
	}
	withAuth := map[string]any{"auth": passwordAuth(localpart, password, first.str("session"))}
	for k, v := range body {
		withAuth[k] = v
	}
	return e.do(request{Method: method, Path: path, Token: token, Body: withAuth})
}
