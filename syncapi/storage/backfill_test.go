package storage

import (
	"context"
	"fmt"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func bfMsg(depth int64) BackfilledEvent {
	return BackfilledEvent{EventID: fmt.Sprintf("$m%d", depth), Depth: depth, Sender: "@a:x", Type: "m.room.message",
		JSON: []byte(`{"content":{"body":"x"}}`), OriginServerTS: depth}
}

func bfVisibility(depth int64, value string) BackfilledEvent {
	return BackfilledEvent{EventID: fmt.Sprintf("$hv%d", depth), Depth: depth, Sender: "@a:x", Type: "m.room.history_visibility",
		StateKey: sk(""), HistoryVisibility: value, JSON: []byte(`{}`), OriginServerTS: depth}
}

func visibilities(t *testing.T, d *DB, roomID string) map[string]string {
	t.Helper()
	rows, err := d.BackfillEvents(context.Background(), roomID, nil, true, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rows {
		out[r.EventID] = r.HistoryVisibility
	}
	return out
}

func TestBackfillVisibilityWalk(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		if err := d.MigrateBackfill(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.MigrateBackfill(ctx); err != nil { // twice is a no-op
			t.Fatal(err)
		}
		const room = "!r:x"
		// The room as a server that joined late has it: the creation is an
		// outlier (not shown), the join is the first timeline event.
		b := &roomBuilder{roomID: room}
		create := b.ev("@a:x", "m.room.create", sk(""), map[string]any{"creator": "@a:x"})
		create.SoftFailed = true
		mustStore(t, d, create)
		join := b.ev("@b:y", "m.room.member", sk("@b:y"), map[string]any{"membership": "join"})
		join.AddsState = append(join.AddsState, create.EventID)
		mustStore(t, d, join)
		first, createShown, err := d.EarliestEvent(ctx, room)
		if err != nil || first == nil || first.EventID != join.EventID || createShown {
			t.Fatalf("earliest = %+v, create shown %v, %v", first, createShown, err)
		}
		if v, err := d.VisibilityBefore(ctx, room, first.Position); err != nil || v != "shared" {
			t.Fatalf("visibility before the join = %q, %v", v, err)
		}

		// Batch 1, newest first: messages under the start value, a change
		// to shared at depth 11, and messages before it (not known yet).
		// The join itself comes back too and is skipped: it is shown.
		batch := []BackfilledEvent{{EventID: join.EventID, Depth: 21, Sender: "@b:y", Type: "m.room.member", StateKey: sk("@b:y"), Membership: "join", JSON: join.JSON}}
		for dep := int64(20); dep >= 12; dep-- {
			batch = append(batch, bfMsg(dep))
		}
		batch = append(batch, bfVisibility(11, "shared"), bfMsg(10), bfMsg(9), bfMsg(8))
		n, err := d.StoreBackfill(ctx, room, "joined", batch, false)
		if err != nil || n != 13 {
			t.Fatalf("stored %d, %v; want 13", n, err)
		}
		v := visibilities(t, d, room)
		if v["$m20"] != "joined" || v["$m12"] != "joined" || v["$hv11"] != VisibilityUnknown || v["$m8"] != VisibilityUnknown {
			t.Fatalf("after batch 1: %v", v)
		}
		st, err := d.BackfillRoomState(ctx, room)
		if err != nil || !st.Started || st.Complete || len(st.Oldest) != 1 || st.Oldest[0] != "$m8" {
			t.Fatalf("state after batch 1: %+v, %v", st, err)
		}

		// Batch 2 overlaps batch 1 (skipped), then a change to joined at
		// depth 7 resolves depths 8-10, and the creation ends the walk:
		// before the first change the default, shared, applies.
		batch = []BackfilledEvent{bfMsg(9), bfMsg(8), bfVisibility(7, "joined"), bfMsg(6), bfMsg(2),
			{EventID: create.EventID, Depth: 1, Sender: "@a:x", Type: "m.room.create", StateKey: sk(""), JSON: create.JSON, Create: true}}
		if n, err := d.StoreBackfill(ctx, room, "ignored", batch, false); err != nil || n != 4 {
			t.Fatalf("stored %d, %v; want 4", n, err)
		}
		v = visibilities(t, d, room)
		want := map[string]string{"$m20": "joined", "$hv11": "shared", "$m10": "joined", "$m8": "joined",
			"$hv7": "shared", "$m6": "shared", "$m2": "shared", create.EventID: "shared"}
		for id, w := range want {
			if v[id] != w {
				t.Errorf("%s: visibility %q, want %q", id, v[id], w)
			}
		}
		if st, _ := d.BackfillRoomState(ctx, room); !st.Complete {
			t.Fatal("room not complete after the creation was stored")
		}

		// Paging by cursor, both ways.
		page, err := d.BackfillEvents(ctx, room, nil, true, 3)
		if err != nil || len(page) != 3 || page[0].EventID != "$m20" || page[2].EventID != "$m18" {
			t.Fatalf("first page: %+v, %v", page, err)
		}
		next, err := d.BackfillEvents(ctx, room, &page[2].Cursor, true, 2)
		if err != nil || len(next) != 2 || next[0].EventID != "$m17" {
			t.Fatalf("second page: %+v, %v", next, err)
		}
		fwd, err := d.BackfillEvents(ctx, room, &next[0].Cursor, false, 2)
		if err != nil || len(fwd) != 2 || fwd[0].EventID != "$m18" || fwd[1].EventID != "$m19" {
			t.Fatalf("forwards: %+v, %v", fwd, err)
		}

		// A failed fetch is remembered without touching what is stored.
		if err := d.MarkBackfillFailed(ctx, "!other:x", "shared", 12345); err != nil {
			t.Fatal(err)
		}
		if st, _ := d.BackfillRoomState(ctx, "!other:x"); st.RetryAfterMS != 12345 || st.Complete {
			t.Fatalf("failed state: %+v", st)
		}
	})
}

func TestBackfilledMemberships(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		if err := d.MigrateBackfill(ctx); err != nil {
			t.Fatal(err)
		}
		member := func(depth int64, m string) BackfilledEvent {
			return BackfilledEvent{EventID: fmt.Sprintf("$mem%d", depth), Depth: depth, Sender: "@u:x", Type: "m.room.member",
				StateKey: sk("@u:x"), Membership: m, JSON: []byte(`{}`)}
		}
		if _, err := d.StoreBackfill(ctx, "!r:x", "shared", []BackfilledEvent{member(9, "leave"), bfMsg(5), member(3, "join")}, false); err != nil {
			t.Fatal(err)
		}
		got, err := d.BackfilledMemberships(ctx, "!r:x", "@u:x")
		if err != nil || len(got) != 2 || got[0].Membership != "leave" || got[1].Membership != "join" || got[1].Cursor.Depth != 3 {
			t.Fatalf("memberships: %+v, %v", got, err)
		}
		if other, err := d.BackfilledMemberships(ctx, "!r:x", "@v:x"); err != nil || len(other) != 0 {
			t.Fatalf("another user's memberships: %+v, %v", other, err)
		}
	})
}
