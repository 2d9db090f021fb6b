package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

// Tests of clientrooms.go (directory, summaries, aliases moves, reports,
// forgotten rooms) on both databases.

func TestRoomSummaryAndStateOfType(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		ctx := context.Background()
		alice, bob := user("alice"), user("bob")
		other := h.createRoom(gomatrixserverlib.RoomVersionV10, alice, "public", nil)
		room := h.createRoom(gomatrixserverlib.RoomVersionV10, alice, "public", nil)
		h.join(room, bob)
		h.mustSend(room, alice, "m.room.name", strp(""), map[string]any{"name": "Garden"})
		h.mustSend(room, alice, "m.room.topic", strp(""), map[string]any{"topic": "Roses"})
		h.mustSend(room, alice, "m.room.avatar", strp(""), map[string]any{"url": "mxc://x/y"})
		h.mustSend(room, alice, "m.room.guest_access", strp(""), map[string]any{"guest_access": "can_join"})
		h.mustSend(room, alice, "m.room.history_visibility", strp(""), map[string]any{"history_visibility": "world_readable"})
		h.mustSend(room, alice, "m.room.join_rules", strp(""), map[string]any{
			"join_rule": "restricted",
			"allow":     []any{map[string]any{"type": "m.room_membership", "room_id": other}, map[string]any{"type": "other"}},
		})
		h.mustSend(room, alice, "m.space.child", strp("!b:x"), map[string]any{"via": []string{"x"}})
		h.mustSend(room, alice, "m.space.child", strp("!a:x"), map[string]any{"via": []string{"x"}})

		sum, err := h.rs.QueryRoomSummary(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		want := api.RoomSummary{
			RoomID: room, Name: "Garden", Topic: "Roses", AvatarURL: "mxc://x/y", JoinRule: "restricted",
			AllowRoomIDs: []string{other}, HistoryVisibility: "world_readable", GuestCanJoin: true, NumJoinedMembers: 2,
		}
		if fmt.Sprint(*sum) != fmt.Sprint(want) || !sum.WorldReadable() {
			t.Fatalf("summary = %+v, want %+v", *sum, want)
		}

		kids, err := h.rs.QueryCurrentStateOfType(ctx, room, "m.space.child")
		if err != nil {
			t.Fatal(err)
		}
		if len(kids) != 2 || *kids[0].StateKey() != "!a:x" || *kids[1].StateKey() != "!b:x" {
			t.Fatalf("children = %v", kids)
		}
		// The same through a fresh service, which reads the state from
		// the database rather than the actor's cache.
		h.rs.Close()
		h.open()
		kids, err = h.rs.QueryCurrentStateOfType(ctx, room, "m.space.child")
		if err != nil || len(kids) != 2 {
			t.Fatalf("children after restart = %v, %v", kids, err)
		}
		if _, err := h.rs.QueryRoomSummary(ctx, "!nope:"+testServer); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("unknown room: %v", err)
		}
	})
}

func TestPublishedRooms(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		ctx := context.Background()
		alice := user("alice")
		mk := func(name, topic string, members int, roomType string) string {
			createContent := map[string]any{"room_version": "10", "creator": alice}
			if roomType != "" {
				createContent["type"] = roomType
			}
			id := fmt.Sprintf("!dir%d:%s", roomCounter.Add(1), testServer)
			_, err := h.rs.CreateRoom(ctx, &api.CreateRoomRequest{RoomID: id, RoomVersion: "10", Events: []api.EventTemplate{
				{Sender: alice, Type: "m.room.create", StateKey: strp(""), Content: mustJSON(createContent)},
				{Sender: alice, Type: "m.room.member", StateKey: strp(alice), Content: mustJSON(map[string]any{"membership": "join"})},
				{Sender: alice, Type: "m.room.join_rules", StateKey: strp(""), Content: mustJSON(map[string]any{"join_rule": "public"})},
				{Sender: alice, Type: "m.room.name", StateKey: strp(""), Content: mustJSON(map[string]any{"name": name})},
				{Sender: alice, Type: "m.room.topic", StateKey: strp(""), Content: mustJSON(map[string]any{"topic": topic})},
			}})
			if err != nil {
				t.Fatal(err)
			}
			for i := 1; i < members; i++ {
				h.join(id, user(fmt.Sprintf("m%d", i)))
			}
			return id
		}
		cafe := mk("Café", "coffee", 3, "")
		tea := mk("Tea", "100% leaves", 2, "")
		space := mk("Space", "a space", 1, "m.space")
		hidden := mk("Hidden", "coffee too", 5, "")
		for _, id := range []string{cafe, tea, space} {
			if err := h.rs.SetRoomPublished(ctx, id, true); err != nil {
				t.Fatal(err)
			}
		}
		ids := func(req api.PublishedRoomsRequest) ([]string, int) {
			t.Helper()
			res, err := h.rs.QueryPublishedRooms(ctx, &req)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range res.Rooms {
				out = append(out, r.RoomID)
			}
			return out, res.Total
		}
		check := func(what string, req api.PublishedRoomsRequest, want []string, wantTotal int) {
			t.Helper()
			got, total := ids(req)
			if !slices.Equal(got, want) || total != wantTotal {
				t.Fatalf("%s: got %v (total %d), want %v (total %d)", what, got, total, want, wantTotal)
			}
		}
		check("all, largest first", api.PublishedRoomsRequest{Limit: 10}, []string{cafe, tea, space}, 3)
		check("page 1", api.PublishedRoomsRequest{Limit: 2}, []string{cafe, tea}, 3)
		check("page 2", api.PublishedRoomsRequest{Limit: 2, Offset: 2}, []string{space}, 3)
		check("search ignores case beyond ASCII", api.PublishedRoomsRequest{SearchTerm: "CAFÉ"}, []string{cafe}, 1)
		check("search topic", api.PublishedRoomsRequest{SearchTerm: "coffee"}, []string{cafe}, 1)
		check("LIKE wildcards are literal", api.PublishedRoomsRequest{SearchTerm: "%"}, []string{tea}, 1)
		check("underscore is literal", api.PublishedRoomsRequest{SearchTerm: "_"}, nil, 0)
		check("spaces only", api.PublishedRoomsRequest{FilterRoomTypes: true, RoomTypes: []string{"m.space"}}, []string{space}, 1)
		check("untyped only", api.PublishedRoomsRequest{FilterRoomTypes: true, RoomTypes: []string{""}}, []string{cafe, tea}, 2)
		check("empty type list", api.PublishedRoomsRequest{FilterRoomTypes: true}, nil, 0)

		// State changes reach the directory: a rename, and new members
		// that reorder it.
		h.mustSend(tea, alice, "m.room.name", strp(""), map[string]any{"name": "Green tea"})
		for i := 0; i < 3; i++ {
			h.join(tea, user(fmt.Sprintf("t%d", i)))
		}
		res, err := h.rs.QueryPublishedRooms(ctx, &api.PublishedRoomsRequest{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Rooms) != 1 || res.Rooms[0].RoomID != tea || res.Rooms[0].Name != "Green tea" || res.Rooms[0].NumJoinedMembers != 5 {
			t.Fatalf("after changes: %+v", res.Rooms)
		}

		if pub, err := h.rs.QueryRoomPublished(ctx, hidden); err != nil || pub {
			t.Fatalf("hidden published = %v, %v", pub, err)
		}
		if err := h.rs.SetRoomPublished(ctx, cafe, false); err != nil {
			t.Fatal(err)
		}
		if pub, err := h.rs.QueryRoomPublished(ctx, cafe); err != nil || pub {
			t.Fatalf("cafe published after removal = %v, %v", pub, err)
		}
		check("after unpublishing", api.PublishedRoomsRequest{}, []string{tea, space}, 2)
		if err := h.rs.SetRoomPublished(ctx, "!nope:"+testServer, true); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("publish unknown room: %v", err)
		}
		if _, err := h.rs.QueryRoomPublished(ctx, "!nope:"+testServer); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("visibility of unknown room: %v", err)
		}
	})
}

func TestMoveAliasesReportsAndForget(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		ctx := context.Background()
		alice, bob := user("alice"), user("bob")
		oldRoom := h.createRoom(gomatrixserverlib.RoomVersionV10, alice, "public", nil)
		newRoom := h.createRoom(gomatrixserverlib.RoomVersionV10, alice, "public", nil)
		for _, a := range []string{"#b:" + testServer, "#a:" + testServer} {
			if err := h.rs.SetRoomAlias(ctx, a, oldRoom, alice); err != nil {
				t.Fatal(err)
			}
		}
		moved, err := h.rs.MoveRoomAliases(ctx, oldRoom, newRoom)
		if err != nil || !slices.Equal(moved, []string{"#a:" + testServer, "#b:" + testServer}) {
			t.Fatalf("moved = %v, %v", moved, err)
		}
		if got, _ := h.rs.GetRoomIDForAlias(ctx, "#a:"+testServer); got != newRoom {
			t.Fatalf("alias points at %s", got)
		}
		if left, _ := h.rs.GetAliasesForRoom(ctx, oldRoom); len(left) != 0 {
			t.Fatalf("old room keeps %v", left)
		}

		score := -50
		for i, rep := range []api.EventReport{
			{RoomID: oldRoom, EventID: "$e1", Reporter: bob, Reason: "spam", Score: &score},
			{RoomID: oldRoom, EventID: "$e2", Reporter: bob},
			{RoomID: newRoom, EventID: "$e3", Reporter: alice, Reason: "rude"},
		} {
			if err := h.rs.ReportEvent(ctx, &rep); err != nil || rep.ID == 0 {
				t.Fatalf("report %d: id %d, %v", i, rep.ID, err)
			}
		}
		page, err := h.rs.QueryEventReports(ctx, 0, 2)
		if err != nil || len(page) != 2 || page[0].EventID != "$e1" || *page[0].Score != -50 || page[0].Reason != "spam" || page[1].Score != nil {
			t.Fatalf("reports page 1 = %+v, %v", page, err)
		}
		rest, err := h.rs.QueryEventReports(ctx, page[1].ID, 10)
		if err != nil || len(rest) != 1 || rest[0].EventID != "$e3" || rest[0].Reporter != alice || rest[0].ReceivedAt.IsZero() {
			t.Fatalf("reports page 2 = %+v, %v", rest, err)
		}

		h.join(oldRoom, bob)
		h.join(newRoom, bob)
		if err := h.rs.ForgetRoom(ctx, oldRoom, bob); !errors.Is(err, api.ErrStillInRoom) {
			t.Fatalf("forget while joined: %v", err)
		}
		for _, r := range []string{oldRoom, newRoom} {
			h.mustSend(r, bob, "m.room.member", strp(bob), map[string]any{"membership": "leave"})
			if err := h.rs.ForgetRoom(ctx, r, bob); err != nil {
				t.Fatal(err)
			}
		}
		forgotten, err := h.rs.QueryForgotten(ctx, bob, nil)
		want := []string{oldRoom, newRoom}
		slices.Sort(want)
		if err != nil || !slices.Equal(forgotten, want) {
			t.Fatalf("forgotten = %v, %v; want %v", forgotten, err, want)
		}
		if got, _ := h.rs.QueryForgotten(ctx, bob, []string{newRoom, "!other:x"}); !slices.Equal(got, []string{newRoom}) {
			t.Fatalf("forgotten among some = %v", got)
		}
		// Joining again ends it.
		h.join(oldRoom, bob)
		if got, _ := h.rs.QueryForgotten(ctx, bob, nil); !slices.Equal(got, []string{newRoom}) {
			t.Fatalf("forgotten after rejoin = %v", got)
		}
		// Someone who was never in a room has nothing to forget.
		if err := h.rs.ForgetRoom(ctx, oldRoom, user("carol")); err != nil {
			t.Fatal(err)
		}
		if got, _ := h.rs.QueryForgotten(ctx, user("carol"), nil); len(got) != 0 {
			t.Fatalf("carol forgot %v", got)
		}
		if err := h.rs.ForgetRoom(ctx, "!nope:"+testServer, bob); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("forget unknown room: %v", err)
		}
	})
}
