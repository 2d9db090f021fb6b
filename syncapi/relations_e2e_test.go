package syncapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// TestRelationsThreadsSearchEndToEnd drives relations, bundled
// aggregations, threads and search through the whole server with mautrix,
// on both databases: events sent through the client API reach the sync
// API's indexes through the roomserver's output stream.
func TestRelationsThreadsSearchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the server binary")
	}
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) { relationsEndToEnd(t, db) })
	}
}

func relationsEndToEnd(t *testing.T, db string) {
	srv := testserver.Start(t, testserver.Options{DB: db})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	alice := srv.RegisterUser(t, "alice")
	bob := srv.RegisterUser(t, "bob")
	carol := srv.RegisterUser(t, "carol")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "relations"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	root, err := alice.SendText(ctx, room, "hello world, this is the root")
	if err != nil {
		t.Fatal(err)
	}
	edit, err := alice.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{
		MsgType: event.MsgText, Body: "* hello world, edited",
		NewContent: &event.MessageEventContent{MsgType: event.MsgText, Body: "hello world, edited"},
		RelatesTo:  (&event.RelatesTo{}).SetReplace(root.EventID),
	})
	if err != nil {
		t.Fatal(err)
	}
	reaction, err := bob.SendReaction(ctx, room, root.EventID, "👍")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := bob.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{
		MsgType: event.MsgText, Body: "a threaded reply",
		RelatesTo: (&event.RelatesTo{}).SetThread(root.EventID, root.EventID),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []id.EventID{reply.EventID, reaction.EventID, edit.EventID}

	// The sync API stores events asynchronously: until the root arrives the
	// answer is 404; wait until all three children show.
	for deadline := time.Now().Add(20 * time.Second); ; {
		rels, err := bob.GetRelations(ctx, room, root.EventID, &mautrix.ReqGetRelations{})
		if err != nil && !errors.Is(err, mautrix.MNotFound) {
			t.Fatal(err)
		}
		if (err == nil && len(rels.Chunk) == 3) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var got []id.EventID
	req := &mautrix.ReqGetRelations{Limit: 1}
	for pages := 0; pages < 5; pages++ {
		page, err := bob.GetRelations(ctx, room, root.EventID, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Chunk {
			got = append(got, ev.ID)
		}
		if page.NextBatch == "" {
			break
		}
		req.From = page.NextBatch
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged relations = %v, want %v", got, want)
	}
	fwd, err := bob.GetRelations(ctx, room, root.EventID, &mautrix.ReqGetRelations{Dir: mautrix.DirectionForward, RelationType: event.RelThread})
	if err != nil || len(fwd.Chunk) != 1 || fwd.Chunk[0].ID != reply.EventID {
		t.Fatalf("m.thread forwards = %+v, %v", fwd, err)
	}

	// Bundled aggregations in /sync and /messages.
	checkBundle := func(where string, evs []*event.Event) {
		t.Helper()
		for _, ev := range evs {
			if ev.ID != root.EventID {
				continue
			}
			rel := ev.Unsigned.Relations
			if rel.GetLatestEdit() == nil || rel.GetLatestEdit().ID != edit.EventID {
				t.Fatalf("%s: latest edit = %+v", where, rel.GetLatestEdit())
			}
			if th := rel.GetThread(); th.GetCount() != 1 || !th.GetCurrentUserParticipated() || th.GetLatestEvent() == nil || th.GetLatestEvent().ID != reply.EventID {
				t.Fatalf("%s: thread summary = %+v", where, th)
			}
			return
		}
		t.Fatalf("%s: root not found", where)
	}
	resp, err := bob.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	checkBundle("sync", resp.Rooms.Join[room].Timeline.Events)
	msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	checkBundle("messages", msgs.Chunk)

	// Threads the user took part in.
	var threads struct {
		Chunk []*event.Event `json:"chunk"`
	}
	url := bob.BuildURLWithQuery(mautrix.ClientURLPath{"v1", "rooms", room, "threads"}, map[string]string{"include": "participated"})
	if _, err := bob.MakeRequest(ctx, http.MethodGet, url, nil, &threads); err != nil {
		t.Fatal(err)
	}
	if len(threads.Chunk) != 1 || threads.Chunk[0].ID != root.EventID || threads.Chunk[0].Unsigned.Relations.GetThread().GetCount() != 1 {
		t.Fatalf("threads = %+v", threads.Chunk)
	}

	// Search finds the message, and never what a user may not see: carol
	// joins a room with joined visibility, leaves, and misses what follows.
	found, err := bob.Search(ctx, &mautrix.ReqSearch{SearchTerm: "hello", OrderBy: "recent", Keys: []string{"content.body"}})
	if err != nil {
		t.Fatal(err)
	}
	if found.Count != 2 || len(found.Results) != 2 || found.Results[1].Event.ID != root.EventID || len(found.Highlights) == 0 {
		t.Fatalf("search = %+v", found)
	}
	hidden, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: ptr(""),
		Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.JoinRoomByID(ctx, hidden.RoomID); err != nil {
		t.Fatal(err)
	}
	seen, err := alice.SendText(ctx, hidden.RoomID, "zebra crossing while carol is here")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.LeaveRoom(ctx, hidden.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, hidden.RoomID, "zebra stripes after carol left"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		all, err := alice.Search(ctx, &mautrix.ReqSearch{SearchTerm: "zebra"})
		if err != nil {
			t.Fatal(err)
		}
		if all.Count == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice's search never found both messages: %+v", all)
		}
		time.Sleep(50 * time.Millisecond)
	}
	carolFound, err := carol.Search(ctx, &mautrix.ReqSearch{SearchTerm: "zebra"})
	if err != nil {
		t.Fatal(err)
	}
	if carolFound.Count != 1 || carolFound.Results[0].Event.ID != seen.EventID {
		b, _ := json.Marshal(carolFound)
		t.Fatalf("carol's search = %s, want only %s", b, seen.EventID)
	}
}

func ptr[T any](v T) *T { return &v }
