package httputil

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	cases := []struct {
		name, body string
		max        int64
		status     int
		code       string
	}{
		{"ok", `{"name":"a","count":2}`, 100, 0, ""},
		{"empty is {}", ``, 100, 0, ""},
		{"not json", `{"name":`, 100, 400, "M_NOT_JSON"},
		{"array", `[1,2]`, 100, 400, "M_BAD_JSON"},
		{"wrong type", `{"count":"two"}`, 100, 400, "M_BAD_JSON"},
		{"too large", `{"name":"` + strings.Repeat("x", 200) + `"}`, 100, 413, "M_TOO_LARGE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
			var v body
			err := DecodeJSON(r, c.max, &v)
			if c.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var me *Error
			if !errors.As(err, &me) || me.Status != c.status || me.Code != c.code {
				t.Fatalf("got %v, want %d %s", err, c.status, c.code)
			}
		})
	}
}

func TestWriteErrorHidesInternalErrors(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, httptest.NewRequest("GET", "/", nil), errors.New("database password is hunter2"))
	if w.Code != 500 || strings.Contains(w.Body.String(), "hunter2") {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	WriteError(w, httptest.NewRequest("GET", "/", nil), LimitExceeded(1500))
	var body map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	if w.Code != 429 || body["errcode"] != "M_LIMIT_EXCEEDED" || body["retry_after_ms"] != float64(1500) {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}

type fakeVerifier map[string]Caller

func (f fakeVerifier) VerifyAccessToken(_ context.Context, token string) (Caller, error) {
	if c, ok := f[token]; ok {
		return c, nil
	}
	return Caller{}, NewError(401, "M_UNKNOWN_TOKEN", "Unknown token")
}

func TestRequireAuth(t *testing.T) {
	h := RequireAuth(fakeVerifier{"good": {UserID: "@a:x", DeviceID: "D"}})(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, 200, map[string]string{"user_id": CallerFrom(r.Context()).UserID})
	}))
	cases := []struct {
		name   string
		setup  func(r *http.Request)
		status int
		code   string
	}{
		{"header", func(r *http.Request) { r.Header.Set("Authorization", "Bearer good") }, 200, ""},
		{"query", func(r *http.Request) { r.URL.RawQuery = "access_token=good" }, 200, ""},
		{"missing", func(r *http.Request) {}, 401, "M_MISSING_TOKEN"},
		{"not bearer", func(r *http.Request) { r.Header.Set("Authorization", "Basic Zm9v") }, 401, "M_MISSING_TOKEN"},
		{"unknown", func(r *http.Request) { r.Header.Set("Authorization", "Bearer bad") }, 401, "M_UNKNOWN_TOKEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			c.setup(r)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.status || (c.code != "" && !strings.Contains(w.Body.String(), c.code)) {
				t.Fatalf("got %d %s", w.Code, w.Body)
			}
		})
	}
}

func TestRateLimiter(t *testing.T) {
	l := NewRateLimiter(1, 2)
	if l.Allow("a") != nil || l.Allow("a") != nil {
		t.Fatal("burst of 2 should pass")
	}
	err := l.Allow("a")
	var me *Error
	if !errors.As(err, &me) || me.Code != "M_LIMIT_EXCEEDED" || me.Extra["retry_after_ms"].(int64) <= 0 {
		t.Fatalf("third call: %v", err)
	}
	if l.Allow("b") != nil {
		t.Fatal("keys are independent")
	}
	var nilLimiter *RateLimiter
	if nilLimiter.Allow("x") != nil {
		t.Fatal("nil limiter allows all")
	}
}

func TestRecoverAndCORS(t *testing.T) {
	h := Recover(CORS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") })))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != 500 || !strings.Contains(w.Body.String(), "M_UNKNOWN") || w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("got %d %s %v", w.Code, w.Body, w.Header())
	}
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("OPTIONS", "/", nil))
	if w.Code != 200 {
		t.Fatalf("preflight got %d", w.Code)
	}
}

// FuzzUnmarshalJSONObject: whatever arrives off the wire, decoding returns
// nil or a 4xx Matrix error, never panics.
func FuzzUnmarshalJSONObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, `[]`, `"x"`, `{"a":{"b":[1,2,{"c":null}]}}`, "\x00", `{"a":1e999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v struct {
			A int               `json:"a"`
			B map[string]any    `json:"b"`
			C []json.RawMessage `json:"c"`
		}
		err := UnmarshalJSONObject(data, &v)
		var me *Error
		if err != nil && (!errors.As(err, &me) || me.Status != 400) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func TestR0Alias(t *testing.T) {
	var got string
	h := R0Alias(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.Path }))
	for in, want := range map[string]string{
		"/_matrix/client/r0/login": "/_matrix/client/v3/login",
		"/_matrix/client/v3/login": "/_matrix/client/v3/login",
		"/_matrix/client/versions": "/_matrix/client/versions",
		"/_matrix/federation/r0/x": "/_matrix/federation/r0/x",
	} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", in, nil))
		if got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
}
