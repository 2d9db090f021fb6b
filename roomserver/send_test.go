package roomserver

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

func TestCreateRoomAndSend(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		out := h.collect("test")
		alice, bob := user("alice"), user("bob")
		roomID := h.createRoom("10", alice, "public", nil)

		info, err := h.rs.QueryRoomInfo(ctx, roomID)
		if err != nil || info.RoomVersion != "10" {
			t.Fatalf("room info: %+v %v", info, err)
		}
		if _, err := h.rs.QueryRoomInfo(ctx, "!nope:"+testServer); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("unknown room: %v", err)
		}
		_, err = h.rs.CreateRoom(ctx, &api.CreateRoomRequest{RoomID: roomID, RoomVersion: "10", Events: []api.EventTemplate{
			{Sender: alice, Type: "m.room.create", StateKey: strp(""), Content: mustJSON(map[string]any{"creator": alice})},
		}})
		if !errors.Is(err, api.ErrRoomExists) {
			t.Fatalf("duplicate create: %v", err)
		}

		h.join(roomID, bob)
		msgID := h.mustSend(roomID, bob, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi"})

		// Idempotent sends with a transaction ID.
		req := &api.SendEventRequest{RoomID: roomID, TransactionID: &api.TransactionID{DeviceID: "D", TxnID: "t1"},
			Event: api.EventTemplate{Sender: bob, Type: "m.room.message", Content: mustJSON(map[string]any{"body": "once"})}}
		first, err := h.rs.SendEvent(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := h.rs.SendEvent(ctx, req)
		if err != nil || again.EventID != first.EventID {
			t.Fatalf("repeat send: %v %v, want %s", again, err, first.EventID)
		}

		evs, err := h.rs.QueryEventsByID(ctx, []string{msgID, first.EventID, "$missing"})
		if err != nil || len(evs) != 2 {
			t.Fatalf("events by ID: %d %v", len(evs), err)
		}
		if evs[0].Depth() != 7 || evs[1].Depth() != 8 {
			t.Fatalf("depths %d %d", evs[0].Depth(), evs[1].Depth())
		}
		if got := evs[1].PrevEventIDs(); len(got) != 1 || got[0] != msgID {
			t.Fatalf("prev_events %v, want [%s]", got, msgID)
		}

		m, err := h.rs.QueryMembership(ctx, roomID, bob)
		if err != nil || m.Membership != "join" || m.EventID == "" {
			t.Fatalf("membership %+v %v", m, err)
		}
		rooms, err := h.rs.QueryRoomsForUser(ctx, bob, []string{"join"})
		if err != nil || len(rooms) != 1 || rooms[0] != roomID {
			t.Fatalf("rooms for bob: %v %v", rooms, err)
		}
		state, err := h.rs.QueryCurrentState(ctx, roomID, nil)
		if err != nil || len(state) != 6 {
			t.Fatalf("current state: %d events, %v", len(state), err)
		}
		pl, err := h.rs.QueryCurrentState(ctx, roomID, []gomatrixserverlib.StateKeyTuple{{EventType: "m.room.power_levels"}})
		if err != nil || len(pl) != 1 || pl[0].Type() != "m.room.power_levels" {
			t.Fatalf("power levels: %v %v", pl, err)
		}
		// The state after the create event is just the create event.
		after, err := h.rs.QueryStateAfterEvent(ctx, roomID, evs[0].AuthEventIDs()[0], nil)
		if err != nil || len(after) != 1 {
			t.Fatalf("state after create: %d %v", len(after), err)
		}

		outs := out.waitFor(t, 8)
		for i, o := range outs {
			if o.RoomPosition != int64(i+1) || o.RoomID != roomID {
				t.Fatalf("output %d: position %d room %s", i, o.RoomPosition, o.RoomID)
			}
		}
		if outs[5].EventID != bob+"" && len(outs[5].AddsStateEventIDs) != 1 {
			t.Fatalf("bob's join should add one state event: %+v", outs[5])
		}
		if outs[7].TransactionID == nil || outs[7].TransactionID.TxnID != "t1" {
			t.Fatalf("txn output: %+v", outs[7].TransactionID)
		}
	})
}

func TestOversizedEvent(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		alice := user("alice")
		roomID := h.createRoom("10", alice, "public", nil)
		_, err := h.send(roomID, alice, "m.room.message", nil, map[string]any{"body": strings.Repeat("x", 70000)})
		var be *api.BadEventError
		if !errors.As(err, &be) || !be.TooLarge {
			t.Fatalf("want BadEventError{TooLarge}, got %v", err)
		}
		// The room still works afterwards.
		h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "small"})
	})
}
