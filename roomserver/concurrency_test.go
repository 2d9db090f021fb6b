package roomserver

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

func TestConcurrentSendsKeepPerRoomOrder(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		out := h.collect("order")
		const rooms, senders, perSender = 8, 4, 15
		alice := user("alice")
		roomIDs := make([]string, rooms)
		for i := range roomIDs {
			roomIDs[i] = h.createRoom("10", alice, "public", nil)
		}
		// sent[room][sender] lists event IDs in the order each goroutine sent them.
		sent := make([][][]string, rooms)
		var wg sync.WaitGroup
		errs := make(chan error, rooms*senders)
		for r := range roomIDs {
			sent[r] = make([][]string, senders)
			for g := 0; g < senders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < perSender; i++ {
						res, err := h.rs.SendEvent(ctx, &api.SendEventRequest{RoomID: roomIDs[r], Event: api.EventTemplate{
							Sender: alice, Type: "m.room.message", Content: mustJSON(map[string]any{"body": fmt.Sprintf("%d-%d", g, i)})}})
						if err != nil {
							errs <- err
							return
						}
						sent[r][g] = append(sent[r][g], res.EventID)
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		const createEvents = 5
		outs := out.waitFor(t, rooms*(createEvents+senders*perSender))
		byID := map[string]api.OutputEvent{}
		lastPos := map[string]int64{}
		for _, o := range outs {
			if o.RoomPosition != lastPos[o.RoomID]+1 {
				t.Fatalf("room %s: position %d after %d", o.RoomID, o.RoomPosition, lastPos[o.RoomID])
			}
			lastPos[o.RoomID] = o.RoomPosition
			byID[o.EventID] = o
		}
		for r := range roomIDs {
			for g := range sent[r] {
				var evs, err = h.rs.QueryEventsByID(ctx, sent[r][g])
				if err != nil || len(evs) != perSender {
					t.Fatalf("room %d sender %d: %d events, %v", r, g, len(evs), err)
				}
				for i := 1; i < len(evs); i++ {
					prev, cur := byID[evs[i-1].EventID()], byID[evs[i].EventID()]
					if evs[i].Depth() <= evs[i-1].Depth() || cur.RoomPosition <= prev.RoomPosition {
						t.Fatalf("room %d sender %d: event %d has depth %d position %d after depth %d position %d",
							r, g, i, evs[i].Depth(), cur.RoomPosition, evs[i-1].Depth(), prev.RoomPosition)
					}
				}
			}
		}
	})
}

func TestBusyRoomDoesNotBlockOthers(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		alice := user("alice")
		slow := h.createRoom("10", alice, "public", nil)
		fast := h.createRoom("10", alice, "public", nil)
		release := make(chan struct{})
		entered := make(chan struct{}, 1)
		h.rs.testHookBatch = func(roomID string) {
			if roomID == slow {
				entered <- struct{}{}
				<-release
			}
		}
		slowDone := make(chan error, 1)
		go func() {
			_, err := h.send(slow, alice, "m.room.message", nil, map[string]any{"body": "slow"})
			slowDone <- err
		}()
		<-entered
		done := make(chan error, 1)
		go func() {
			_, err := h.send(fast, alice, "m.room.message", nil, map[string]any{"body": "fast"})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a send to one room waited for another room's input")
		}
		close(release)
		if err := <-slowDone; err != nil {
			t.Fatal(err)
		}
	})
}
