package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
)

func openTest(t *testing.T, dbURL string) *DB {
	t.Helper()
	sdb, err := sqlutil.Open(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdb.Close() })
	d, err := Open(context.Background(), sdb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), sdb); err != nil { // migrating twice is a no-op
		t.Fatal(err)
	}
	return d
}

// roomBuilder makes NewEvents the way the roomserver would publish them.
type roomBuilder struct {
	roomID string
	pos    int64
	n      int
}

func (b *roomBuilder) ev(sender, typ string, stateKey *string, content map[string]any) *NewEvent {
	b.pos++
	b.n++
	id := fmt.Sprintf("$ev%d-%s", b.n, b.roomID)
	js, _ := json.Marshal(map[string]any{"type": typ, "sender": sender, "room_id": b.roomID, "content": content,
		"state_key": stateKey, "origin_server_ts": 1000 + b.n, "depth": b.n, "prev_events": []string{}, "auth_events": []string{}})
	ev := &NewEvent{RoomID: b.roomID, RoomVersion: "10", RoomPosition: b.pos, EventID: id, Sender: sender, Type: typ,
		StateKey: stateKey, JSON: js, OriginServerTS: int64(1000 + b.n)}
	if stateKey != nil {
		ev.AddsState = []string{id}
	}
	if typ == "m.room.member" {
		ev.Membership, _ = content["membership"].(string)
	}
	if typ == "m.room.history_visibility" {
		ev.HistoryVisibility, _ = content["history_visibility"].(string)
	}
	return ev
}

func sk(s string) *string { return &s }

func mustStore(t *testing.T, d *DB, ev *NewEvent) StoreResult {
	t.Helper()
	res, err := d.StoreEvent(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestStoreEventsStateAndMemberships(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		b := &roomBuilder{roomID: "!r:x"}
		create := b.ev("@a:x", "m.room.create", sk(""), map[string]any{"creator": "@a:x"})
		r1 := mustStore(t, d, create)
		join := b.ev("@a:x", "m.room.member", sk("@a:x"), map[string]any{"membership": "join"})
		r2 := mustStore(t, d, join)
		if len(r2.Changes) != 1 || r2.Changes[0] != (MembershipChange{"@a:x", "join"}) {
			t.Fatalf("changes = %+v", r2.Changes)
		}
		// A redelivery of an already stored event changes nothing.
		if again := mustStore(t, d, join); !again.Duplicate {
			t.Fatal("redelivered event was not reported as duplicate")
		}
		hv := b.ev("@a:x", "m.room.history_visibility", sk(""), map[string]any{"history_visibility": "joined"})
		mustStore(t, d, hv)
		msg := b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "hi"})
		msg.TxnDeviceID, msg.TxnID = "DEV", "t1"
		r4 := mustStore(t, d, msg)
		invite := b.ev("@a:x", "m.room.member", sk("@b:x"), map[string]any{"membership": "invite"})
		mustStore(t, d, invite)
		soft := b.ev("@evil:y", "m.room.message", nil, map[string]any{"body": "spam"})
		soft.SoftFailed = true
		mustStore(t, d, soft)

		if r1.Position >= r2.Position || r2.Position >= r4.Position {
			t.Fatalf("positions not increasing: %d %d %d", r1.Position, r2.Position, r4.Position)
		}
		evs, err := d.RoomEvents(ctx, RangeQuery{RoomID: "!r:x", Before: 1 << 62, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 5 {
			t.Fatalf("want 5 visible events (soft-failed hidden, no duplicate), got %d", len(evs))
		}
		if evs[3].EventID != msg.EventID || evs[3].HistoryVisibility != "joined" || evs[3].TxnID != "t1" {
			t.Fatalf("message stored as %+v", evs[3])
		}
		if evs[2].HistoryVisibility != "shared" {
			t.Fatalf("visibility change should be governed by the more permissive value, got %q", evs[2].HistoryVisibility)
		}
		back, err := d.RoomEvents(ctx, RangeQuery{RoomID: "!r:x", Before: r4.Position, Backwards: true, Limit: 2, NotTypes: []string{"m.room.create"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != 2 || back[0].EventID != msg.EventID || back[1].EventID != hv.EventID {
			t.Fatalf("backwards page = %+v", back)
		}

		state, err := d.CurrentState(ctx, StateQuery{RoomID: "!r:x"})
		if err != nil {
			t.Fatal(err)
		}
		if len(state) != 4 {
			t.Fatalf("current state has %d events, want 4", len(state))
		}
		members, err := d.CurrentState(ctx, StateQuery{RoomID: "!r:x", MemberKeys: []string{"@b:x"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(members) != 3 {
			t.Fatalf("lazy-loaded state has %d events, want 3 (create, visibility, @b's member)", len(members))
		}
		rooms, err := d.RoomsForUser(ctx, "@b:x")
		if err != nil {
			t.Fatal(err)
		}
		if len(rooms) != 1 || rooms[0].Membership != "invite" {
			t.Fatalf("rooms for @b = %+v", rooms)
		}
		sum, err := d.JoinedOrInvited(ctx, "!r:x")
		if err != nil {
			t.Fatal(err)
		}
		if len(sum) != 2 || sum[0].UserID != "@a:x" || sum[0].Membership != "join" || sum[1].UserID != "@b:x" || sum[1].Membership != "invite" {
			t.Fatalf("joined or invited = %+v", sum)
		}
		entries, err := d.CurrentStateEntries(ctx, "!r:x")
		if err != nil {
			t.Fatal(err)
		}
		all, err := d.CurrentState(ctx, StateQuery{RoomID: "!r:x"})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(all) {
			t.Fatalf("%d state entries, %d state events", len(entries), len(all))
		}
		for i := range entries {
			if entries[i].EventID != all[i].EventID || entries[i].ChangedAt != all[i].Position || string(entries[i].JSON) != string(all[i].JSON) {
				t.Fatalf("state entry %d = %+v, event %+v", i, entries[i], all[i])
			}
		}

		// A later member event replaces the old one and keeps prev_content.
		leave := b.ev("@a:x", "m.room.member", sk("@a:x"), map[string]any{"membership": "leave"})
		leave.RemovesState = []string{join.EventID}
		mustStore(t, d, leave)
		hist, err := d.MembershipHistory(ctx, "!r:x", "@a:x")
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 2 || hist[0].Membership != "join" || hist[1].Membership != "leave" {
			t.Fatalf("history = %+v", hist)
		}
		got, _, err := d.EventByID(ctx, leave.EventID)
		if err != nil || got == nil {
			t.Fatal(err)
		}
		if string(got.PrevContent) != `{"membership":"join"}` {
			t.Fatalf("prev_content = %s", got.PrevContent)
		}

		// Redaction strips the target's content.
		red := b.ev("@a:x", "m.room.redaction", nil, map[string]any{"redacts": msg.EventID})
		red.Redacts = msg.EventID
		mustStore(t, d, red)
		got, _, _ = d.EventByID(ctx, msg.EventID)
		var parsed struct {
			Content map[string]any `json:"content"`
		}
		_ = json.Unmarshal(got.JSON, &parsed)
		if len(parsed.Content) != 0 || got.RedactedBecause == nil {
			t.Fatalf("redacted event = %s because %s", got.JSON, got.RedactedBecause)
		}

		pos := map[string]int64{}
		if err := d.AllRoomLastPositions(ctx, func(roomID string, p int64) { pos[roomID] = p }); err != nil {
			t.Fatal(err)
		}
		cur, err := d.CurrentPositions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pos["!r:x"] != cur.Events || len(pos) != 1 {
			t.Fatalf("room last positions %v, current %d", pos, cur.Events)
		}
	})
}

func TestUserDataStreams(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)

		p1, err := d.PutAccountData(ctx, "@a:x", "", "m.push_rules", []byte(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		p2, _ := d.PutAccountData(ctx, "@a:x", "!r:x", "m.tag", []byte(`{"tags":{}}`))
		p3, _ := d.PutAccountData(ctx, "@a:x", "", "m.push_rules", []byte(`{"a":2}`))
		if !(p1 < p2 && p2 < p3) {
			t.Fatalf("positions %d %d %d", p1, p2, p3)
		}
		ad, err := d.AccountDataSince(ctx, "@a:x", p1, p3)
		if err != nil {
			t.Fatal(err)
		}
		if len(ad) != 2 || ad[0].RoomID != "!r:x" || string(ad[1].Content) != `{"a":2}` {
			t.Fatalf("account data since = %+v", ad)
		}
		if c, _ := d.GetAccountData(ctx, "@a:x", "", "nope"); c != nil {
			t.Fatal("missing account data returned content")
		}

		r1, _ := d.PutReceipt(ctx, Receipt{RoomID: "!r:x", Type: "m.read", UserID: "@a:x", EventID: "$1", TS: 5})
		r2, _ := d.PutReceipt(ctx, Receipt{RoomID: "!r:x", Type: "m.read", UserID: "@a:x", EventID: "$2", TS: 6})
		rs, err := d.ReceiptsSince(ctx, []string{"!r:x", "!other:x"}, 0, r2)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 1 || rs[0].EventID != "$2" || r1 >= r2 {
			t.Fatalf("receipts = %+v", rs)
		}

		msgs := []ToDeviceMessage{{UserID: "@b:x", DeviceID: "D1", Type: "m.x", Content: []byte(`{"n":1}`)},
			{UserID: "@b:x", DeviceID: "D1", Type: "m.x", Content: []byte(`{"n":2}`)}}
		last, dup, err := d.QueueToDevice(ctx, "@a:x", "A", "txn1", msgs)
		if err != nil || dup {
			t.Fatal(err, dup)
		}
		if _, dup, _ := d.QueueToDevice(ctx, "@a:x", "A", "txn1", msgs); !dup {
			t.Fatal("repeated transaction was queued again")
		}
		inbox, err := d.ToDeviceInbox(ctx, "@b:x", "D1", 0, last, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(inbox) != 2 || string(inbox[0].Content) != `{"n":1}` {
			t.Fatalf("inbox = %+v", inbox)
		}
		if err := d.DeleteToDeviceUpTo(ctx, "@b:x", "D1", inbox[0].Position); err != nil {
			t.Fatal(err)
		}
		inbox, _ = d.ToDeviceInbox(ctx, "@b:x", "D1", 0, last, 100)
		if len(inbox) != 1 || string(inbox[0].Content) != `{"n":2}` {
			t.Fatalf("inbox after ack = %+v", inbox)
		}

		id, err := d.PutFilter(ctx, "@a:x", []byte(`{"room":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		if f, _ := d.GetFilter(ctx, "@a:x", id); string(f) != `{"room":{}}` {
			t.Fatalf("filter = %s", f)
		}
		for _, bad := range []struct{ user, id string }{{"@b:x", id}, {"@a:x", "999"}, {"@a:x", "x"}, {"@a:x", "01"}} {
			if f, err := d.GetFilter(ctx, bad.user, bad.id); f != nil || err != nil {
				t.Fatalf("GetFilter(%q, %q) = %s, %v", bad.user, bad.id, f, err)
			}
		}
	})
}
