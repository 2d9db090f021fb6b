package syncapi

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	rsapi "github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/syncapi/storage"
)

func TestConsumerIgnoresRedelivery(t *testing.T) {
	e := newEnv(t, "sqlite")
	e.createRoom("!r:test.local", "@a:test.local", "shared")
	oe := e.output("!r:test.local", "@a:test.local", "m.room.message", nil, map[string]any{"body": "once"}, nil)
	e.publish(oe)
	e.publish(oe)
	marker := e.message("!r:test.local", "@a:test.local", "after") // consumed after both copies
	evs, err := e.svc.db.RoomEvents(context.Background(), storage.RangeQuery{RoomID: "!r:test.local", Before: 1 << 62, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.EventID == oe.EventID {
			n++
		}
	}
	if n != 1 || evs[len(evs)-1].EventID != marker {
		t.Fatalf("redelivered event stored %d times (want 1); timeline %v", n, evs)
	}
}

func TestSyncInitialIncrementalAndTransactionID(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			alice, aliceTok := e.user("alice")
			bob, bobTok := e.user("bob")
			room := "!room:test.local"
			e.createRoom(room, alice, "shared")
			e.join(room, bob)
			m1 := e.event(room, alice, "m.room.message", nil, map[string]any{"body": "hi"}, &rsapi.TransactionID{DeviceID: "DEV_alice", TxnID: "txn1"})

			first := e.sync(aliceTok, "", "", 0)
			jr, ok := first.Rooms.Join[room]
			if !ok {
				t.Fatalf("initial sync lacks the joined room: %+v", first.Rooms)
			}
			tl := jr.Timeline.Events
			if len(tl) == 0 || tl[len(tl)-1].EventID != m1 {
				t.Fatalf("timeline does not end with the message: %v", ids(tl))
			}
			if tl[len(tl)-1].Unsigned["transaction_id"] != "txn1" {
				t.Fatalf("sender's device did not get its transaction_id: %v", tl[len(tl)-1].Unsigned)
			}
			if jr.Summary["m.joined_member_count"] != float64(2) {
				t.Fatalf("summary = %v", jr.Summary)
			}
			// State and timeline together hold the whole current state.
			seen := map[string]bool{}
			for _, ev := range append(jr.State.Events, tl...) {
				if ev.StateKey != nil {
					seen[ev.Type+"|"+*ev.StateKey] = true
				}
			}
			for _, k := range []string{"m.room.create|", "m.room.member|" + alice, "m.room.member|" + bob, "m.room.history_visibility|"} {
				if !seen[k] {
					t.Fatalf("initial sync lacks state %s", k)
				}
			}

			// Bob sees the message but not Alice's transaction ID.
			bobSync := e.sync(bobTok, "", "", 0)
			btl := bobSync.Rooms.Join[room].Timeline.Events
			if btl[len(btl)-1].EventID != m1 || btl[len(btl)-1].Unsigned["transaction_id"] != nil {
				t.Fatalf("bob's view of the message: %+v", btl[len(btl)-1])
			}

			// Incremental: only what is new.
			empty := e.sync(aliceTok, first.NextBatch, "", 0)
			if len(empty.Rooms.Join) != 0 {
				t.Fatalf("incremental sync with nothing new returned rooms: %+v", empty.Rooms.Join)
			}
			m2 := e.message(room, bob, "second")
			inc := e.sync(aliceTok, first.NextBatch, "", 0)
			got := ids(inc.Rooms.Join[room].Timeline.Events)
			if !slices.Equal(got, []string{m2}) || inc.Rooms.Join[room].Timeline.Limited {
				t.Fatalf("incremental timeline = %v, want [%s]", got, m2)
			}
		})
	}
}

func TestLongPollWakesOnlyForOwnRooms(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, aliceTok := e.user("alice")
	bob, _ := e.user("bob")
	e.createRoom("!a:test.local", alice, "shared")
	e.createRoom("!b:test.local", bob, "shared")
	since := e.sync(aliceTok, "", "", 0).NextBatch

	// An event in Bob's room must not wake Alice's waiters.
	wake, stop := e.svc.notifier.Listen(alice)
	defer stop()
	e.message("!b:test.local", bob, "not for alice")
	select {
	case <-wake:
		t.Fatal("alice was woken by an event in a room she is not in")
	default:
	}

	done := make(chan syncResp, 1)
	go func() { done <- e.sync(aliceTok, since, "", 30000) }()
	// Wait until the long-poll is parked on the notifier, then send.
	for {
		e.svc.notifier.mu.Lock()
		n := 0
		if s := e.svc.notifier.users[alice]; s != nil {
			n = s.waiters
		}
		e.svc.notifier.mu.Unlock()
		if n >= 2 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	m := e.message("!a:test.local", alice, "wake up")
	select {
	case <-wake:
	case <-time.After(10 * time.Second):
		t.Fatal("alice's listener was not woken by an event in her room")
	}
	select {
	case resp := <-done:
		if got := ids(resp.Rooms.Join["!a:test.local"].Timeline.Events); !slices.Equal(got, []string{m}) {
			t.Fatalf("long-poll returned %v, want [%s]", got, m)
		}
		if _, ok := resp.Rooms.Join["!b:test.local"]; ok {
			t.Fatal("long-poll leaked bob's room")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll did not return after an event in the user's room")
	}
}

func TestLimitedTimelineAndPagination(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, tok := e.user("alice")
	room := "!r:test.local"
	e.createRoom(room, alice, "shared")
	var msgs []string
	for i := 0; i < 7; i++ {
		msgs = append(msgs, e.message(room, alice, fmt.Sprint("m", i)))
	}
	resp := e.sync(tok, "", `{"room":{"timeline":{"limit":3}}}`, 0)
	tl := resp.Rooms.Join[room].Timeline
	if !tl.Limited || !slices.Equal(ids(tl.Events), msgs[4:]) || tl.PrevBatch == "" {
		t.Fatalf("limited timeline = %v limited=%v prev=%q", ids(tl.Events), tl.Limited, tl.PrevBatch)
	}
	// Paginating back from prev_batch continues exactly where it stopped.
	var page struct {
		Chunk []testEvent `json:"chunk"`
		End   string      `json:"end"`
	}
	status, raw := e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=4&from="+tl.PrevBatch, tok, nil, &page)
	if status != 200 {
		t.Fatalf("messages: %d %s", status, raw)
	}
	want := []string{msgs[3], msgs[2], msgs[1], msgs[0]}
	if !slices.Equal(ids(page.Chunk), want) || page.End == "" {
		t.Fatalf("messages page = %v end=%q, want %v", ids(page.Chunk), page.End, want)
	}
	// Forwards from the end of that page returns what follows it.
	var fwd struct {
		Chunk []testEvent `json:"chunk"`
	}
	e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=f&limit=2&from="+page.End, tok, nil, &fwd)
	if !slices.Equal(ids(fwd.Chunk), []string{msgs[0], msgs[1]}) {
		t.Fatalf("forward page = %v", ids(fwd.Chunk))
	}

	// /context around a message.
	var cx struct {
		Event        testEvent   `json:"event"`
		EventsBefore []testEvent `json:"events_before"`
		EventsAfter  []testEvent `json:"events_after"`
	}
	status, raw = e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/"+url.PathEscape(msgs[3])+"?limit=4", tok, nil, &cx)
	if status != 200 || cx.Event.EventID != msgs[3] || !slices.Equal(ids(cx.EventsBefore), []string{msgs[2], msgs[1]}) ||
		!slices.Equal(ids(cx.EventsAfter), []string{msgs[4], msgs[5]}) {
		t.Fatalf("context: %d %s", status, raw)
	}
}

func TestHistoryVisibilityJoined(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, _ := e.user("alice")
	bob, bobTok := e.user("bob")
	_, carolTok := e.user("carol")
	room := "!secret:test.local"
	e.createRoom(room, alice, "joined")
	before := e.message(room, alice, "before bob joined")
	join := e.join(room, bob)
	after := e.message(room, alice, "after bob joined")

	tl := ids(e.sync(bobTok, "", "", 0).Rooms.Join[room].Timeline.Events)
	if slices.Contains(tl, before) || !slices.Contains(tl, join) || !slices.Contains(tl, after) {
		t.Fatalf("bob's timeline %v: must start at his join", tl)
	}
	var page struct {
		Chunk []testEvent `json:"chunk"`
	}
	e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", bobTok, nil, &page)
	if slices.Contains(ids(page.Chunk), before) {
		t.Fatal("/messages showed bob an event from before his join in a joined-only room")
	}
	status, raw := e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/"+url.PathEscape(before), bobTok, nil, nil)
	if status != 404 {
		t.Fatalf("context of an invisible event: %d %s", status, raw)
	}
	// Carol was never in the room.
	status, raw = e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b", carolTok, nil, nil)
	if status != 403 || errcode(raw) != "M_FORBIDDEN" {
		t.Fatalf("non-member /messages: %d %s", status, raw)
	}

	// Bob leaves: he sees his leave but nothing after it.
	leave := e.event(room, bob, "m.room.member", sk(bob), map[string]any{"membership": "leave"}, nil)
	later := e.message(room, alice, "after bob left")
	e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", bobTok, nil, &page)
	got := ids(page.Chunk)
	if !slices.Contains(got, leave) || slices.Contains(got, later) {
		t.Fatalf("bob's history after leaving: %v", got)
	}
	lr := e.sync(bobTok, "", `{"room":{"include_leave":true}}`, 0).Rooms.Leave[room]
	ltl := ids(lr.Timeline.Events)
	if len(ltl) == 0 || ltl[len(ltl)-1] != leave {
		t.Fatalf("leave section timeline = %v, want it to end at the leave", ltl)
	}
}

func TestInviteState(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, _ := e.user("alice")
	bob, bobTok := e.user("bob")
	room := "!inv:test.local"
	e.createRoom(room, alice, "shared")
	e.event(room, alice, "m.room.name", sk(""), map[string]any{"name": "Secret plans"}, nil)
	e.message(room, alice, "private")
	since := e.sync(bobTok, "", "", 0).NextBatch
	e.event(room, alice, "m.room.member", sk(bob), map[string]any{"membership": "invite"}, nil)
	resp := e.sync(bobTok, since, "", 0)
	inv, ok := resp.Rooms.Invite[room]
	if !ok {
		t.Fatalf("invite missing: %+v", resp.Rooms)
	}
	types := map[string]bool{}
	for _, ev := range inv.InviteState.Events {
		types[ev.Type] = true
		if ev.Type == "m.room.message" {
			t.Fatal("invite_state leaked a message")
		}
	}
	if !types["m.room.name"] || !types["m.room.create"] || !types["m.room.member"] {
		t.Fatalf("invite_state types %v", types)
	}
}

func TestFiltersAndBadInput(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, tok := e.user("alice")
	bob, bobTok := e.user("bob")
	room := "!f:test.local"
	e.createRoom(room, alice, "shared")
	for i := 0; i < 4; i++ {
		e.message(room, alice, fmt.Sprint(i))
	}

	var created struct {
		FilterID string `json:"filter_id"`
	}
	status, raw := e.do("POST", "/_matrix/client/v3/user/"+url.PathEscape(alice)+"/filter", tok,
		`{"room":{"timeline":{"limit":2,"types":["m.room.mess*"]},"state":{"lazy_load_members":true}}}`, &created)
	if status != 200 || created.FilterID == "" {
		t.Fatalf("create filter: %d %s", status, raw)
	}
	status, raw = e.do("GET", "/_matrix/client/v3/user/"+url.PathEscape(alice)+"/filter/"+created.FilterID, tok, nil, nil)
	if status != 200 {
		t.Fatalf("get filter: %d %s", status, raw)
	}
	resp := e.sync(tok, "", created.FilterID, 0)
	tl := resp.Rooms.Join[room].Timeline
	if len(tl.Events) != 2 || !tl.Limited || tl.Events[0].Type != "m.room.message" {
		t.Fatalf("filtered timeline = %+v", tl)
	}

	cases := []struct {
		name, method, path, token string
		body                      any
		status                    int
		errcode                   string
	}{
		{"invalid since", "GET", "/_matrix/client/v3/sync?since=garbage", tok, nil, 400, "M_INVALID_PARAM"},
		{"since with letters", "GET", "/_matrix/client/v3/sync?since=s1_2_x_4_5", tok, nil, 400, "M_INVALID_PARAM"},
		{"bad timeout", "GET", "/_matrix/client/v3/sync?timeout=soon", tok, nil, 400, "M_INVALID_PARAM"},
		{"bad full_state", "GET", "/_matrix/client/v3/sync?full_state=yes", tok, nil, 400, "M_INVALID_PARAM"},
		{"filter not JSON", "GET", "/_matrix/client/v3/sync?filter=" + url.QueryEscape(`{"room":`), tok, nil, 400, "M_NOT_JSON"},
		{"filter wrong shape", "GET", "/_matrix/client/v3/sync?filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":"ten"}}}`), tok, nil, 400, "M_BAD_JSON"},
		{"negative limit", "GET", "/_matrix/client/v3/sync?filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":-1}}}`), tok, nil, 400, "M_BAD_JSON"},
		{"unknown filter id", "GET", "/_matrix/client/v3/sync?filter=424242", tok, nil, 400, "M_INVALID_PARAM"},
		{"other user's filter id", "GET", "/_matrix/client/v3/sync?filter=" + created.FilterID, bobTok, nil, 400, "M_INVALID_PARAM"},
		{"get other user's filter", "GET", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/filter/" + created.FilterID, bobTok, nil, 403, "M_FORBIDDEN"},
		{"create filter for other user", "POST", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/filter", bobTok, `{}`, 403, "M_FORBIDDEN"},
		{"unknown filter", "GET", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/filter/999", tok, nil, 404, "M_NOT_FOUND"},
		{"create bad filter", "POST", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/filter", tok, `[1]`, 400, "M_BAD_JSON"},
		{"no token", "GET", "/_matrix/client/v3/sync", "", nil, 401, "M_MISSING_TOKEN"},
		{"messages bad dir", "GET", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=x", tok, nil, 400, "M_INVALID_PARAM"},
		{"messages negative limit", "GET", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&limit=-3", tok, nil, 400, "M_INVALID_PARAM"},
		{"messages bad from", "GET", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/messages?dir=b&from=zzz", tok, nil, 400, "M_INVALID_PARAM"},
		{"messages bad room", "GET", "/_matrix/client/v3/rooms/nope/messages?dir=b", tok, nil, 400, "M_INVALID_PARAM"},
		{"typing other user", "PUT", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/typing/" + url.PathEscape(alice), bobTok, `{"typing":true}`, 403, "M_FORBIDDEN"},
		{"typing not joined", "PUT", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/typing/" + url.PathEscape(bob), bobTok, `{"typing":true}`, 403, "M_FORBIDDEN"},
		{"typing missing field", "PUT", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/typing/" + url.PathEscape(alice), tok, `{}`, 400, "M_BAD_JSON"},
		{"receipt bad type", "POST", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/receipt/m.nope/$x", tok, `{}`, 400, "M_INVALID_PARAM"},
		{"receipt unknown event", "POST", "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/receipt/m.read/$nope", tok, `{}`, 404, "M_NOT_FOUND"},
		{"account data other user", "PUT", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/account_data/x", bobTok, `{}`, 403, "M_FORBIDDEN"},
		{"account data not object", "PUT", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/account_data/x", tok, `[]`, 400, "M_BAD_JSON"},
		{"account data missing", "GET", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/account_data/nothing", tok, nil, 404, "M_NOT_FOUND"},
		{"fully_read via account data", "PUT", "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/rooms/" + url.PathEscape(room) + "/account_data/m.fully_read", tok, `{}`, 405, "M_BAD_JSON"},
		{"to-device bad user", "PUT", "/_matrix/client/v3/sendToDevice/m.x/t1", tok, `{"messages":{"bob":{"D":{}}}}`, 400, "M_INVALID_PARAM"},
		{"to-device no messages", "PUT", "/_matrix/client/v3/sendToDevice/m.x/t2", tok, `{}`, 400, "M_BAD_JSON"},
	}
	for _, c := range cases {
		status, raw := e.do(c.method, c.path, c.token, c.body, nil)
		if status != c.status || errcode(raw) != c.errcode {
			t.Errorf("%s: got %d %s, want %d %s", c.name, status, raw, c.status, c.errcode)
		}
	}

	// Out-of-range numbers are clamped, not errors: a negative timeout
	// answers at once, a huge limit is capped.
	start := time.Now()
	status, raw = e.do("GET", "/_matrix/client/v3/sync?timeout=-100&since="+url.QueryEscape(resp.NextBatch), tok, nil, nil)
	if status != 200 || time.Since(start) > 20*time.Second {
		t.Fatalf("negative timeout: %d %s", status, raw)
	}
	status, raw = e.do("GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":100000000}}}`), tok, nil, nil)
	if status != 200 {
		t.Fatalf("huge limit: %d %s", status, raw)
	}
	status, raw = e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=99999999", tok, nil, nil)
	if status != 200 {
		t.Fatalf("huge messages limit: %d %s", status, raw)
	}
	// A token from the future is treated as now.
	status, raw = e.do("GET", "/_matrix/client/v3/sync?since=s999999_999_999_999_999", tok, nil, nil)
	if status != 200 {
		t.Fatalf("future since: %d %s", status, raw)
	}
}

func TestEphemeralAccountDataAndToDevice(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, aliceTok := e.user("alice")
	bob, bobTok := e.user("bob")
	room := "!eph:test.local"
	e.createRoom(room, alice, "shared")
	e.join(room, bob)
	msg := e.message(room, alice, "read me")
	since := e.sync(bobTok, "", "", 0).NextBatch
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(room)

	ok := func(method, path, token string, body any) {
		t.Helper()
		if status, raw := e.do(method, path, token, body, nil); status != 200 {
			t.Fatalf("%s %s: %d %s", method, path, status, raw)
		}
	}
	ok("PUT", roomPath+"/typing/"+url.PathEscape(alice), aliceTok, map[string]any{"typing": true, "timeout": 30000})
	ok("POST", roomPath+"/receipt/m.read/"+url.PathEscape(msg), aliceTok, map[string]any{})
	ok("POST", roomPath+"/receipt/m.read.private/"+url.PathEscape(msg), aliceTok, map[string]any{})
	ok("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", aliceTok, map[string]any{"messages": map[string]any{bob: map[string]any{"*": map[string]any{"n": 1}}}})
	ok("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", aliceTok, map[string]any{"messages": map[string]any{bob: map[string]any{"*": map[string]any{"n": 1}}}})
	ok("PUT", "/_matrix/client/v3/user/"+url.PathEscape(bob)+"/account_data/m.direct", bobTok, map[string]any{"x": []string{}})
	ok("PUT", "/_matrix/client/v3/user/"+url.PathEscape(bob)+"/rooms/"+url.PathEscape(room)+"/tags/u.work", bobTok, map[string]any{"order": 0.5})
	ok("POST", roomPath+"/read_markers", bobTok, map[string]any{"m.fully_read": msg, "m.read": msg})

	resp := e.sync(bobTok, since, "", 0)
	jr := resp.Rooms.Join[room]
	var typing, receipt *testEvent
	for i, ev := range jr.Ephemeral.Events {
		switch ev.Type {
		case "m.typing":
			typing = &jr.Ephemeral.Events[i]
		case "m.receipt":
			receipt = &jr.Ephemeral.Events[i]
		}
	}
	if typing == nil || string(typing.Content) != fmt.Sprintf(`{"user_ids":[%q]}`, alice) {
		t.Fatalf("typing = %+v", typing)
	}
	if receipt == nil || !containsAll(string(receipt.Content), msg, alice, bob, "m.read") || containsAll(string(receipt.Content), "m.read.private") {
		t.Fatalf("receipts = %s (alice's private receipt must not reach bob)", receipt.Content)
	}
	if len(resp.ToDevice.Events) != 1 || resp.ToDevice.Events[0].Sender != alice || string(resp.ToDevice.Events[0].Content) != `{"n":1}` {
		t.Fatalf("to_device = %+v (want exactly one: the repeated txn is not redelivered)", resp.ToDevice.Events)
	}
	if len(resp.AccountData.Events) != 1 || resp.AccountData.Events[0].Type != "m.direct" {
		t.Fatalf("global account data = %+v", resp.AccountData.Events)
	}
	roomAD := map[string]string{}
	for _, ev := range jr.AccountData.Events {
		roomAD[ev.Type] = string(ev.Content)
	}
	if roomAD["m.tag"] != `{"tags":{"u.work":{"order":0.5}}}` || roomAD["m.fully_read"] != fmt.Sprintf(`{"event_id":%q}`, msg) {
		t.Fatalf("room account data = %v", roomAD)
	}
	var tags map[string]any
	e.do("GET", "/_matrix/client/v3/user/"+url.PathEscape(bob)+"/rooms/"+url.PathEscape(room)+"/tags", bobTok, nil, &tags)
	if fmt.Sprint(tags) != "map[tags:map[u.work:map[order:0.5]]]" {
		t.Fatalf("tags = %v", tags)
	}

	// The next sync acknowledges the to-device message: it is not sent
	// again, and it is gone from the inbox.
	again := e.sync(bobTok, resp.NextBatch, "", 0)
	if len(again.ToDevice.Events) != 0 {
		t.Fatalf("to-device delivered twice: %+v", again.ToDevice.Events)
	}
	left, _ := e.svc.db.ToDeviceInbox(context.Background(), bob, "DEV_bob", 0, 1<<62, 10)
	if len(left) != 0 {
		t.Fatalf("acknowledged to-device messages still stored: %+v", left)
	}

	// Typing stops; the change is synced.
	ok("PUT", roomPath+"/typing/"+url.PathEscape(alice), aliceTok, map[string]any{"typing": false})
	stopped := e.sync(bobTok, again.NextBatch, "", 0)
	evs := stopped.Rooms.Join[room].Ephemeral.Events
	if len(evs) != 1 || string(evs[0].Content) != `{"user_ids":[]}` {
		t.Fatalf("typing stop = %+v", evs)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
