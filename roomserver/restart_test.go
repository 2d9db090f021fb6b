package roomserver

import (
	"errors"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

// Events committed but not published when the process stops are published
// by the next Open, in room order.
func TestUnpublishedEventsArePublishedAfterRestart(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		alice := user("alice")
		roomID := h.createRoom("10", alice, "public", nil)
		// From here on the bus is unreachable, as if the process died
		// right after each commit.
		crash := func(api.OutputEvent) error { return errors.New("simulated crash before publish") }
		h.rs.testHookPublish.Store(&crash)
		var sent []string
		for i := 0; i < 3; i++ {
			sent = append(sent, h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": i}))
		}
		h.rs.Close()

		out := h.collect("restart")
		h.open()
		outs := out.waitFor(t, 8)
		for i, o := range outs {
			if o.RoomPosition != int64(i+1) {
				t.Fatalf("output %d has position %d", i, o.RoomPosition)
			}
		}
		for i, id := range sent {
			if outs[5+i].EventID != id {
				t.Fatalf("output %d is %s, want %s", 5+i, outs[5+i].EventID, id)
			}
		}
		if len(outs[4].AddsStateEventIDs) != 1 {
			t.Fatalf("republished state change lost: %+v", outs[4])
		}
		// New sends continue after the republished ones.
		next := h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "next"})
		outs = out.waitFor(t, 9)
		if outs[8].EventID != next || outs[8].RoomPosition != 9 {
			t.Fatalf("after restart: %+v", outs[8])
		}
	})
}
