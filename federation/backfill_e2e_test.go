package federation_test

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// pageBack reads a room's whole /messages history backwards, limit events
// a page, and returns the events in the order served (newest first).
func pageBack(t *testing.T, cli *mautrix.Client, roomID id.RoomID, limit int) []*event.Event {
	t.Helper()
	var out []*event.Event
	from := ""
	for pages := 0; ; pages++ {
		if pages == 100 {
			t.Fatalf("%s: /messages did not end after 100 pages", cli.UserID)
		}
		resp, err := cli.Messages(context.Background(), roomID, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("%s: messages: %v", cli.UserID, err)
		}
		out = append(out, resp.Chunk...)
		if resp.End == "" {
			return out
		}
		from = resp.End
	}
}

func messageBodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == event.EventMessage {
			out = append(out, fmt.Sprint(ev.Content.Raw["body"]))
		}
	}
	return out
}

// TestBackfillIntoMessages: B joins a room with history on A; paging back
// in /messages on B runs past B's join into history fetched from A.
func TestBackfillIntoMessages(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	ctx := context.Background()
	alice := a.RegisterUser(t, "alice")
	bob := b.RegisterUser(t, "bob")

	for _, tc := range []struct {
		visibility string
		seesBefore bool
	}{
		{"shared", true},
		{"joined", false},
	} {
		t.Run(tc.visibility, func(t *testing.T) {
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Preset: "public_chat",
				InitialState: []*event.Event{{
					Type: event.StateHistoryVisibility, StateKey: new(string),
					Content: event.Content{Raw: map[string]any{"history_visibility": tc.visibility}},
				}},
			})
			if err != nil {
				t.Fatal(err)
			}
			var before []string
			for i := range 30 {
				body := fmt.Sprintf("%s %02d", tc.visibility, i)
				mustSend(t, alice, room.RoomID, body)
				before = append(before, body)
			}
			if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
				t.Fatalf("bob joins: %v", err)
			}
			after := mustSend(t, alice, room.RoomID, tc.visibility+" after the join")
			newSyncer(t, bob).sees(after)

			got := messageBodies(pageBack(t, bob, room.RoomID, 7))
			want := []string{tc.visibility + " after the join"}
			if tc.seesBefore {
				for i := len(before) - 1; i >= 0; i-- {
					want = append(want, before[i])
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("bob's /messages bodies:\n got %q\nwant %q", got, want)
			}

			// Paging again is served from what B stored, whatever the page
			// size (one event a page ends a page exactly at B's join);
			// with shared visibility the room's creation is reached too.
			if got := messageBodies(pageBack(t, bob, room.RoomID, 1)); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("one event a page: got %q, want %q", got, want)
			}
			all := pageBack(t, bob, room.RoomID, 100)
			if got := messageBodies(all); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("second read: got %q, want %q", got, want)
			}
			if tc.seesBefore {
				// Forwards from a token inside the backfilled history: the
				// newer backfilled events, then B's own timeline.
				back, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 10)
				if err != nil || back.End == "" {
					t.Fatalf("backwards page: %v, end %q", err, back.End)
				}
				fwd, err := bob.Messages(ctx, room.RoomID, back.End, "", mautrix.DirectionForward, nil, 100)
				if err != nil {
					t.Fatalf("forwards from %s: %v", back.End, err)
				}
				backBodies := messageBodies(back.Chunk)
				var wantFwd []string
				for i := len(backBodies) - 2; i >= 0; i-- {
					wantFwd = append(wantFwd, backBodies[i])
				}
				if got := messageBodies(fwd.Chunk); fmt.Sprint(got) != fmt.Sprint(wantFwd) {
					t.Fatalf("forwards from %s: got %q, want %q", back.End, got, wantFwd)
				}
			}
			last := all[len(all)-1]
			if tc.seesBefore && last.Type != event.StateCreate {
				t.Fatalf("oldest event served is %s, want the room's creation", last.Type.Type)
			}
		})
	}
}
