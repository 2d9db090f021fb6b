package syncapi_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/internal/testserver"
)

// TestKilledWhileSendingLosesNothing: the server is killed with SIGKILL
// while a client is sending. After a restart, a client that resumes /sync
// with its old since token receives every event that was acknowledged
// (answered 200) before the kill exactly once, in send order; a resend of
// the in-flight message with its transaction ID is not duplicated.
func TestKilledWhileSendingLosesNothing(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			srv := testserver.Start(t, testserver.Options{DB: dialect})
			alice := srv.RegisterUser(t, "alice")
			bob := srv.RegisterUser(t, "bob")
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
				t.Fatal(err)
			}
			first, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
			if err != nil {
				t.Fatal(err)
			}
			since := first.NextBatch

			// Send until the server dies; remember what was acknowledged.
			var mu sync.Mutex
			var acked []id.EventID
			lastTxn := ""
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; ; i++ {
					txn := fmt.Sprint("txn-", i)
					mu.Lock()
					lastTxn = txn
					mu.Unlock()
					resp, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
						map[string]any{"msgtype": "m.text", "body": fmt.Sprint("message ", i)},
						mautrix.ReqSendEvent{TransactionID: txn})
					if err != nil {
						return
					}
					mu.Lock()
					acked = append(acked, resp.EventID)
					mu.Unlock()
				}
			}()
			deadline := time.Now().Add(20 * time.Second)
			for {
				mu.Lock()
				n := len(acked)
				mu.Unlock()
				if n >= 40 || time.Now().After(deadline) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			srv.Kill()
			<-done
			mu.Lock()
			want := append([]id.EventID(nil), acked...)
			inFlight := lastTxn
			mu.Unlock()
			if len(want) < 10 {
				t.Fatalf("only %d sends acknowledged before the kill", len(want))
			}

			srv.Restart()
			// The message in flight at the kill may or may not have been
			// committed; resending it with the same transaction ID must not
			// create a second event.
			resent, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "resent"}, mautrix.ReqSendEvent{TransactionID: inFlight})
			if err != nil {
				t.Fatalf("resend after restart: %v", err)
			}
			again, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "resent"}, mautrix.ReqSendEvent{TransactionID: inFlight})
			if err != nil || again.EventID != resent.EventID {
				t.Fatalf("a repeated transaction ID gave %v, %v; want %s", again, err, resent.EventID)
			}
			want = append(want, resent.EventID)

			// A filter with a timeline limit above the number of sends, so
			// the catch-up sync is not cut short ("limited").
			filter, err := bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[id.EventID]int{}
			var order []id.EventID
			syncDeadline := time.Now().Add(60 * time.Second)
			for seen[resent.EventID] == 0 {
				if time.Now().After(syncDeadline) {
					t.Fatalf("resent event never arrived; saw %d events", len(order))
				}
				resp, err := bob.SyncRequest(ctx, 5000, since, filter.FilterID, false, event.PresenceOnline)
				if err != nil {
					t.Fatal(err)
				}
				if jr, ok := resp.Rooms.Join[room.RoomID]; ok {
					for _, ev := range jr.Timeline.Events {
						if ev.Type == event.EventMessage {
							seen[ev.ID]++
							order = append(order, ev.ID)
						}
					}
				}
				since = resp.NextBatch
			}
			for i, e := range want {
				if seen[e] != 1 {
					t.Fatalf("acknowledged event %d of %d (%s) arrived %d times", i, len(want), e, seen[e])
				}
			}
			// Acknowledged events arrive in send order (unacknowledged ones
			// committed just before the kill may sit between them).
			pos := map[id.EventID]int{}
			for i, e := range order {
				pos[e] = i
			}
			for i := 1; i < len(want); i++ {
				if pos[want[i]] < pos[want[i-1]] {
					t.Fatalf("event %s arrived before %s", want[i], want[i-1])
				}
			}
		})
	}
}
