package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// eduSyncer follows one client's /sync and keeps the ephemeral data,
// to-device messages and device-list changes it delivers.
type eduSyncer struct {
	t       *testing.T
	cli     *mautrix.Client
	since   string
	typing  map[id.RoomID][][]string // every m.typing user list, in order
	receipt map[string]bool          // "room|event|user" of m.read receipts
	toDev   []*event.Event
	changed map[id.UserID]bool
}

func newEDUSyncer(t *testing.T, cli *mautrix.Client) *eduSyncer {
	s := &eduSyncer{t: t, cli: cli, typing: map[id.RoomID][][]string{}, receipt: map[string]bool{}, changed: map[id.UserID]bool{}}
	s.sync(0) // an initial sync only sets the token
	return s
}

func (s *eduSyncer) sync(timeoutMS int) {
	s.t.Helper()
	resp, err := s.cli.SyncRequest(context.Background(), timeoutMS, s.since, "", false, "")
	if err != nil {
		s.t.Fatalf("%s: sync: %v", s.cli.UserID, err)
	}
	first := s.since == ""
	s.since = resp.NextBatch
	if first {
		return
	}
	for roomID, r := range resp.Rooms.Join {
		for _, ev := range r.Ephemeral.Events {
			switch ev.Type.Type {
			case "m.typing":
				var c struct {
					UserIDs []string `json:"user_ids"`
				}
				_ = json.Unmarshal(ev.Content.VeryRaw, &c)
				s.typing[roomID] = append(s.typing[roomID], c.UserIDs)
			case "m.receipt":
				var c map[string]map[string]map[string]json.RawMessage
				_ = json.Unmarshal(ev.Content.VeryRaw, &c)
				for evID, byType := range c {
					for user := range byType["m.read"] {
						s.receipt[string(roomID)+"|"+evID+"|"+user] = true
					}
				}
			}
		}
	}
	s.toDev = append(s.toDev, resp.ToDevice.Events...)
	for _, u := range resp.DeviceLists.Changed {
		s.changed[u] = true
	}
}

func (s *eduSyncer) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: %s not seen through /sync within 30s", s.cli.UserID, what)
		}
		s.sync(500)
	}
}

func (s *eduSyncer) typingIs(roomID id.RoomID, users ...string) func() bool {
	return func() bool {
		l := s.typing[roomID]
		return len(l) > 0 && slices.Equal(l[len(l)-1], users)
	}
}

// clientCall makes a raw client-server API request as cli.
func clientCall(t *testing.T, cli *mautrix.Client, method, path string, body any) (int, []byte) {
	t.Helper()
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(cli.HomeserverURL.String(), "/")+path, strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+cli.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// uploadDeviceKeys uploads signed identity keys for cli's device.
func uploadDeviceKeys(t *testing.T, cli *mautrix.Client) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	user, dev := cli.UserID.String(), cli.DeviceID.String()
	keys, _ := json.Marshal(map[string]any{
		"user_id": user, "device_id": dev,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{
			"ed25519:" + dev:    base64.RawStdEncoding.EncodeToString(pub),
			"curve25519:" + dev: base64.RawStdEncoding.EncodeToString(pub),
		},
	})
	signed, err := gomatrixserverlib.SignJSON(user, gomatrixserverlib.KeyID("ed25519:"+dev), priv, keys)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := clientCall(t, cli, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": json.RawMessage(signed)}); status != http.StatusOK {
		t.Fatalf("%s: keys/upload: %d %s", user, status, body)
	}
}

// queryDevices asks cli's server for user's device IDs through /keys/query.
func queryDevices(t *testing.T, cli *mautrix.Client, user id.UserID) ([]string, json.RawMessage) {
	t.Helper()
	status, body := clientCall(t, cli, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string][]string{user.String(): {}}})
	if status != http.StatusOK {
		t.Fatalf("keys/query: %d %s", status, body)
	}
	var r struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
		Failures   map[string]json.RawMessage            `json:"failures"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	var devs []string
	for d := range r.DeviceKeys[user.String()] {
		devs = append(devs, d)
	}
	slices.Sort(devs)
	return devs, body
}

// sendTxn sends a transaction of EDUs to dest, signed as from.
func sendTxn(t *testing.T, ca *testserver.CA, from identity, dest spec.ServerName, txnID string, edus ...gomatrixserverlib.EDU) {
	t.Helper()
	status, body := do(t, ca, signedRequest(t, from, dest, "PUT", "/_matrix/federation/v1/send/"+txnID,
		map[string]any{"origin": from.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []any{}, "edus": edus}))
	if status != http.StatusOK {
		t.Fatalf("/send from %s: %d %s", from.name, status, body)
	}
}

func edu(t *testing.T, typ string, content any) gomatrixserverlib.EDU {
	raw, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	return gomatrixserverlib.EDU{Type: typ, Content: raw}
}

// TestFederatedEDUsAndKeys runs three Parleys: alice on A and bob on B
// share a room; C is in no room and tries to speak for others' users.
func TestFederatedEDUsAndKeys(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	c := testserver.StartFederated(t, ca, testserver.Options{})
	ctx := context.Background()
	aName, bName := spec.ServerName(a.ServerName), spec.ServerName(b.ServerName)
	cID := identityOf(t, c)

	alice := a.RegisterUser(t, "alice")
	bob := b.RegisterUser(t, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	aliceSync, bobSync := newEDUSyncer(t, alice), newEDUSyncer(t, bob)
	// A message from bob reaching alice shows that A knows bob is joined.
	hello := mustSend(t, bob, roomID, "hello")
	newSyncer(t, alice).sees(hello)

	t.Run("typing", func(t *testing.T) {
		if _, err := alice.UserTyping(ctx, roomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		bobSync.waitFor("alice typing", bobSync.typingIs(roomID, alice.UserID.String()))
		if _, err := alice.UserTyping(ctx, roomID, false, 0); err != nil {
			t.Fatal(err)
		}
		bobSync.waitFor("alice stops typing", bobSync.typingIs(roomID))
	})

	t.Run("receipts", func(t *testing.T) {
		if err := alice.SendReceipt(ctx, roomID, hello, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		key := string(roomID) + "|" + hello.String() + "|" + alice.UserID.String()
		bobSync.waitFor("alice's receipt", func() bool { return bobSync.receipt[key] })
		// And the other way.
		mine := mustSend(t, bob, roomID, "read me")
		newSyncer(t, bob).sees(mine) // a receipt needs the event in B's sync API
		if err := bob.SendReceipt(ctx, roomID, mine, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		aliceSync.waitFor("bob's receipt", func() bool { return aliceSync.receipt[string(roomID)+"|"+mine.String()+"|"+bob.UserID.String()] })
	})

	t.Run("to-device once", func(t *testing.T) {
		path := fmt.Sprintf("/_matrix/client/v3/sendToDevice/%s/%s", "org.example.ping", "txn1")
		body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": 1}}}}
		for range 2 { // a client retry with the same transaction ID
			if status, resp := clientCall(t, alice, "PUT", path, body); status != http.StatusOK {
				t.Fatalf("sendToDevice: %d %s", status, resp)
			}
		}
		bobSync.waitFor("the to-device message", func() bool { return len(bobSync.toDev) > 0 })
		// Then a second message: the first must not come again before it.
		path2 := fmt.Sprintf("/_matrix/client/v3/sendToDevice/%s/%s", "org.example.ping", "txn2")
		body2 := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{"*": map[string]any{"n": 2}}}}
		if status, resp := clientCall(t, alice, "PUT", path2, body2); status != http.StatusOK {
			t.Fatalf("sendToDevice: %d %s", status, resp)
		}
		bobSync.waitFor("the second to-device message", func() bool { return len(bobSync.toDev) >= 2 })
		bobSync.sync(0)
		if len(bobSync.toDev) != 2 {
			t.Fatalf("bob got %d to-device messages, want 2", len(bobSync.toDev))
		}
		for i, ev := range bobSync.toDev {
			if ev.Sender != alice.UserID || ev.Type.Type != "org.example.ping" || ev.Content.Raw["n"] != float64(i+1) {
				t.Fatalf("to-device %d: %s %s %v", i, ev.Sender, ev.Type.Type, ev.Content.Raw)
			}
		}
	})

	t.Run("spoofed EDUs are ignored", func(t *testing.T) {
		// C speaks for alice (of A) and for its own user, who is in no room.
		sendTxn(t, ca, cID, bName, "spoof1",
			edu(t, "m.typing", map[string]any{"room_id": roomID, "user_id": alice.UserID, "typing": true}),
			edu(t, "m.typing", map[string]any{"room_id": roomID, "user_id": "@mallory:" + c.ServerName, "typing": true}),
			edu(t, "m.direct_to_device", map[string]any{"sender": alice.UserID, "type": "org.example.ping", "message_id": "spoof",
				"messages": map[string]any{bob.UserID.String(): map[string]any{"*": map[string]any{"n": 99}}}}),
			edu(t, "m.receipt", map[string]any{roomID.String(): map[string]any{"m.read": map[string]any{
				alice.UserID.String(): map[string]any{"event_ids": []string{hello.String()}, "data": map[string]any{"ts": 1}}}}}),
		)
		before := len(bobSync.typing[roomID])
		// Anything C's transaction had published was published before
		// this message, on the same stream: it would show up no later.
		path := "/_matrix/client/v3/sendToDevice/org.example.ping/txn3"
		body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]any{"n": 3}}}}
		if status, resp := clientCall(t, alice, "PUT", path, body); status != http.StatusOK {
			t.Fatalf("sendToDevice: %d %s", status, resp)
		}
		bobSync.waitFor("the third to-device message", func() bool { return len(bobSync.toDev) >= 3 })
		bobSync.sync(0)
		if len(bobSync.toDev) != 3 || bobSync.toDev[2].Content.Raw["n"] != float64(3) {
			t.Fatalf("bob's to-device messages after the spoof: %d, last %v", len(bobSync.toDev), bobSync.toDev[len(bobSync.toDev)-1].Content.Raw)
		}
		if len(bobSync.typing[roomID]) != before {
			t.Fatalf("spoofed typing reached bob: %v", bobSync.typing[roomID][before:])
		}
	})

	t.Run("public rooms and openid", func(t *testing.T) {
		lobby, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "The Lobby"})
		if err != nil {
			t.Fatal(err)
		}
		names := func(req *http.Request) []string {
			t.Helper()
			status, body := do(t, ca, req)
			if status != http.StatusOK {
				t.Fatalf("publicRooms: %d %s", status, body)
			}
			var r struct {
				Chunk []struct {
					RoomID string `json:"room_id"`
					Name   string `json:"name"`
				} `json:"chunk"`
			}
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, c := range r.Chunk {
				out = append(out, c.RoomID+" "+c.Name)
			}
			return out
		}
		want := []string{lobby.RoomID.String() + " The Lobby"}
		if got := names(signedRequest(t, cID, aName, "GET", "/_matrix/federation/v1/publicRooms?limit=10", nil)); !slices.Equal(got, want) {
			t.Fatalf("GET publicRooms = %v, want %v", got, want)
		}
		if got := names(signedRequest(t, cID, aName, "POST", "/_matrix/federation/v1/publicRooms", map[string]any{"filter": map[string]string{"generic_search_term": "lobby"}})); !slices.Equal(got, want) {
			t.Fatalf("POST publicRooms for lobby = %v, want %v", got, want)
		}
		if got := names(signedRequest(t, cID, aName, "POST", "/_matrix/federation/v1/publicRooms", map[string]any{"filter": map[string]string{"generic_search_term": "nothing like it"}})); len(got) != 0 {
			t.Fatalf("POST publicRooms for nothing = %v", got)
		}
		req, _ := http.NewRequest("GET", a.FederationURL+"/_matrix/federation/v1/publicRooms", nil)
		if status, body := do(t, ca, req); status != http.StatusUnauthorized {
			t.Fatalf("unsigned publicRooms: %d %s", status, body)
		}

		status, body := clientCall(t, alice, "POST", "/_matrix/client/v3/user/"+url.PathEscape(alice.UserID.String())+"/openid/request_token", map[string]any{})
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &tok) != nil || tok.AccessToken == "" {
			t.Fatalf("openid request_token: %d %s", status, body)
		}
		req, _ = http.NewRequest("GET", a.FederationURL+"/_matrix/federation/v1/openid/userinfo?access_token="+url.QueryEscape(tok.AccessToken), nil)
		if status, body := do(t, ca, req); status != http.StatusOK || !strings.Contains(string(body), `"sub":"`+alice.UserID.String()+`"`) {
			t.Fatalf("openid userinfo: %d %s", status, body)
		}
		req, _ = http.NewRequest("GET", a.FederationURL+"/_matrix/federation/v1/openid/userinfo?access_token=bogus", nil)
		if status, body := do(t, ca, req); status != http.StatusUnauthorized || errcode(body) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("openid userinfo with a bad token: %d %s", status, body)
		}
	})

	t.Run("device lists and key queries", func(t *testing.T) {
		// bob's join may still show up in device_lists.changed: absorb it.
		aliceSync.sync(0)
		aliceSync.changed = map[id.UserID]bool{}
		uploadDeviceKeys(t, bob)
		aliceSync.waitFor("bob in device_lists.changed", func() bool { return aliceSync.changed[bob.UserID] })
		devs, body := queryDevices(t, alice, bob.UserID)
		if !slices.Equal(devs, []string{bob.DeviceID.String()}) {
			t.Fatalf("alice sees bob's devices %v, want [%s]: %s", devs, bob.DeviceID, body)
		}

		// Over federation: B answers for its own users only.
		status, resp := do(t, ca, signedRequest(t, cID, bName, "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(bob.UserID.String()), nil))
		if status != http.StatusOK {
			t.Fatalf("user/devices: %d %s", status, resp)
		}
		var ud struct {
			UserID   string `json:"user_id"`
			StreamID int64  `json:"stream_id"`
			Devices  []struct {
				DeviceID string          `json:"device_id"`
				Keys     json.RawMessage `json:"keys"`
			} `json:"devices"`
		}
		if err := json.Unmarshal(resp, &ud); err != nil {
			t.Fatal(err)
		}
		if ud.UserID != bob.UserID.String() || ud.StreamID < 1 || len(ud.Devices) != 1 || ud.Devices[0].DeviceID != bob.DeviceID.String() || len(ud.Devices[0].Keys) == 0 {
			t.Fatalf("user/devices of bob: %s", resp)
		}
		for _, req := range []*http.Request{
			signedRequest(t, cID, bName, "GET", "/_matrix/federation/v1/user/devices/"+url.PathEscape(alice.UserID.String()), nil),
			signedRequest(t, cID, bName, "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string][]string{alice.UserID.String(): {}}}),
			signedRequest(t, cID, bName, "POST", "/_matrix/federation/v1/user/keys/claim", map[string]any{"one_time_keys": map[string]any{alice.UserID.String(): map[string]string{"X": "signed_curve25519"}}}),
		} {
			if status, resp := do(t, ca, req); status != http.StatusBadRequest || errcode(resp) != "M_INVALID_PARAM" {
				t.Fatalf("%s %s for a user of another server: %d %s", req.Method, req.URL.Path, status, resp)
			}
		}
		status, resp = do(t, ca, signedRequest(t, cID, bName, "POST", "/_matrix/federation/v1/user/keys/query", map[string]any{"device_keys": map[string][]string{bob.UserID.String(): {}}}))
		if status != http.StatusOK || !strings.Contains(string(resp), bob.DeviceID.String()) {
			t.Fatalf("user/keys/query for bob: %d %s", status, resp)
		}

		// A second device of bob: the update reaches A in order.
		bob2 := b.Client(t)
		login, err := bob2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: bob.UserID.String()}, Password: testserver.Password, StoreCredentials: true})
		if err != nil {
			t.Fatal(err)
		}
		bob2.DeviceID = login.DeviceID
		aliceSync.changed = map[id.UserID]bool{}
		uploadDeviceKeys(t, bob2)
		aliceSync.waitFor("bob's second device in device_lists.changed", func() bool { return aliceSync.changed[bob.UserID] })
		want := []string{bob.DeviceID.String(), bob2.DeviceID.String()}
		slices.Sort(want)
		waitFor(t, "both of bob's devices in alice's /keys/query", 10*time.Second, func() bool {
			devs, _ := queryDevices(t, alice, bob.UserID)
			return slices.Equal(devs, want)
		})

		// C cannot add a device to bob's list on A.
		sendTxn(t, ca, cID, aName, "spoof2", edu(t, "m.device_list_update", map[string]any{
			"user_id": bob.UserID, "device_id": "EVIL", "stream_id": 1000, "prev_id": []int64{},
			"keys": map[string]any{"user_id": bob.UserID, "device_id": "EVIL", "algorithms": []string{}, "keys": map[string]string{}}}))

		// With B down, A answers from its cache, kept current by B's EDUs.
		b.Stop()
		devs, body = queryDevices(t, alice, bob.UserID)
		if !slices.Equal(devs, want) {
			t.Fatalf("with B down, alice sees bob's devices %v (want %v): %s", devs, want, body)
		}
	})
}
