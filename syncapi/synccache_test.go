package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"testing"

	"github.com/parley-chat/parley/syncapi/storage"
)

func TestLoadingCacheDropsLoadsRacingAChange(t *testing.T) {
	ctx := context.Background()
	c := newLoadingCache[string, int](2, nil)
	loads := 0
	load := func(v int) func(context.Context) (int, error) {
		return func(context.Context) (int, error) { loads++; return v, nil }
	}
	// A change while the load is in flight: the loaded value is used once
	// but not kept.
	got, _ := c.get(ctx, "a", func(context.Context) (int, error) {
		c.invalidate("a")
		return 1, nil
	})
	if got != 1 {
		t.Fatalf("got %d", got)
	}
	if got, _ := c.get(ctx, "a", load(2)); got != 2 || loads != 1 {
		t.Fatalf("after a racing invalidation: got %d after %d loads, want a reload", got, loads)
	}
	if got, _ := c.get(ctx, "a", load(3)); got != 2 || loads != 1 {
		t.Fatalf("cached value: got %d after %d loads", got, loads)
	}
	c.update("a", func(int) bool { return false })
	if got, _ := c.get(ctx, "a", load(4)); got != 4 {
		t.Fatalf("dropped by update: got %d", got)
	}
	// Errors are not cached; the bound evicts the least recently used.
	if _, err := c.get(ctx, "b", func(context.Context) (int, error) { return 0, errors.New("boom") }); err == nil {
		t.Fatal("load error lost")
	}
	c.get(ctx, "b", load(5))
	c.get(ctx, "a", load(6))
	c.get(ctx, "c", load(7))
	if c.lru.len() != 2 {
		t.Fatalf("%d entries, bound 2", c.lru.len())
	}
	if got, _ := c.get(ctx, "b", load(8)); got != 8 {
		t.Fatalf("least recently used entry was kept: %d", got)
	}
}

// syncBothWays builds the same incremental sync from the caches and, with
// the room tails dropped, from the database, and fails unless both give
// the same rooms, timelines, state and summaries.
func syncBothWays(t *testing.T, e *env, userID, deviceID string, since StreamToken, filter *Filter) *syncResponse {
	t.Helper()
	ctx := context.Background()
	req := &syncRequest{userID: userID, deviceID: deviceID, since: &since, filter: filter}
	cur, _ := e.svc.currentToken(ctx)
	cached, err := e.svc.buildSync(ctx, req, cur)
	if err != nil {
		t.Fatal(err)
	}
	c := e.svc.caches
	c.roomsMu.Lock()
	saved := c.tails
	c.tails = newLRU[string, *roomTail](maxTailRooms, nil)
	c.roomsMu.Unlock()
	fromDB, err := e.svc.buildSync(ctx, req, cur)
	c.roomsMu.Lock()
	c.tails = saved
	c.roomsMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	type roomView struct {
		Timeline  []string
		Limited   bool
		PrevBatch string
		State     []string
		Summary   *roomSummary
		Relations []string
	}
	view := func(r *syncResponse) map[string]roomView {
		out := map[string]roomView{}
		for id, jr := range r.Rooms.Join {
			v := roomView{Limited: jr.Timeline.Limited, PrevBatch: jr.Timeline.PrevBatch, Summary: jr.Summary}
			for _, raw := range jr.Timeline.Events {
				var ev struct {
					EventID  string `json:"event_id"`
					Unsigned struct {
						Relations json.RawMessage `json:"m.relations"`
					} `json:"unsigned"`
				}
				_ = json.Unmarshal(raw, &ev)
				v.Timeline = append(v.Timeline, ev.EventID)
				// Ages differ by the time between the two builds.
				v.Relations = append(v.Relations, ageRE.ReplaceAllString(string(ev.Unsigned.Relations), ""))
			}
			for _, raw := range jr.State.Events {
				var ev struct {
					EventID string `json:"event_id"`
				}
				_ = json.Unmarshal(raw, &ev)
				v.State = append(v.State, ev.EventID)
			}
			out[id] = v
		}
		return out
	}
	a, b := view(cached), view(fromDB)
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("sync since %s differs:\n from the tail: %s\n from the DB:   %s", since, ja, jb)
	}
	return cached
}

var ageRE = regexp.MustCompile(`"age":[0-9]+`)

func timelineIDs(r *syncResponse, roomID string) []string {
	jr := r.Rooms.Join[roomID]
	if jr == nil {
		return nil
	}
	var out []string
	for _, raw := range jr.Timeline.Events {
		var ev struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(raw, &ev)
		out = append(out, ev.EventID)
	}
	return out
}

func TestTailAnswersLikeTheDatabase(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		alice, _ := e.user("alice")
		bob, _ := e.user("bob")
		room := "!tail:test.local"
		e.createRoom(room, alice, "joined")
		e.join(room, bob)
		ctx := context.Background()
		tok := func() StreamToken { cur, _ := e.svc.currentToken(ctx); return cur }

		t0 := tok()
		m1 := e.message(room, alice, "one")
		m2 := e.message(room, bob, "two")
		if _, ok := e.svc.caches.tailBetween(room, t0.Events, tok().Events); !ok {
			t.Fatal("the tail does not cover a token taken just before two messages")
		}
		r := syncBothWays(t, e, bob, "DEV_bob", t0, nil)
		if got := timelineIDs(r, room); !slices.Equal(got, []string{m1, m2}) {
			t.Fatalf("timeline %v, want [%s %s]", got, m1, m2)
		}

		// A soft-failed event is in the tail but never shown.
		oe := e.output(room, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "soft"}, nil)
		oe.SoftFailed = true
		e.publish(oe)
		e.waitStored(oe.EventID)
		m3 := e.message(room, alice, "three")
		r = syncBothWays(t, e, bob, "DEV_bob", t0, nil)
		if got := timelineIDs(r, room); slices.Contains(got, oe.EventID) || !slices.Contains(got, m3) {
			t.Fatalf("timeline %v: must hide the soft-failed %s and show %s", got, oe.EventID, m3)
		}

		// Filters apply: senders, types, limits (limited and prev_batch).
		notAlice := &Filter{Room: &RoomFilter{Timeline: &RoomEventFilter{EventFilter: EventFilter{NotSenders: []string{alice}}}}}
		if got := timelineIDs(syncBothWays(t, e, bob, "DEV_bob", t0, notAlice), room); !slices.Equal(got, []string{m2}) {
			t.Fatalf("not_senders alice: timeline %v", got)
		}
		one := 1
		limitOne := &Filter{Room: &RoomFilter{Timeline: &RoomEventFilter{EventFilter: EventFilter{Limit: &one}}}}
		r = syncBothWays(t, e, bob, "DEV_bob", t0, limitOne)
		if got := timelineIDs(r, room); !slices.Equal(got, []string{m3}) || !r.Rooms.Join[room].Timeline.Limited {
			t.Fatalf("limit 1: timeline %v limited %v", got, r.Rooms.Join[room].Timeline.Limited)
		}
		lazy := &Filter{Room: &RoomFilter{State: &RoomEventFilter{LazyLoadMembers: true}}}
		if r := syncBothWays(t, e, bob, "DEV_bob", t0, lazy); len(r.Rooms.Join[room].State.Events) == 0 {
			t.Fatal("lazy-loading: no member events for the timeline's senders")
		}
		noMessages := &Filter{Room: &RoomFilter{Timeline: &RoomEventFilter{EventFilter: EventFilter{NotTypes: []string{"m.room.*"}}}}}
		if r := syncBothWays(t, e, bob, "DEV_bob", t0, noMessages); r.Rooms.Join[room] != nil {
			t.Fatal("a room whose new events are all filtered out was sent")
		}

		// An edit gives m1 bundled aggregations, whether the tail saw the
		// edit arrive or the edit was stored before the tail knew m1.
		t1 := tok()
		edit := e.event(room, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "* one!",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "one!"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": m1}}, nil)
		r = syncBothWays(t, e, bob, "DEV_bob", t0, nil)
		if jr := r.Rooms.Join[room]; jr == nil || !slices.Contains(timelineIDs(r, room), edit) {
			t.Fatalf("edit missing: %v", timelineIDs(r, room))
		}
		if raw := r.Rooms.Join[room].Timeline.Events[0]; !json.Valid(raw) || !containsAll(string(raw), `"m.relations"`, edit) {
			t.Fatalf("m1 without its edit bundled: %s", raw)
		}
		syncBothWays(t, e, bob, "DEV_bob", t1, nil)
		// A child stored before its parent (as federation can deliver
		// them): the parent's aggregations are found when it is stored.
		parent := e.output(room, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "late parent"}, nil)
		child := e.output(room, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "* late!",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "late!"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": parent.EventID}}, nil)
		parent.RoomPosition, child.RoomPosition = child.RoomPosition, parent.RoomPosition
		e.publish(child)
		e.waitStored(child.EventID)
		e.publish(parent)
		e.waitStored(parent.EventID)
		r = syncBothWays(t, e, bob, "DEV_bob", t1, nil)
		if jr := r.Rooms.Join[room]; jr == nil || !containsAll(string(jr.Timeline.Events[len(jr.Timeline.Events)-1]), parent.EventID, `"m.relations"`) {
			t.Fatalf("late parent without its bundled edit: %v", timelineIDs(r, room))
		}

		// A redaction restarts the tail: syncs reaching back before it read
		// the redacted event from the database.
		t2 := tok()
		red := e.redact(room, alice, m2)
		r = syncBothWays(t, e, bob, "DEV_bob", t0, nil)
		for _, raw := range r.Rooms.Join[room].Timeline.Events {
			if containsAll(string(raw), m2+`"`, `"two"`) {
				t.Fatalf("redacted event still has its body: %s", raw)
			}
		}
		if _, ok := e.svc.caches.tailBetween(room, t0.Events, tok().Events); ok {
			t.Fatal("the tail still reaches back before a redaction")
		}
		if got := timelineIDs(syncBothWays(t, e, bob, "DEV_bob", t2, nil), room); !slices.Equal(got, []string{red}) {
			t.Fatalf("after the redaction: timeline %v", got)
		}

		// A state change in range goes to the database (state and summary).
		t3 := tok()
		e.event(room, alice, "m.room.topic", sk(""), map[string]any{"topic": "new"}, nil)
		carol, _ := e.user("carol")
		e.join(room, carol)
		r = syncBothWays(t, e, bob, "DEV_bob", t3, nil)
		if r.Rooms.Join[room].Summary == nil || r.Rooms.Join[room].Summary.JoinedMemberCount != 3 {
			t.Fatalf("summary after carol joined: %+v", r.Rooms.Join[room].Summary)
		}
	})
}

// The tail never shows a user an event from after they left, nor gives a
// user who was not joined at the token the room from the tail.
func TestTailNeverShowsWhatTheUserMayNotSee(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		alice, _ := e.user("alice")
		bob, bobTok := e.user("bob")
		room := "!vis:test.local"
		e.createRoom(room, alice, "joined")
		e.join(room, bob)
		ctx := context.Background()
		before, _ := e.svc.currentToken(ctx)
		e.message(room, alice, "seen")
		leave := e.event(room, bob, "m.room.member", sk(bob), map[string]any{"membership": "leave"}, nil)
		secret := e.message(room, alice, "after bob left")

		r := syncBothWays(t, e, bob, "DEV_bob", before, nil)
		if r.Rooms.Join[room] != nil {
			t.Fatal("bob's room is still in join after he left")
		}
		var resp syncResp
		e.do("GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(before.String())+"&timeout=0", bobTok, nil, &resp)
		if got := ids(resp.Rooms.Leave[room].Timeline.Events); slices.Contains(got, secret) || !slices.Contains(got, leave) {
			t.Fatalf("leave timeline %v: must end at the leave %s, without %s", got, leave, secret)
		}

		// Dave joins after messages he may not see (joined-only history):
		// his first incremental sync after the join gets the room fresh,
		// from his join on, never the tail's older events.
		dave, _ := e.user("dave")
		early, _ := e.svc.currentToken(ctx)
		hidden := e.message(room, alice, "before dave")
		e.join(room, dave)
		visible := e.message(room, alice, "for dave")
		r = syncBothWays(t, e, dave, "DEV_dave", early, nil)
		if got := timelineIDs(r, room); slices.Contains(got, hidden) || !slices.Contains(got, visible) {
			t.Fatalf("dave's timeline %v: must not show %s", got, hidden)
		}
	})
}

func TestCachedRoomListFollowsMembership(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		ctx := context.Background()
		alice, _ := e.user("alice")
		bob, bobTok := e.user("bob")
		room := "!list:test.local"
		e.createRoom(room, alice, "shared")
		r := e.sync(bobTok, "", "", 0) // caches bob's (empty) room list
		if len(r.Rooms.Join) != 0 {
			t.Fatalf("bob is in %v", r.Rooms.Join)
		}
		e.join(room, bob)
		r = e.sync(bobTok, r.NextBatch, "", 0)
		if _, ok := r.Rooms.Join[room]; !ok {
			t.Fatal("bob's join did not reach the cached room list")
		}
		e.event(room, bob, "m.room.member", sk(bob), map[string]any{"membership": "leave"}, nil)
		r = e.sync(bobTok, r.NextBatch, "", 0)
		if _, ok := r.Rooms.Leave[room]; !ok {
			t.Fatalf("bob's leave did not reach the cached room list: %+v", r.Rooms)
		}
		cached, err := e.svc.roomsForUser(ctx, bob)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := e.svc.db.RoomsForUser(ctx, bob)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cached, stored) {
			t.Fatalf("cached rooms %+v, stored %+v", cached, stored)
		}
	})
}

func TestCachedSummaryAndStateFollowTheRoom(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		ctx := context.Background()
		alice, aliceTok := e.user("alice")
		room := "!sum:test.local"
		e.createRoom(room, alice, "shared")
		check := func(what string) {
			t.Helper()
			r := e.sync(aliceTok, "", "", 0)
			jr := r.Rooms.Join[room]
			members, err := e.svc.db.JoinedOrInvited(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			joined, invited, heroes := 0, 0, []string{}
			for _, m := range members {
				if m.Membership == "join" {
					joined++
				} else {
					invited++
				}
				if m.UserID != alice && len(heroes) < heroesLimit {
					heroes = append(heroes, m.UserID)
				}
			}
			want := map[string]any{"m.joined_member_count": float64(joined), "m.invited_member_count": float64(invited)}
			if jr.Summary["m.joined_member_count"] != want["m.joined_member_count"] || jr.Summary["m.invited_member_count"] != want["m.invited_member_count"] {
				t.Fatalf("%s: summary %v, want counts %v", what, jr.Summary, want)
			}
			gotHeroes, _ := json.Marshal(jr.Summary["m.heroes"])
			wantHeroes, _ := json.Marshal(heroes)
			if string(gotHeroes) != string(wantHeroes) {
				t.Fatalf("%s: heroes %s, want %s", what, gotHeroes, wantHeroes)
			}
			stored, err := e.svc.db.CurrentState(ctx, storage.StateQuery{RoomID: room})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ev := range jr.State.Events {
				got = append(got, ev.EventID)
			}
			got = append(got, ids(jr.Timeline.Events)...)
			for _, ev := range stored {
				if !slices.Contains(got, ev.EventID) {
					t.Fatalf("%s: current state event %s (%s) missing from the initial sync", what, ev.EventID, ev.Type)
				}
			}
		}
		check("created")
		for _, u := range []string{"bob", "carol", "dave"} {
			id, _ := e.user(u)
			e.join(room, id)
			check(u + " joined")
		}
		eve, _ := e.user("eve")
		e.event(room, alice, "m.room.member", sk(eve), map[string]any{"membership": "invite"}, nil)
		check("eve invited")
		e.event(room, "@bob:test.local", "m.room.member", sk("@bob:test.local"), map[string]any{"membership": "leave"}, nil)
		check("bob left")
		e.event(room, alice, "m.room.topic", sk(""), map[string]any{"topic": "t"}, nil)
		check("topic set")

		// State resolution: a soft-failed topic becomes current state
		// through a later event's adds_state.
		soft := e.output(room, alice, "m.room.topic", sk(""), map[string]any{"topic": "resolved"}, nil)
		soft.SoftFailed, soft.AddsStateEventIDs, soft.RemovesStateEventIDs = true, nil, nil
		e.publish(soft)
		e.waitStored(soft.EventID)
		oe := e.output(room, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "x"}, nil)
		r := e.sync(aliceTok, "", "", 0)
		var oldTopic string
		for _, ev := range r.Rooms.Join[room].State.Events {
			if ev.Type == "m.room.topic" {
				oldTopic = ev.EventID
			}
		}
		oe.AddsStateEventIDs, oe.RemovesStateEventIDs = []string{soft.EventID}, []string{oldTopic}
		e.publish(oe)
		e.waitStored(oe.EventID)
		check("topic resolved")
		r = e.sync(aliceTok, "", "", 0)
		found := false
		for _, ev := range r.Rooms.Join[room].State.Events {
			found = found || ev.EventID == soft.EventID
		}
		if !found {
			t.Fatal("state resolution's topic is not in the cached state")
		}
	})
}

// Events published faster than they are stored are stored several to a
// transaction: every one arrives, in order, with the membership changes
// among them applied, and the tail answers the same as the database.
func TestBurstOfOutputEvents(t *testing.T) {
	forEachDB(t, func(t *testing.T, dialect string) {
		e := newEnv(t, dialect)
		ctx := context.Background()
		alice, _ := e.user("alice")
		bob, _ := e.user("bob")
		room := "!burst:test.local"
		e.createRoom(room, alice, "shared")
		e.join(room, bob)
		start, _ := e.svc.currentToken(ctx)
		if _, err := e.svc.unreadCounts(ctx, bob, []string{room}); err != nil { // cached before the burst
			t.Fatal(err)
		}
		carol, _ := e.user("carol")
		var want []string
		var last string
		for i := range 30 {
			oe := e.output(room, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": fmt.Sprint("burst ", i)}, nil)
			if i == 15 {
				oe = e.output(room, carol, "m.room.member", sk(carol), map[string]any{"membership": "join"}, nil)
			}
			e.publish(oe)
			want = append(want, oe.EventID)
			last = oe.EventID
		}
		e.waitStored(last)
		hundred := 100
		r := syncBothWays(t, e, bob, "DEV_bob", start, &Filter{Room: &RoomFilter{Timeline: &RoomEventFilter{EventFilter: EventFilter{Limit: &hundred}}}})
		if got := timelineIDs(r, room); !slices.Equal(got, want) {
			t.Fatalf("timeline after a burst:\n got %v\nwant %v", got, want)
		}
		if r.Rooms.Join[room].Summary == nil || r.Rooms.Join[room].Summary.JoinedMemberCount != 3 {
			t.Fatalf("summary after carol joined in a burst: %+v", r.Rooms.Join[room].Summary)
		}
		if users := e.svc.notifier.JoinedUsers(room); !slices.Contains(users, carol) {
			t.Fatalf("notifier's members %v lack carol", users)
		}
		// Counted in memory as the batches were stored, as in the table.
		cached, err := e.svc.unreadCounts(ctx, bob, []string{room})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := e.svc.db.AllUnreadCounts(ctx, bob)
		if err != nil {
			t.Fatal(err)
		}
		if len(cached) != 1 || !slices.Equal(cached, stored) || cached[0].Notifications != 29 {
			t.Fatalf("bob's counts: cached %+v, stored %+v, want 29 notifications", cached, stored)
		}
	})
}
