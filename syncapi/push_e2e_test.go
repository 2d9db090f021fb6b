package syncapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/parley-chat/parley/internal/testserver"
)

// TestPushPresenceDirectoryEndToEnd drives push rules, counts, pushers,
// presence and the user directory through mautrix against a real server.
func TestPushPresenceDirectoryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	srv := testserver.Start(t, testserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alice := srv.RegisterUser(t, "alice")
	bob := srv.RegisterUser(t, "bob")
	carol := srv.RegisterUser(t, "carol")

	// A fake push gateway that fails the first delivery with a 500.
	var gwMu sync.Mutex
	var pushes []map[string]any
	calls := 0
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gwMu.Lock()
		defer gwMu.Unlock()
		calls++
		if calls == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		_ = json.Unmarshal(raw, &body)
		pushes = append(pushes, body.Notification)
		_, _ = w.Write([]byte(`{"rejected": []}`))
	}))
	defer gw.Close()
	kind := mautrix.PusherKindHTTP
	if err := alice.SetPusher(ctx, &mautrix.Pusher{AppID: "org.example.e2e", PushKey: "pk1", Kind: &kind, AppDisplayName: "E2E",
		DeviceDisplayName: "phone", Language: "en", Data: mautrix.PusherData{"url": gw.URL + "/_matrix/push/v1/notify"}}); err != nil {
		t.Fatal(err)
	}
	err := alice.SetPusher(ctx, &mautrix.Pusher{AppID: "org.example.e2e", PushKey: "pk2", Kind: &kind, AppDisplayName: "E2E",
		DeviceDisplayName: "phone", Language: "en", Data: mautrix.PusherData{"url": gw.URL + "/not/the/push/path"}})
	if httpErr := (mautrix.HTTPError{}); !errors.As(err, &httpErr) || httpErr.RespError == nil || httpErr.RespError.ErrCode != "M_INVALID_PARAM" {
		t.Fatalf("bad pusher URL: %v", err)
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "push e2e"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	for _, c := range []*mautrix.Client{bob, carol} {
		if _, err := c.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
	}
	plain, err := bob.SendText(ctx, room, "hello everyone")
	if err != nil {
		t.Fatal(err)
	}
	mention, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "alice, look",
		"m.mentions": map[string]any{"user_ids": []id.UserID{alice.UserID}}})
	if err != nil {
		t.Fatal(err)
	}

	// Counts reach alice's sync (the roomserver publishes asynchronously).
	counts := func() *mautrix.UnreadNotificationCounts {
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		if jr, ok := resp.Rooms.Join[room]; ok && jr.UnreadNotifications != nil {
			return jr.UnreadNotifications
		}
		return &mautrix.UnreadNotificationCounts{}
	}
	waitUntil(t, "two notifications, one highlight", func() bool {
		c := counts()
		return c.NotificationCount == 2 && c.HighlightCount == 1
	})
	if err := alice.MarkRead(ctx, room, plain.EventID); err != nil {
		t.Fatal(err)
	}
	if c := counts(); c.NotificationCount != 1 || c.HighlightCount != 1 {
		t.Fatalf("after reading the first message: %+v", c)
	}
	if err := alice.MarkRead(ctx, room, mention.EventID); err != nil {
		t.Fatal(err)
	}
	if c := counts(); c.NotificationCount != 0 || c.HighlightCount != 0 {
		t.Fatalf("after reading everything: %+v", c)
	}

	// Both messages were pushed, one of them after a retry.
	waitUntil(t, "two pushes", func() bool {
		gwMu.Lock()
		defer gwMu.Unlock()
		return len(pushes) == 2
	})
	gwMu.Lock()
	pushed := map[any]bool{}
	for _, p := range pushes {
		pushed[p["event_id"]] = p["room_name"] == "push e2e"
	}
	if !pushed[plain.EventID.String()] || !pushed[mention.EventID.String()] {
		t.Fatalf("pushes = %+v", pushes)
	}
	gwMu.Unlock()

	// Push rule CRUD: ordering, then master silences bob's next message.
	actions := []*pushrules.PushAction{{Action: pushrules.ActionNotify}}
	cond := []*pushrules.PushCondition{{Kind: pushrules.KindEventMatch, Key: "content.body", Pattern: "lunch"}}
	for _, r := range []struct{ id, before, after string }{{"a", "", ""}, {"b", "", ""}, {"c", "", "a"}, {"d", "b", ""}} {
		if err := alice.PutPushRule(ctx, "global", pushrules.OverrideRule, r.id, &mautrix.ReqPutPushRule{Before: r.before, After: r.after,
			Actions: actions, Conditions: cond}); err != nil {
			t.Fatalf("put %s: %v", r.id, err)
		}
	}
	rs, err := alice.GetPushRules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range rs.Override {
		order = append(order, r.RuleID)
	}
	if len(order) < 5 || order[0] != ".m.rule.master" || order[1] != "d" || order[2] != "b" || order[3] != "a" || order[4] != "c" {
		t.Fatalf("override order = %v", order)
	}
	if err := alice.DeletePushRule(ctx, "global", pushrules.OverrideRule, "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.GetPushRule(ctx, "global", pushrules.OverrideRule, "d"); err == nil {
		t.Fatal("deleted rule still readable")
	}
	if err := alice.SetPushRuleEnabled(ctx, "global", pushrules.OverrideRule, ".m.rule.master", true); err != nil {
		t.Fatal(err)
	}
	silenced, err := bob.SendText(ctx, room, "nobody hears this")
	if err != nil {
		t.Fatal(err)
	}
	marker, err := carol.SendText(ctx, room, "marker")
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "carol's marker in alice's timeline", func() bool {
		msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 5)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			if ev.ID == marker.EventID {
				return true
			}
		}
		return false
	})
	if c := counts(); c.NotificationCount != 0 {
		t.Fatalf("with master enabled %s counted: %+v", silenced.EventID, c)
	}

	// Presence: alice sets hers; bob, in the same room, sees it.
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "at lunch"}); err != nil {
		t.Fatal(err)
	}
	p, err := bob.GetPresence(ctx, alice.UserID)
	if err != nil || p.Presence != event.PresenceUnavailable || p.StatusMsg != "at lunch" {
		t.Fatalf("bob reads alice's presence: %+v %v", p, err)
	}
	waitUntil(t, "alice's presence in bob's sync", func() bool {
		resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Presence.Events {
			var c struct {
				Presence string `json:"presence"`
			}
			_ = json.Unmarshal(ev.Content.VeryRaw, &c)
			if ev.Sender == alice.UserID && c.Presence == "unavailable" {
				return true
			}
		}
		return false
	})

	// User directory: carol finds bob through the room they share.
	found, err := carol.SearchUserDirectory(ctx, "bob", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(found.Results) != 1 || found.Results[0].UserID != bob.UserID {
		t.Fatalf("directory search = %+v", found.Results)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
