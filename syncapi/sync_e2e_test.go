package syncapi_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/parley-chat/parley/internal/testserver"
)

// TestSyncEndToEnd drives the whole server with mautrix: a room created and
// joined through the client API reaches /sync through the roomserver's
// output stream, and a long-poll wakes for a new message.
func TestSyncEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	srv := testserver.Start(t, testserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alice := srv.RegisterUser(t, "alice")
	bob := srv.RegisterUser(t, "bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, created.RoomID); err != nil {
		t.Fatal(err)
	}
	sent, err := alice.SendText(ctx, created.RoomID, "hello bob")
	if err != nil {
		t.Fatal(err)
	}

	// The roomserver publishes asynchronously: sync until the message shows.
	var since string
	found := false
	for !found {
		resp, err := bob.SyncRequest(ctx, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatal(err)
		}
		since = resp.NextBatch
		if room, ok := resp.Rooms.Join[created.RoomID]; ok {
			for _, ev := range room.Timeline.Events {
				if ev.ID == sent.EventID {
					found = true
				}
			}
		}
	}

	// A long-poll from that point returns with the next message.
	type result struct {
		resp *mautrix.RespSync
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := bob.SyncRequest(ctx, 30000, since, "", false, event.PresenceOnline)
		done <- result{resp, err}
	}()
	sent2, err := alice.SendText(ctx, created.RoomID, "are you there?")
	if err != nil {
		t.Fatal(err)
	}
	next := sent2.EventID
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	room, ok := res.resp.Rooms.Join[created.RoomID]
	if !ok || len(room.Timeline.Events) == 0 || room.Timeline.Events[len(room.Timeline.Events)-1].ID != next {
		t.Fatalf("long-poll returned %+v, want the new message %s", res.resp.Rooms.Join, next)
	}
}
