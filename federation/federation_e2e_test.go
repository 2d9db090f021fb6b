package federation_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/testserver"
)

// identity is a server's name and signing key, as a test signs with it.
type identity struct {
	name spec.ServerName
	key  signingkey.Key
}

func identityOf(t *testing.T, s *testserver.FederatedServer) identity {
	return identity{name: spec.ServerName(s.ServerName), key: s.SigningKeys(t).Current}
}

// signedRequest builds a federation request to dest signed by id
// (server-server spec §"Request Authentication").
func signedRequest(t testing.TB, id identity, dest spec.ServerName, method, path string, body any) *http.Request {
	t.Helper()
	fr := fclient.NewFederationRequest(method, id.name, dest, path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(id.name, gomatrixserverlib.KeyID(id.key.ID), id.key.PrivateKey); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme = "https"
	return req
}

// do sends req with the CA-trusting client and returns status and body.
func do(t testing.TB, ca *testserver.CA, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := ca.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func errcode(body []byte) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Errcode
}

// getKeys fetches and checks a server's self-signed key response.
func getKeys(t *testing.T, ca *testserver.CA, s *testserver.FederatedServer) gomatrixserverlib.ServerKeys {
	t.Helper()
	req, _ := http.NewRequest("GET", s.FederationURL+"/_matrix/key/v2/server", nil)
	status, body := do(t, ca, req)
	if status != http.StatusOK {
		t.Fatalf("GET keys of %s: %d %s", s.ServerName, status, body)
	}
	var keys gomatrixserverlib.ServerKeys
	if err := json.Unmarshal(body, &keys); err != nil {
		t.Fatal(err)
	}
	if checks, _ := gomatrixserverlib.CheckKeys(spec.ServerName(s.ServerName), time.Now(), keys); !checks.AllChecksOK {
		t.Fatalf("key response of %s fails checks: %+v\n%s", s.ServerName, checks, body)
	}
	return keys
}

func TestKeysNotaryAndRequestAuth(t *testing.T) {
	ca := testserver.NewCA(t)
	c := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	d := testserver.StartFederated(t, ca, testserver.Options{})
	a := testserver.StartFederated(t, ca, testserver.Options{Env: map[string]string{"PARLEY_FEDERATION_NOTARY_SERVERS": c.ServerName}})
	ctx := context.Background()

	bKeys := getKeys(t, ca, b)
	bID := identityOf(t, b)
	if _, ok := bKeys.VerifyKeys[gomatrixserverlib.KeyID(bID.key.ID)]; !ok {
		t.Fatalf("B publishes %v, not its key %s", bKeys.VerifyKeys, bID.key.ID)
	}
	if time.Until(bKeys.ValidUntilTS.Time()) < 24*time.Hour {
		t.Fatalf("valid_until_ts %v is too soon", bKeys.ValidUntilTS.Time())
	}

	req, _ := http.NewRequest("GET", a.FederationURL+"/_matrix/federation/v1/version", nil)
	if status, body := do(t, ca, req); status != 200 || !strings.Contains(string(body), `"name":"Parley"`) {
		t.Fatalf("version: %d %s", status, body)
	}

	alice := a.RegisterUser(t, "alice")
	if err := alice.SetDisplayName(ctx, "Alice A"); err != nil {
		t.Fatal(err)
	}
	aName := spec.ServerName(a.ServerName)
	profilePath := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(alice.UserID.String())

	// B signs a request; A fetches B's key directly and lets it through.
	status, body := do(t, ca, signedRequest(t, bID, aName, "GET", profilePath, nil))
	if status != 200 || !strings.Contains(string(body), `"displayname":"Alice A"`) {
		t.Fatalf("signed profile query: %d %s", status, body)
	}
	status, body = do(t, ca, signedRequest(t, bID, aName, "GET", "/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape("@nobody:"+a.ServerName), nil))
	if status != 404 || errcode(body) != "M_NOT_FOUND" {
		t.Fatalf("profile of unknown user: %d %s", status, body)
	}

	_, forgedKey, _ := ed25519.GenerateKey(nil)
	unreachable := identity{name: "127.0.0.1:1", key: signingkey.Key{ID: "ed25519:x", PrivateKey: forgedKey}}
	rejections := map[string]func() *http.Request{
		"missing X-Matrix": func() *http.Request {
			r, _ := http.NewRequest("GET", a.FederationURL+profilePath, nil)
			return r
		},
		"forged signature with B's key ID": func() *http.Request {
			return signedRequest(t, identity{name: bID.name, key: signingkey.Key{ID: bID.key.ID, PrivateKey: forgedKey}}, aName, "GET", profilePath, nil)
		},
		"unknown key ID": func() *http.Request {
			return signedRequest(t, identity{name: bID.name, key: signingkey.Key{ID: "ed25519:unknown", PrivateKey: forgedKey}}, aName, "GET", profilePath, nil)
		},
		"wrong destination": func() *http.Request {
			r := signedRequest(t, bID, spec.ServerName(c.ServerName), "GET", profilePath, nil)
			r.URL.Host, r.Host = a.ServerName, a.ServerName
			return r
		},
		"signed for another path": func() *http.Request {
			r := signedRequest(t, bID, aName, "GET", profilePath+"&field=displayname", nil)
			r.URL, _ = url.Parse(a.FederationURL + profilePath)
			return r
		},
		"malformed header": func() *http.Request {
			r, _ := http.NewRequest("GET", a.FederationURL+profilePath, nil)
			r.Header.Set("Authorization", `X-Matrix origin="`+b.ServerName+`",key="ed25519:1`)
			return r
		},
		"unreachable origin": func() *http.Request {
			return signedRequest(t, unreachable, aName, "GET", profilePath, nil)
		},
	}
	for name, mk := range rejections {
		status, body := do(t, ca, mk())
		if status != http.StatusUnauthorized || errcode(body) != "M_UNAUTHORIZED" {
			t.Errorf("%s: got %d %s, want 401 M_UNAUTHORIZED", name, status, body)
		}
	}

	// Transactions that break the spec's shape are refused whole.
	sendPath := "/_matrix/federation/v1/send/t1"
	tooMany := make([]json.RawMessage, 51)
	for i := range tooMany {
		tooMany[i] = json.RawMessage(`{"room_id":"!r:x"}`)
	}
	for name, c := range map[string]struct {
		req  *http.Request
		code string
	}{
		"51 PDUs": {signedRequest(t, bID, aName, "PUT", sendPath, map[string]any{"pdus": tooMany}), "M_BAD_JSON"},
		"no pdus": {signedRequest(t, bID, aName, "PUT", sendPath, map[string]any{"edus": []any{}}), "M_BAD_JSON"},
		"not JSON": {func() *http.Request {
			r := signedRequest(t, bID, aName, "PUT", sendPath, map[string]any{"pdus": []any{}})
			r.Body = io.NopCloser(strings.NewReader("{not json"))
			r.ContentLength = -1
			return r
		}(), "M_NOT_JSON"},
	} {
		status, body := do(t, ca, c.req)
		if status != http.StatusBadRequest || errcode(body) != c.code {
			t.Errorf("%s: got %d %s, want 400 %s", name, status, body, c.code)
		}
	}
	status, body = do(t, ca, signedRequest(t, bID, aName, "PUT", "/_matrix/federation/v1/send/t2", map[string]any{"pdus": []any{}}))
	if status != 200 || strings.TrimSpace(string(body)) != `{"pdus":{}}` {
		t.Fatalf("empty transaction: %d %s", status, body)
	}

	// C as a notary: B's keys come back signed by B and by C.
	q, _ := json.Marshal(map[string]any{"server_keys": map[string]any{b.ServerName: map[string]any{}, d.ServerName: map[string]any{}}})
	req, _ = http.NewRequest("POST", c.FederationURL+"/_matrix/key/v2/query", bytes.NewReader(q))
	status, body = do(t, ca, req)
	if status != 200 {
		t.Fatalf("notary query: %d %s", status, body)
	}
	var notary struct {
		ServerKeys []gomatrixserverlib.ServerKeys `json:"server_keys"`
	}
	if err := json.Unmarshal(body, &notary); err != nil || len(notary.ServerKeys) != 2 {
		t.Fatalf("notary answer: %v %s", err, body)
	}
	cKeys := getKeys(t, ca, c)
	for _, sk := range notary.ServerKeys {
		if checks, _ := gomatrixserverlib.CheckKeys(sk.ServerName, time.Now(), sk); !checks.AllChecksOK {
			t.Fatalf("notary response for %s lost its self-signature", sk.ServerName)
		}
		verified := false
		for id, k := range cKeys.VerifyKeys {
			if gomatrixserverlib.VerifyJSON(c.ServerName, id, ed25519.PublicKey(k.Key), sk.Raw) == nil {
				verified = true
			}
		}
		if !verified {
			t.Fatalf("notary response for %s not signed by the notary", sk.ServerName)
		}
	}

	// D goes away. A has never seen D's key and cannot fetch it, but its
	// notary C cached it above: a request signed as D still verifies on A.
	// B, with no notary, cannot verify it.
	dID := identityOf(t, d)
	d.Kill()
	status, body = do(t, ca, signedRequest(t, dID, aName, "GET", profilePath, nil))
	if status != 200 {
		t.Fatalf("request from D (down) via notary: %d %s", status, body)
	}
	bobPath := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape("@x:"+b.ServerName)
	status, body = do(t, ca, signedRequest(t, dID, spec.ServerName(b.ServerName), "GET", bobPath, nil))
	if status != http.StatusUnauthorized {
		t.Fatalf("B without notary accepted D's request: %d %s", status, body)
	}
}

func TestKeyRotation(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	before := getKeys(t, ca, a)
	if len(before.VerifyKeys) != 1 || len(before.OldVerifyKeys) != 0 {
		t.Fatalf("fresh server keys: %+v", before.ServerKeyFields)
	}
	var oldID gomatrixserverlib.KeyID
	for id := range before.VerifyKeys {
		oldID = id
	}
	rotatedAt := time.Now()
	a.RunCommand(t, "generate-keys")
	after := getKeys(t, ca, a)
	if _, still := after.VerifyKeys[oldID]; still || len(after.VerifyKeys) != 1 {
		t.Fatalf("after rotation verify_keys = %v, old key %s should be gone", after.VerifyKeys, oldID)
	}
	old, ok := after.OldVerifyKeys[oldID]
	if !ok {
		t.Fatalf("after rotation old_verify_keys = %v, want %s", after.OldVerifyKeys, oldID)
	}
	if !bytes.Equal(old.Key, before.VerifyKeys[oldID].Key) {
		t.Fatal("old key changed")
	}
	if exp := old.ExpiredTS.Time(); exp.Before(rotatedAt.Add(-time.Minute)) || exp.After(time.Now()) {
		t.Fatalf("expired_ts %v not at the rotation (%v)", exp, rotatedAt)
	}
}
