package clientapi_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/testdb"
)

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// sign signs obj as signer with the key named keyID and returns the
// signed object.
func sign(t *testing.T, obj any, signer, keyID string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID(keyID), priv, raw)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// testDevice is a device's ed25519 identity.
type testDevice struct {
	userID, deviceID string
	priv             ed25519.PrivateKey
}

func newTestDevice(userID, deviceID string) *testDevice {
	_, priv, _ := ed25519.GenerateKey(nil)
	return &testDevice{userID: userID, deviceID: deviceID, priv: priv}
}

func (d *testDevice) pub() string { return b64(d.priv.Public().(ed25519.PublicKey)) }

func (d *testDevice) unsignedKeys() map[string]any {
	return map[string]any{
		"user_id": d.userID, "device_id": d.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{
			"ed25519:" + d.deviceID:    d.pub(),
			"curve25519:" + d.deviceID: b64([]byte("curve25519 public key of " + d.deviceID)),
		},
	}
}

func (d *testDevice) deviceKeys(t *testing.T) map[string]any {
	return sign(t, d.unsignedKeys(), d.userID, "ed25519:"+d.deviceID, d.priv)
}

func (d *testDevice) otk(t *testing.T, n int) map[string]any {
	return sign(t, map[string]any{"key": b64(fmt.Appendf(nil, "otk %d of %s", n, d.deviceID))}, d.userID, "ed25519:"+d.deviceID, d.priv)
}

// crossSigningKey is a cross-signing key pair of a user.
type crossSigningKey struct {
	userID, usage string
	priv          ed25519.PrivateKey
}

func newCrossSigningKey(userID, usage string) *crossSigningKey {
	_, priv, _ := ed25519.GenerateKey(nil)
	return &crossSigningKey{userID: userID, usage: usage, priv: priv}
}

func (k *crossSigningKey) pub() string   { return b64(k.priv.Public().(ed25519.PublicKey)) }
func (k *crossSigningKey) keyID() string { return "ed25519:" + k.pub() }
func (k *crossSigningKey) object() map[string]any {
	return map[string]any{"user_id": k.userID, "usage": []string{k.usage}, "keys": map[string]string{k.keyID(): k.pub()}}
}

// signedBy returns k's object signed by signer (nil: unsigned).
func (k *crossSigningKey) signedBy(t *testing.T, signer *crossSigningKey) map[string]any {
	if signer == nil {
		return k.object()
	}
	return sign(t, k.object(), signer.userID, signer.keyID(), signer.priv)
}

func TestKeysUploadQueryClaim(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		alice, aliceDev, aliceTok := e.register("alice", "alice password")
		bob, _, bobTok := e.register("bob", "bob password")
		dev := newTestDevice(alice, aliceDev)
		upload := func(token string, body map[string]any) response {
			return e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/upload", Token: token, Body: body})
		}

		// Bad device keys are refused and nothing is stored.
		stranger := newTestDevice(alice, aliceDev)
		wrongSig := dev.unsignedKeys()
		wrongSig["signatures"] = stranger.deviceKeys(t)["signatures"]
		otherUser := newTestDevice(bob, aliceDev)
		otherDevice := newTestDevice(alice, "NOTMINE")
		for _, c := range []struct {
			name    string
			body    map[string]any
			errcode string
		}{
			{"unsigned", map[string]any{"device_keys": dev.unsignedKeys()}, "M_INVALID_SIGNATURE"},
			{"signed by another key", map[string]any{"device_keys": wrongSig}, "M_INVALID_SIGNATURE"},
			{"another user's", map[string]any{"device_keys": otherUser.deviceKeys(t)}, "M_INVALID_PARAM"},
			{"another device's", map[string]any{"device_keys": otherDevice.deviceKeys(t)}, "M_INVALID_PARAM"},
			{"not an object", map[string]any{"device_keys": []int{1}}, "M_BAD_JSON"},
			{"one-time key before device keys", map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": dev.otk(t, 0)}}, "M_INVALID_SIGNATURE"},
			{"malformed key ID", map[string]any{"device_keys": dev.deviceKeys(t), "one_time_keys": map[string]any{"nocolon": dev.otk(t, 0)}}, "M_INVALID_PARAM"},
			{"empty key ID part", map[string]any{"device_keys": dev.deviceKeys(t), "one_time_keys": map[string]any{"signed_curve25519:": dev.otk(t, 0)}}, "M_INVALID_PARAM"},
			{"unsigned signed_curve25519", map[string]any{"device_keys": dev.deviceKeys(t), "one_time_keys": map[string]any{"signed_curve25519:A": "abc"}}, "M_INVALID_SIGNATURE"},
			{"one-time key signed by another key", map[string]any{"device_keys": dev.deviceKeys(t), "one_time_keys": map[string]any{"signed_curve25519:A": stranger.otk(t, 0)}}, "M_INVALID_SIGNATURE"},
		} {
			expect(t, c.name, upload(aliceTok, c.body), 400, c.errcode)
		}
		empty := upload(aliceTok, map[string]any{})
		expect(t, "count", empty, 200, "")
		if fmt.Sprint(empty.Body["one_time_key_counts"]) != "map[signed_curve25519:0]" {
			t.Fatalf("after refused uploads: %s", empty.Raw)
		}

		resp := upload(aliceTok, map[string]any{
			"device_keys":   dev.deviceKeys(t),
			"one_time_keys": map[string]any{"signed_curve25519:A": dev.otk(t, 0), "signed_curve25519:B": dev.otk(t, 1), "signed_curve25519:C": dev.otk(t, 2)},
			"fallback_keys": map[string]any{"signed_curve25519:F": dev.otk(t, 99)},
		})
		expect(t, "upload", resp, 200, "")
		if fmt.Sprint(resp.Body["one_time_key_counts"]) != "map[signed_curve25519:3]" {
			t.Fatalf("counts = %s", resp.Raw)
		}
		// Re-uploading the same key ID with a different key is refused.
		expect(t, "conflicting one-time key", upload(aliceTok, map[string]any{
			"one_time_keys": map[string]any{"signed_curve25519:A": dev.otk(t, 5)}}), 400, "M_INVALID_PARAM")

		query := e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/query", Token: bobTok, Body: map[string]any{
			"device_keys": map[string]any{alice: []string{}, "@someone:elsewhere.example": []string{}},
		}})
		expect(t, "query", query, 200, "")
		var q struct {
			DeviceKeys map[string]map[string]struct {
				Keys map[string]string `json:"keys"`
			} `json:"device_keys"`
			Failures map[string]any `json:"failures"`
		}
		_ = json.Unmarshal([]byte(query.Raw), &q)
		got := q.DeviceKeys[alice][aliceDev]
		if got.Keys["ed25519:"+aliceDev] != dev.pub() {
			t.Fatalf("query = %s", query.Raw)
		}
		if q.Failures["elsewhere.example"] == nil {
			t.Fatalf("remote user without federation not in failures: %s", query.Raw)
		}
		expect(t, "query with a bad user ID", e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/query", Token: bobTok,
			Body: map[string]any{"device_keys": map[string]any{"alice": []string{}}}}), 400, "M_INVALID_PARAM")

		// Each one-time key is handed out once; then the fallback key,
		// again and again.
		claimed := map[string]bool{}
		for i := range 5 {
			c := e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/claim", Token: bobTok, Body: map[string]any{
				"one_time_keys": map[string]any{alice: map[string]string{aliceDev: "signed_curve25519", "UNKNOWN": "signed_curve25519"}},
			}})
			expect(t, "claim", c, 200, "")
			var cr struct {
				OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
			}
			_ = json.Unmarshal([]byte(c.Raw), &cr)
			if len(cr.OneTimeKeys[alice]) != 1 || len(cr.OneTimeKeys[alice][aliceDev]) != 1 {
				t.Fatalf("claim %d = %s", i, c.Raw)
			}
			for kid := range cr.OneTimeKeys[alice][aliceDev] {
				if i < 3 && claimed[kid] {
					t.Fatalf("key %s handed out twice", kid)
				}
				if i >= 3 && kid != "signed_curve25519:F" {
					t.Fatalf("claim %d after one-time keys ran out gave %s, want the fallback key", i, kid)
				}
				claimed[kid] = true
			}
		}
		var sync struct {
			Counts map[string]int `json:"one_time_key_counts"`
		}
		_ = json.Unmarshal([]byte(upload(aliceTok, map[string]any{}).Raw), &sync)
		if sync.Counts["signed_curve25519"] != 0 {
			t.Fatalf("counts after claims = %v", sync.Counts)
		}

		// A deleted device's keys are gone.
		_, phoneTok := e.login("alice", "alice password", "PHONE")
		phone := newTestDevice(alice, "PHONE")
		expect(t, "phone upload", upload(phoneTok, map[string]any{"device_keys": phone.deviceKeys(t)}), 200, "")
		expect(t, "delete phone", e.completeUIA("DELETE", "/_matrix/client/v3/devices/PHONE", aliceTok, "alice", "alice password", map[string]any{}), 200, "")
		query = e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/query", Token: bobTok, Body: map[string]any{
			"device_keys": map[string]any{alice: []string{}}}})
		_ = json.Unmarshal([]byte(query.Raw), &q)
		if _, ok := q.DeviceKeys[alice]["PHONE"]; ok || len(q.DeviceKeys[alice]) != 1 {
			t.Fatalf("keys after deleting PHONE = %s", query.Raw)
		}
	})
}

func TestCrossSigningAndSignatures(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		alice, aliceDev, aliceTok := e.register("alice", "alice password")
		bob, _, bobTok := e.register("bob", "bob password")
		dev := newTestDevice(alice, aliceDev)
		expect(t, "upload", e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/upload", Token: aliceTok,
			Body: map[string]any{"device_keys": dev.deviceKeys(t)}}), 200, "")

		const csPath = "/_matrix/client/v3/keys/device_signing/upload"
		master := newCrossSigningKey(alice, "master")
		self := newCrossSigningKey(alice, "self_signing")
		user := newCrossSigningKey(alice, "user_signing")
		// A self-signing key not signed by the master key is refused.
		expect(t, "unsigned self-signing key", e.do(request{Method: "POST", Path: csPath, Token: aliceTok, Body: map[string]any{
			"master_key": master.object(), "self_signing_key": self.signedBy(t, nil)}}), 400, "M_INVALID_SIGNATURE")
		expect(t, "wrong usage", e.do(request{Method: "POST", Path: csPath, Token: aliceTok, Body: map[string]any{
			"master_key": self.object()}}), 400, "M_INVALID_PARAM")
		// The first upload needs no password.
		keys := map[string]any{"master_key": master.object(), "self_signing_key": self.signedBy(t, master), "user_signing_key": user.signedBy(t, master)}
		expect(t, "first upload", e.do(request{Method: "POST", Path: csPath, Token: aliceTok, Body: keys}), 200, "")
		expect(t, "identical re-upload", e.do(request{Method: "POST", Path: csPath, Token: aliceTok, Body: keys}), 200, "")
		// Replacing them does.
		master2 := newCrossSigningKey(alice, "master")
		self2 := newCrossSigningKey(alice, "self_signing")
		user2 := newCrossSigningKey(alice, "user_signing")
		replace := map[string]any{"master_key": master2.object(), "self_signing_key": self2.signedBy(t, master2), "user_signing_key": user2.signedBy(t, master2)}
		expect(t, "replace", e.completeUIA("POST", csPath, aliceTok, "alice", "alice password", replace), 200, "")
		master, self, user = master2, self2, user2

		// Alice signs her device with her self-signing key.
		const sigPath = "/_matrix/client/v3/keys/signatures/upload"
		signedDev := sign(t, dev.deviceKeys(t), alice, self.keyID(), self.priv)
		wronglySigned := sign(t, dev.deviceKeys(t), alice, self.keyID(), master.priv)
		res := e.do(request{Method: "POST", Path: sigPath, Token: aliceTok, Body: map[string]any{
			alice: map[string]any{aliceDev: signedDev, "NOSUCHDEVICE": signedDev},
		}})
		expect(t, "sign device", res, 200, "")
		var fr struct {
			Failures map[string]map[string]struct {
				Errcode string `json:"errcode"`
			} `json:"failures"`
		}
		_ = json.Unmarshal([]byte(res.Raw), &fr)
		if len(fr.Failures[alice]) != 1 || fr.Failures[alice]["NOSUCHDEVICE"].Errcode != "M_NOT_FOUND" {
			t.Fatalf("failures = %s", res.Raw)
		}
		res = e.do(request{Method: "POST", Path: sigPath, Token: aliceTok, Body: map[string]any{alice: map[string]any{aliceDev: wronglySigned}}})
		_ = json.Unmarshal([]byte(res.Raw), &fr)
		if fr.Failures[alice][aliceDev].Errcode != "M_INVALID_SIGNATURE" {
			t.Fatalf("bad signature: %s", res.Raw)
		}

		// Bob sets up cross-signing and signs Alice's master key.
		bobMaster := newCrossSigningKey(bob, "master")
		bobUser := newCrossSigningKey(bob, "user_signing")
		expect(t, "bob keys", e.do(request{Method: "POST", Path: csPath, Token: bobTok, Body: map[string]any{
			"master_key": bobMaster.object(), "user_signing_key": bobUser.signedBy(t, bobMaster)}}), 200, "")
		res = e.do(request{Method: "POST", Path: sigPath, Token: bobTok, Body: map[string]any{
			alice: map[string]any{master.pub(): master.signedBy(t, bobUser)}}})
		expect(t, "bob signs alice", res, 200, "")
		if fmt.Sprint(decode(res.Raw)["failures"]) != "map[]" {
			t.Fatalf("bob's signature refused: %s", res.Raw)
		}

		type queryResp struct {
			DeviceKeys map[string]map[string]struct {
				Signatures map[string]map[string]string `json:"signatures"`
			} `json:"device_keys"`
			MasterKeys map[string]struct {
				Signatures map[string]map[string]string `json:"signatures"`
			} `json:"master_keys"`
			SelfSigningKeys map[string]any `json:"self_signing_keys"`
			UserSigningKeys map[string]any `json:"user_signing_keys"`
		}
		query := func(token string) queryResp {
			r := e.do(request{Method: "POST", Path: "/_matrix/client/v3/keys/query", Token: token, Body: map[string]any{
				"device_keys": map[string]any{alice: []string{}}}})
			expect(t, "query", r, 200, "")
			var q queryResp
			_ = json.Unmarshal([]byte(r.Raw), &q)
			return q
		}
		byBob := query(bobTok)
		if byBob.DeviceKeys[alice][aliceDev].Signatures[alice][self.keyID()] == "" {
			t.Fatalf("self-signing signature of the device not visible: %+v", byBob.DeviceKeys)
		}
		if byBob.MasterKeys[alice].Signatures[bob][bobUser.keyID()] == "" || byBob.SelfSigningKeys[alice] == nil {
			t.Fatalf("bob does not see his signature of alice's master key: %+v", byBob.MasterKeys)
		}
		if byBob.UserSigningKeys[alice] != nil {
			t.Fatal("alice's user-signing key shown to bob")
		}
		byAlice := query(aliceTok)
		if byAlice.MasterKeys[alice].Signatures[bob] != nil {
			t.Fatal("bob's signature of alice's master key shown to alice (spec: only to the signer)")
		}
		if byAlice.UserSigningKeys[alice] == nil {
			t.Fatal("alice does not see her own user-signing key")
		}
	})
}

func decode(raw string) map[string]any {
	var m map[string]any
	_ = json.Unmarshal([]byte(raw), &m)
	return m
}

func TestKeyBackup(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		e := newAccountEnv(t, dbURL, nil)
		_, _, tok := e.register("alice", "alice password")
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		do := func(method, path string, body any) response {
			return e.do(request{Method: method, Path: path, Token: tok, Body: body})
		}
		expect(t, "no backup", do("GET", "/_matrix/client/v3/room_keys/version", nil), 404, "M_NOT_FOUND")
		created := do("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}})
		expect(t, "create", created, 200, "")
		v1 := created.str("version")
		got := do("GET", "/_matrix/client/v3/room_keys/version", nil)
		expect(t, "get", got, 200, "")
		if got.str("version") != v1 || got.str("algorithm") != alg || got.Body["count"] != 0.0 || got.str("etag") == "" {
			t.Fatalf("version = %s", got.Raw)
		}

		room := "!room:test.local"
		sessPath := func(version, session string) string {
			return "/_matrix/client/v3/room_keys/keys/" + url.PathEscape(room) + "/" + session + "?version=" + version
		}
		key := func(fmi, fwd int, verified bool, data string) map[string]any {
			return map[string]any{"first_message_index": fmi, "forwarded_count": fwd, "is_verified": verified, "session_data": map[string]any{"d": data}}
		}
		put := do("PUT", sessPath(v1, "s1"), key(5, 1, false, "first"))
		expect(t, "put", put, 200, "")
		etag1 := put.str("etag")
		for _, c := range []struct {
			name string
			key  map[string]any
			want string
		}{
			{"higher index is worse", key(9, 0, false, "worse"), "first"},
			{"same index, more forwards is worse", key(5, 2, false, "worse"), "first"},
			{"same index, fewer forwards is better", key(5, 0, false, "fewer forwards"), "fewer forwards"},
			{"lower index is better", key(1, 3, false, "lower index"), "lower index"},
			{"verified beats a lower index", key(7, 3, true, "verified"), "verified"},
			{"unverified never replaces verified", key(0, 0, false, "worse"), "verified"},
		} {
			expect(t, c.name, do("PUT", sessPath(v1, "s1"), c.key), 200, "")
			g := do("GET", sessPath(v1, "s1"), nil)
			if d, _ := g.Body["session_data"].(map[string]any); d["d"] != c.want {
				t.Fatalf("%s: stored %s, want %q", c.name, g.Raw, c.want)
			}
		}
		if r := do("PUT", sessPath(v1, "s1"), key(50, 50, false, "worse")); r.str("etag") != do("GET", "/_matrix/client/v3/room_keys/version/"+v1, nil).str("etag") || r.str("etag") == etag1 {
			t.Fatalf("etag after a refused key: %s (first %s)", r.Raw, etag1)
		}

		// All three scopes.
		all := do("PUT", "/_matrix/client/v3/room_keys/keys?version="+v1, map[string]any{"rooms": map[string]any{
			room:                map[string]any{"sessions": map[string]any{"s2": key(0, 0, false, "s2")}},
			"!other:test.local": map[string]any{"sessions": map[string]any{"s3": key(0, 0, false, "s3")}},
		}})
		expect(t, "put all", all, 200, "")
		if all.Body["count"] != 3.0 {
			t.Fatalf("count = %s", all.Raw)
		}
		expect(t, "put room", do("PUT", "/_matrix/client/v3/room_keys/keys/"+url.PathEscape(room)+"?version="+v1,
			map[string]any{"sessions": map[string]any{"s4": key(0, 0, false, "s4")}}), 200, "")
		rooms := do("GET", "/_matrix/client/v3/room_keys/keys?version="+v1, nil)
		if fmt.Sprint(len(rooms.Body["rooms"].(map[string]any))) != "2" {
			t.Fatalf("get all = %s", rooms.Raw)
		}
		roomKeys := do("GET", "/_matrix/client/v3/room_keys/keys/"+url.PathEscape(room)+"?version="+v1, nil)
		if len(roomKeys.Body["sessions"].(map[string]any)) != 3 {
			t.Fatalf("get room = %s", roomKeys.Raw)
		}
		del := do("DELETE", sessPath(v1, "s4"), nil)
		if del.Body["count"] != 3.0 {
			t.Fatalf("delete session = %s", del.Raw)
		}
		expect(t, "deleted session", do("GET", sessPath(v1, "s4"), nil), 404, "M_NOT_FOUND")
		if del := do("DELETE", "/_matrix/client/v3/room_keys/keys/"+url.PathEscape(room)+"?version="+v1, nil); del.Body["count"] != 1.0 {
			t.Fatalf("delete room = %s", del.Raw)
		}
		if del := do("DELETE", "/_matrix/client/v3/room_keys/keys?version="+v1, nil); del.Body["count"] != 0.0 {
			t.Fatalf("delete all = %s", del.Raw)
		}

		// Bad input.
		expect(t, "missing field", do("PUT", sessPath(v1, "s5"), map[string]any{"first_message_index": 0, "session_data": map[string]any{}}), 400, "M_BAD_JSON")
		expect(t, "missing version", do("GET", "/_matrix/client/v3/room_keys/keys", nil), 400, "M_MISSING_PARAM")
		expect(t, "unknown version", do("GET", "/_matrix/client/v3/room_keys/keys?version=99", nil), 404, "M_NOT_FOUND")

		// A new version makes the old one stale for writes.
		v2 := do("POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "def"}}).str("version")
		for _, stale := range []string{v1, "abc", "0"} {
			r := do("PUT", sessPath(stale, "s1"), key(0, 0, false, "x"))
			expect(t, "stale version "+stale, r, 403, "M_WRONG_ROOM_KEYS_VERSION")
			if r.str("current_version") != v2 {
				t.Fatalf("current_version = %s", r.Raw)
			}
		}
		expect(t, "update auth_data", do("PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "ghi"}}), 200, "")
		expect(t, "update with another algorithm", do("PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}), 400, "M_INVALID_PARAM")
		expect(t, "update with a mismatched version", do("PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": v1}), 400, "M_INVALID_PARAM")
		if g := do("GET", "/_matrix/client/v3/room_keys/version/"+v2, nil); g.Body["auth_data"].(map[string]any)["public_key"] != "ghi" {
			t.Fatalf("after update: %s", g.Raw)
		}
		expect(t, "delete v2", do("DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil), 200, "")
		expect(t, "deleted version", do("GET", "/_matrix/client/v3/room_keys/version/"+v2, nil), 404, "M_NOT_FOUND")
		if g := do("GET", "/_matrix/client/v3/room_keys/version", nil); g.str("version") != v1 {
			t.Fatalf("current after deleting v2 = %s", g.Raw)
		}
		expect(t, "delete again", do("DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil), 404, "M_NOT_FOUND")
	})
}
