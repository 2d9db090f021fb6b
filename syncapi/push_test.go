package syncapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testdb"
)

// countsResp is the part of /sync the push tests read.
type countsResp struct {
	NextBatch string `json:"next_batch"`
	Presence  struct {
		Events []struct {
			Sender  string          `json:"sender"`
			Content presenceContent `json:"content"`
		} `json:"events"`
	} `json:"presence"`
	AccountData struct {
		Events []testEvent `json:"events"`
	} `json:"account_data"`
	Rooms struct {
		Join map[string]struct {
			Unread       notifications            `json:"unread_notifications"`
			ThreadUnread map[string]notifications `json:"unread_thread_notifications"`
		} `json:"join"`
	} `json:"rooms"`
}

func (e *env) countsSync(token, since, filter string) countsResp {
	e.t.Helper()
	q := url.Values{"timeout": {"0"}}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	var out countsResp
	if status, raw := e.do("GET", "/_matrix/client/v3/sync?"+q.Encode(), token, nil, &out); status != http.StatusOK {
		e.t.Fatalf("sync: %d %s", status, raw)
	}
	return out
}

func (e *env) pushRoom(roomID string, members ...string) {
	e.createRoom(roomID, members[0], "shared")
	for _, m := range members[1:] {
		e.join(roomID, m)
	}
}

func TestPushCountsReceiptsAndNotifications(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		alice, aliceTok := e.user("alice")
		bob, _ := e.user("bob")
		carol, _ := e.user("carol")
		room := "!counts:" + testServer
		e.pushRoom(room, alice, bob, carol)

		first := e.message(room, bob, "hello everyone")
		mention := e.event(room, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "alice: look",
			"m.mentions": map[string]any{"user_ids": []string{alice}}}, nil)
		threadReply := e.event(room, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "in a thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": first}}, nil)

		got := e.countsSync(aliceTok, "", "").Rooms.Join[room].Unread
		if got.NotificationCount != 3 || got.HighlightCount != 1 {
			t.Fatalf("unread = %+v, want 3 notifications, 1 highlight", got)
		}
		threaded := e.countsSync(aliceTok, "", `{"room":{"timeline":{"unread_thread_notifications":true}}}`).Rooms.Join[room]
		if threaded.Unread.NotificationCount != 2 || threaded.ThreadUnread[first].NotificationCount != 1 {
			t.Fatalf("per-thread counts = %+v / %+v, want main 2 and thread 1", threaded.Unread, threaded.ThreadUnread)
		}

		// GET /notifications lists them newest first; only=highlight narrows.
		var list struct {
			Notifications []struct {
				Event  testEvent       `json:"event"`
				Read   bool            `json:"read"`
				RoomID string          `json:"room_id"`
				Action json.RawMessage `json:"actions"`
			} `json:"notifications"`
			NextToken string `json:"next_token"`
		}
		e.do("GET", "/_matrix/client/v3/notifications", aliceTok, nil, &list)
		if len(list.Notifications) != 3 || list.Notifications[0].Event.EventID != threadReply || list.Notifications[2].Event.EventID != first {
			t.Fatalf("notifications = %+v", list.Notifications)
		}
		e.do("GET", "/_matrix/client/v3/notifications?only=highlight", aliceTok, nil, &list)
		if len(list.Notifications) != 1 || list.Notifications[0].Event.EventID != mention {
			t.Fatalf("highlights = %+v", list.Notifications)
		}
		e.do("GET", "/_matrix/client/v3/notifications?limit=1", aliceTok, nil, &list)
		if len(list.Notifications) != 1 || list.NextToken == "" {
			t.Fatalf("limit=1 gave %d and next_token %q", len(list.Notifications), list.NextToken)
		}
		e.do("GET", "/_matrix/client/v3/notifications?from="+list.NextToken, aliceTok, nil, &list)
		if len(list.Notifications) != 2 || list.Notifications[0].Event.EventID != mention {
			t.Fatalf("second page = %+v", list.Notifications)
		}
		for _, bad := range []string{"limit=0", "limit=x", "from=abc", "from=-3"} {
			if status, raw := e.do("GET", "/_matrix/client/v3/notifications?"+bad, aliceTok, nil, nil); status != 400 || errcode(raw) != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %s", bad, status, raw)
			}
		}

		// A main-timeline receipt on the mention reads the main timeline
		// up to it; the thread keeps its count.
		since := e.countsSync(aliceTok, "", "").NextBatch
		if status, raw := e.do("POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read/"+mention, aliceTok, map[string]string{"thread_id": "main"}, nil); status != 200 {
			t.Fatalf("receipt: %d %s", status, raw)
		}
		inc := e.countsSync(aliceTok, since, "")
		if got := inc.Rooms.Join[room].Unread; got.NotificationCount != 1 || got.HighlightCount != 0 {
			t.Fatalf("after threaded receipt unread = %+v, want the thread's 1", got)
		}
		e.do("GET", "/_matrix/client/v3/notifications", aliceTok, nil, &list)
		if !list.Notifications[1].Read || list.Notifications[0].Read {
			t.Fatalf("read flags = %v %v, want the mention read and the thread reply not", list.Notifications[1].Read, list.Notifications[0].Read)
		}
		// An unthreaded private receipt at the newest event reads all.
		if status, raw := e.do("POST", "/_matrix/client/v3/rooms/"+room+"/receipt/m.read.private/"+threadReply, aliceTok, map[string]any{}, nil); status != 200 {
			t.Fatalf("receipt: %d %s", status, raw)
		}
		inc = e.countsSync(aliceTok, inc.NextBatch, "")
		if got := inc.Rooms.Join[room].Unread; got.NotificationCount != 0 || got.HighlightCount != 0 {
			t.Fatalf("after full receipt unread = %+v", got)
		}

		// New message counts again, and alice's own message reads it.
		e.message(room, carol, "another")
		if got := e.countsSync(aliceTok, "", "").Rooms.Join[room].Unread; got.NotificationCount != 1 {
			t.Fatalf("after new message unread = %+v", got)
		}
		e.message(room, alice, "my reply")
		if got := e.countsSync(aliceTok, "", "").Rooms.Join[room].Unread; got.NotificationCount != 0 {
			t.Fatalf("after sending, unread = %+v", got)
		}
	})
}

func TestPushRulesAPI(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		alice, tok := e.user("alice")
		bob, _ := e.user("bob")

		var all struct {
			Global PushRuleset `json:"global"`
		}
		e.do("GET", "/_matrix/client/v3/pushrules/", tok, nil, &all)
		if len(all.Global.Override) != 12 || all.Global.Override[0].RuleID != ".m.rule.master" || len(all.Global.Underride) != 5 ||
			len(all.Global.Content) != 1 || *all.Global.Content[0].Pattern != "alice" {
			t.Fatalf("defaults = %+v", all.Global)
		}

		put := func(kind, id, query string, body any) (int, []byte) {
			return e.do("PUT", "/_matrix/client/v3/pushrules/global/"+kind+"/"+url.PathEscape(id)+query, tok, body, nil)
		}
		rule := map[string]any{"actions": []any{"notify"}, "conditions": []any{map[string]any{"kind": "event_match", "key": "content.body", "pattern": "beer"}}}
		for _, id := range []string{"one", "two"} {
			if status, raw := put("override", id, "", rule); status != 200 {
				t.Fatalf("put %s: %d %s", id, status, raw)
			}
		}
		if status, raw := put("override", "three", "?after=one", rule); status != 200 {
			t.Fatalf("put three: %d %s", status, raw)
		}
		if status, raw := put("override", "zero", "?before=two", rule); status != 200 {
			t.Fatalf("put zero: %d %s", status, raw)
		}
		var rs PushRuleset
		e.do("GET", "/_matrix/client/v3/pushrules/global/", tok, nil, &rs)
		var order []string
		for _, r := range rs.Override[1:5] {
			order = append(order, r.RuleID)
		}
		if want := []string{"zero", "two", "one", "three"}; rs.Override[0].RuleID != ".m.rule.master" || len(order) != 4 ||
			order[0] != want[0] || order[1] != want[1] || order[2] != want[2] || order[3] != want[3] {
			t.Fatalf("override order = %v", order)
		}

		bad := []struct {
			method, path string
			body         any
			status       int
			code         string
		}{
			{"PUT", "/global/banana/x", rule, 400, "M_INVALID_PARAM"},
			{"GET", "/global/banana/x", nil, 400, "M_INVALID_PARAM"},
			{"PUT", "/device/override/x", rule, 400, "M_INVALID_PARAM"},
			{"PUT", "/global/override/x", `{"actions": [`, 400, "M_NOT_JSON"},
			{"PUT", "/global/override/x", map[string]any{"conditions": []any{}}, 400, "M_BAD_JSON"},
			{"PUT", "/global/override/x", map[string]any{"actions": []any{"explode"}}, 400, "M_BAD_JSON"},
			{"PUT", "/global/override/x", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"kind": "event_match"}}}, 400, "M_BAD_JSON"},
			{"PUT", "/global/content/x", map[string]any{"actions": []any{}}, 400, "M_BAD_JSON"},
			{"PUT", "/global/override/.m.rule.mine", rule, 400, "M_INVALID_PARAM"},
			{"PUT", "/global/override/x?before=.m.rule.message", rule, 400, "M_UNKNOWN"},
			{"PUT", "/global/override/x?after=missing", rule, 400, "M_UNKNOWN"},
			{"DELETE", "/global/override/.m.rule.master", nil, 400, "M_INVALID_PARAM"},
			{"DELETE", "/global/override/missing", nil, 404, "M_NOT_FOUND"},
			{"GET", "/global/override/missing", nil, 404, "M_NOT_FOUND"},
			{"GET", "/global/content/.m.rule.master", nil, 404, "M_NOT_FOUND"},
			{"PUT", "/global/override/missing/enabled", map[string]any{"enabled": true}, 404, "M_NOT_FOUND"},
			{"PUT", "/global/override/one/enabled", map[string]any{}, 400, "M_BAD_JSON"},
			{"PUT", "/global/override/one/actions", map[string]any{"actions": "notify"}, 400, "M_BAD_JSON"},
		}
		for _, b := range bad {
			status, raw := e.do(b.method, "/_matrix/client/v3/pushrules"+b.path, tok, b.body, nil)
			if status != b.status || errcode(raw) != b.code {
				t.Errorf("%s %s: %d %s, want %d %s", b.method, b.path, status, raw, b.status, b.code)
			}
		}

		if status, raw := e.do("DELETE", "/_matrix/client/v3/pushrules/global/override/two", tok, nil, nil); status != 200 {
			t.Fatalf("delete: %d %s", status, raw)
		}
		var one PushRule
		if status, _ := e.do("GET", "/_matrix/client/v3/pushrules/global/override/one", tok, nil, &one); status != 200 || !one.Enabled || one.Default {
			t.Fatalf("get one: %d %+v", status, one)
		}
		var actions struct {
			Actions []PushAction `json:"actions"`
		}
		e.do("PUT", "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/actions", tok, map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "bell"}}}, nil)
		e.do("GET", "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/actions", tok, nil, &actions)
		if len(actions.Actions) != 2 || string(actions.Actions[1].Value) != `"bell"` {
			t.Fatalf("actions = %+v", actions.Actions)
		}

		// Rules take effect: master on silences a message; off again,
		// the message notifies.
		room := "!rules:" + testServer
		e.pushRoom(room, alice, bob)
		since := e.countsSync(tok, "", "").NextBatch
		if status, raw := e.do("PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", tok, map[string]bool{"enabled": true}, nil); status != 200 {
			t.Fatalf("enable master: %d %s", status, raw)
		}
		var enabled struct {
			Enabled bool `json:"enabled"`
		}
		e.do("GET", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", tok, nil, &enabled)
		if !enabled.Enabled {
			t.Fatal("master not enabled")
		}
		inc := e.countsSync(tok, since, "")
		foundRules := false
		for _, ev := range inc.AccountData.Events {
			foundRules = foundRules || ev.Type == "m.push_rules"
		}
		if !foundRules {
			t.Fatal("changing a rule did not send m.push_rules account data")
		}
		e.message(room, bob, "silenced")
		if got := e.countsSync(tok, "", "").Rooms.Join[room].Unread; got.NotificationCount != 0 {
			t.Fatalf("master on: unread = %+v", got)
		}
		e.do("PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled", tok, map[string]bool{"enabled": false}, nil)
		e.message(room, bob, "audible")
		if got := e.countsSync(tok, "", "").Rooms.Join[room].Unread; got.NotificationCount != 1 {
			t.Fatalf("master off: unread = %+v", got)
		}
	})
}

// fakeGateway is a push gateway that fails its first answers with 500.
type fakeGateway struct {
	srv      *httptest.Server
	mu       sync.Mutex
	failures int
	reject   map[string]bool
	got      []map[string]any
	calls    int
}

func newFakeGateway(t *testing.T, failures int) *fakeGateway {
	g := &fakeGateway{failures: failures, reject: map[string]bool{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.calls++
		if r.URL.Path != pushGatewayPath {
			w.WriteHeader(404)
			return
		}
		if g.failures > 0 {
			g.failures--
			w.WriteHeader(500)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		_ = json.Unmarshal(raw, &body)
		g.got = append(g.got, body.Notification)
		var rejected []string
		for _, d := range body.Notification["devices"].([]any) {
			if k := d.(map[string]any)["pushkey"].(string); g.reject[k] {
				rejected = append(rejected, k)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) received() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.got...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPushersAndGatewayDelivery(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		e.svc.push.gateway.baseBackoff = 50 * time.Millisecond
		alice, tok := e.user("alice")
		bob, _ := e.user("bob")
		gw := newFakeGateway(t, 1)

		pusher := func(key string, data map[string]any) map[string]any {
			return map[string]any{"pushkey": key, "kind": "http", "app_id": "org.example.app", "app_display_name": "App",
				"device_display_name": "Phone", "lang": "en", "data": data}
		}
		good := map[string]any{"url": gw.srv.URL + pushGatewayPath}
		bad := []struct {
			body map[string]any
			code string
		}{
			{pusher("k", map[string]any{"url": gw.srv.URL + "/wrong"}), "M_INVALID_PARAM"},
			{pusher("k", map[string]any{"url": "ftp://x" + pushGatewayPath}), "M_INVALID_PARAM"},
			{pusher("k", map[string]any{}), "M_MISSING_PARAM"},
			{pusher("k", map[string]any{"url": gw.srv.URL + pushGatewayPath, "format": "full"}), "M_INVALID_PARAM"},
			{map[string]any{"kind": "http", "app_id": "a"}, "M_MISSING_PARAM"},
			{func() map[string]any { p := pusher("k", good); p["kind"] = "carrier-pigeon"; return p }(), "M_INVALID_PARAM"},
		}
		for i, b := range bad {
			if status, raw := e.do("POST", "/_matrix/client/v3/pushers/set", tok, b.body, nil); status != 400 || errcode(raw) != b.code {
				t.Errorf("bad pusher %d: %d %s", i, status, raw)
			}
		}
		for _, k := range []string{"key1", "key2"} {
			if status, raw := e.do("POST", "/_matrix/client/v3/pushers/set", tok, pusher(k, good), nil); status != 200 {
				t.Fatalf("set pusher: %d %s", status, raw)
			}
		}
		var list struct {
			Pushers []pusherJSON `json:"pushers"`
		}
		e.do("GET", "/_matrix/client/v3/pushers", tok, nil, &list)
		if len(list.Pushers) != 2 || list.Pushers[0].PushKey != "key1" {
			t.Fatalf("pushers = %+v", list.Pushers)
		}

		room := "!push:" + testServer
		e.pushRoom(room, alice, bob)
		e.event(room, alice, "m.room.name", sk(""), map[string]any{"name": "Pushy"}, nil)
		e.event(room, bob, "m.room.member", sk(bob), map[string]any{"membership": "join", "displayname": "Bobby"}, nil)
		sent := e.message(room, bob, "ring ring")

		// The first answer is a 500; the retry delivers one request
		// carrying both devices.
		waitFor(t, "a push", func() bool { return len(gw.received()) > 0 })
		n := gw.received()[0]
		devices, _ := n["devices"].([]any)
		if n["event_id"] != sent || n["room_name"] != "Pushy" || n["sender_display_name"] != "Bobby" || len(devices) != 2 ||
			n["counts"].(map[string]any)["unread"].(float64) != 1 || n["prio"] != "high" {
			t.Fatalf("push = %+v (all %+v)", n, gw.received())
		}
		if d := devices[0].(map[string]any); d["app_id"] != "org.example.app" || d["tweaks"].(map[string]any)["sound"] != "default" || d["data"] != nil {
			t.Fatalf("device = %+v", d)
		}

		// A rejected pushkey loses its pusher; event_id_only sends no
		// content.
		gw.mu.Lock()
		gw.reject["key2"] = true
		gw.mu.Unlock()
		e.do("POST", "/_matrix/client/v3/pushers/set", tok, pusher("key1", map[string]any{"url": good["url"], "format": "event_id_only"}), nil)
		e.message(room, bob, "second")
		waitFor(t, "two more pushes", func() bool { return len(gw.received()) >= 3 })
		waitFor(t, "the rejected pusher to go", func() bool {
			e.do("GET", "/_matrix/client/v3/pushers", tok, nil, &list)
			return len(list.Pushers) == 1 && list.Pushers[0].PushKey == "key1"
		})
		for _, p := range gw.received()[1:] {
			if p["devices"].([]any)[0].(map[string]any)["pushkey"] == "key1" && (p["content"] != nil || p["sender"] != nil) {
				t.Fatalf("event_id_only push carried %+v", p)
			}
		}

		// kind null deletes.
		del := pusher("key1", good)
		del["kind"] = nil
		e.do("POST", "/_matrix/client/v3/pushers/set", tok, del, nil)
		e.do("GET", "/_matrix/client/v3/pushers", tok, nil, &list)
		if len(list.Pushers) != 0 {
			t.Fatalf("after delete pushers = %+v", list.Pushers)
		}
	})
}

func TestPresenceAndUserDirectory(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		alice, aliceTok := e.user("alice")
		bob, bobTok := e.user("bob")
		_, carolTok := e.user("carol")
		dave, daveTok := e.user("dave")
		private := "!private:" + testServer
		e.event(private, alice, "m.room.create", sk(""), map[string]any{"room_version": "10"}, nil)
		e.event(private, alice, "m.room.member", sk(alice), map[string]any{"membership": "join", "displayname": "Alice Liddell"}, nil)
		e.event(private, alice, "m.room.join_rules", sk(""), map[string]any{"join_rule": "invite"}, nil)
		e.event(private, bob, "m.room.member", sk(bob), map[string]any{"membership": "join", "displayname": "Bobby Tables"}, nil)
		public := "!public:" + testServer
		e.createRoom(public, dave, "shared")

		since := e.countsSync(bobTok, "", "").NextBatch
		msg := "gone fishing"
		if status, raw := e.do("PUT", "/_matrix/client/v3/presence/"+alice+"/status", aliceTok, map[string]any{"presence": "unavailable", "status_msg": msg}, nil); status != 200 {
			t.Fatalf("put presence: %d %s", status, raw)
		}
		var p presenceContent
		if status, raw := e.do("GET", "/_matrix/client/v3/presence/"+alice+"/status", bobTok, nil, &p); status != 200 || p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != msg {
			t.Fatalf("bob reads alice: %d %s", status, raw)
		}
		inc := e.countsSync(bobTok, since, "")
		if len(inc.Presence.Events) != 1 || inc.Presence.Events[0].Sender != alice || inc.Presence.Events[0].Content.Presence != "unavailable" {
			t.Fatalf("bob's sync presence = %+v", inc.Presence.Events)
		}
		if len(e.countsSync(carolTok, "", "").Presence.Events) != 0 {
			t.Fatal("carol shares no room with alice but saw her presence")
		}
		for _, c := range []struct {
			method, path, tok string
			body              any
			status            int
			code              string
		}{
			{"GET", "/presence/" + alice + "/status", carolTok, nil, 403, "M_FORBIDDEN"},
			{"PUT", "/presence/" + alice + "/status", bobTok, map[string]any{"presence": "offline"}, 403, "M_FORBIDDEN"},
			{"PUT", "/presence/" + bob + "/status", bobTok, map[string]any{"presence": "asleep"}, 400, "M_INVALID_PARAM"},
			{"GET", "/presence/nobody/status", bobTok, nil, 400, "M_INVALID_PARAM"},
		} {
			if status, raw := e.do(c.method, "/_matrix/client/v3"+c.path, c.tok, c.body, nil); status != c.status || errcode(raw) != c.code {
				t.Errorf("%s %s: %d %s", c.method, c.path, status, raw)
			}
		}

		// Syncing marks bob online (batched); alice, his room peer, sees it.
		aliceSince := e.countsSync(aliceTok, "", "").NextBatch
		e.countsSync(bobTok, "", "")
		waitFor(t, "bob online", func() bool {
			for _, ev := range e.countsSync(aliceTok, aliceSince, "").Presence.Events {
				if ev.Sender == bob && ev.Content.Presence == "online" && ev.Content.CurrentlyActive != nil && *ev.Content.CurrentlyActive {
					return true
				}
			}
			return false
		})

		// The directory: alice finds bob (shared room) and dave (public
		// room); carol finds dave but not bob.
		search := func(tok string, body any) (int, []directoryResult, bool, []byte) {
			var out struct {
				Results []directoryResult `json:"results"`
				Limited bool              `json:"limited"`
			}
			status, raw := e.do("POST", "/_matrix/client/v3/user_directory/search", tok, body, &out)
			return status, out.Results, out.Limited, raw
		}
		if _, res, _, raw := search(aliceTok, map[string]any{"search_term": "tables"}); len(res) != 1 || res[0].UserID != bob || res[0].DisplayName != "Bobby Tables" {
			t.Fatalf("alice searching 'tables': %s", raw)
		}
		if _, res, _, raw := search(carolTok, map[string]any{"search_term": "bob"}); len(res) != 0 {
			t.Fatalf("carol found bob: %s", raw)
		}
		if _, res, _, raw := search(carolTok, map[string]any{"search_term": "DAVE"}); len(res) != 1 || res[0].UserID != dave {
			t.Fatalf("carol searching 'DAVE': %s", raw)
		}
		if _, res, limited, raw := search(aliceTok, map[string]any{"search_term": "", "limit": 1}); len(res) != 1 || !limited {
			t.Fatalf("limit 1: %s", raw)
		}
		if _, res, _, raw := search(aliceTok, map[string]any{"search_term": "%"}); len(res) != 0 {
			t.Fatalf("'%%' is not a wildcard: %s", raw)
		}
		for _, b := range []any{map[string]any{"limit": 3}, map[string]any{"search_term": "x", "limit": -1}, `{"search_term": 5}`} {
			if status, _, _, raw := search(daveTok, b); status != 400 {
				t.Errorf("bad search %v: %d %s", b, status, raw)
			}
		}
	})
}

// forEachDB runs fn once per database dialect.
func forEachDB(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range testdb.Dialects {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// TestStreamTokenPresencePart checks that the presence position appended
// to the since token leaves older tokens readable.
func TestStreamTokenPresencePart(t *testing.T) {
	for in, want := range map[string]StreamToken{
		"s1_2_3_4_5":       {Events: 1, AccountData: 2, Receipts: 3, Typing: 4, ToDevice: 5},
		"s1_2_3_4_5_6":     {Events: 1, AccountData: 2, Receipts: 3, Typing: 4, ToDevice: 5, DeviceLists: 6},
		"s1_2_3_4_5_6_7":   {Events: 1, AccountData: 2, Receipts: 3, Typing: 4, ToDevice: 5, DeviceLists: 6, Presence: 7},
		"s9_0_0_0_0_0_123": {Events: 9, Presence: 123},
	} {
		got, err := ParseStreamToken(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v", in, got, err)
		}
	}
	if tok := (StreamToken{Events: 1, Presence: 7}).String(); tok != "s1_0_0_0_0_0_7" {
		t.Errorf("String() = %s", tok)
	}
	for _, bad := range []string{"s1_2_3_4", "s1_2_3_4_5_6_7_8", "s1_2_3_4_5_6_-7"} {
		if _, err := ParseStreamToken(bad); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}
