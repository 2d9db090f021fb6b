package storage

import (
	"context"
	"slices"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
)

func relation(relType, parent string) map[string]any {
	return map[string]any{"rel_type": relType, "event_id": parent}
}

func eventIDs(evs []Event) []string {
	out := make([]string, len(evs))
	for i := range evs {
		out[i] = evs[i].EventID
	}
	return out
}

func TestRelationsIndexAndAggregationQueries(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		b := &roomBuilder{roomID: "!r:x"}
		mustStore(t, d, b.ev("@a:x", "m.room.create", sk(""), map[string]any{"creator": "@a:x"}))
		mustStore(t, d, b.ev("@a:x", "m.room.member", sk("@a:x"), map[string]any{"membership": "join"}))
		root := b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "root"})
		mustStore(t, d, root)
		edit := b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "* root!", "m.new_content": map[string]any{"body": "root!"},
			"m.relates_to": relation(RelReplace, root.EventID)})
		mustStore(t, d, edit)
		// Another sender's "edit" and one without m.new_content are invalid.
		mustStore(t, d, b.ev("@b:x", "m.room.message", nil, map[string]any{"body": "* hijack", "m.new_content": map[string]any{"body": "x"},
			"m.relates_to": relation(RelReplace, root.EventID)}))
		mustStore(t, d, b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "* no new content",
			"m.relates_to": relation(RelReplace, root.EventID)}))
		reaction := b.ev("@b:x", "m.reaction", nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root.EventID, "key": "👍"}})
		mustStore(t, d, reaction)
		t1 := b.ev("@b:x", "m.room.message", nil, map[string]any{"body": "first reply", "m.relates_to": relation(RelThread, root.EventID)})
		mustStore(t, d, t1)
		t1edit := b.ev("@b:x", "m.room.message", nil, map[string]any{"body": "* first reply!", "m.new_content": map[string]any{"body": "first reply!"},
			"m.relates_to": relation(RelReplace, t1.EventID)})
		mustStore(t, d, t1edit)
		t2 := b.ev("@c:x", "m.room.message", nil, map[string]any{"body": "second reply", "m.relates_to": relation(RelThread, root.EventID)})
		r2 := mustStore(t, d, t2)
		// A redelivery is not indexed twice.
		if again := mustStore(t, d, t2); !again.Duplicate {
			t.Fatal("redelivery stored again")
		}
		ref := b.ev("@c:x", "m.room.message", nil, map[string]any{"body": "see above", "m.relates_to": relation(RelReference, root.EventID)})
		mustStore(t, d, ref)
		// A soft-failed child is never indexed.
		soft := b.ev("@evil:y", "m.reaction", nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root.EventID, "key": "x"}})
		soft.SoftFailed = true
		mustStore(t, d, soft)

		all, err := d.RelatedEvents(ctx, RelationsQuery{RoomID: "!r:x", Parent: root.EventID, Before: 1 << 62, Backwards: true, Limit: 100, Depth: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 7 || all[0].EventID != ref.EventID || slices.Contains(eventIDs(all), soft.EventID) || slices.Contains(eventIDs(all), t1edit.EventID) {
			t.Fatalf("direct children newest first = %v", eventIDs(all))
		}
		threads, err := d.RelatedEvents(ctx, RelationsQuery{RoomID: "!r:x", Parent: root.EventID, RelType: RelThread, Before: 1 << 62, Limit: 100, Depth: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(eventIDs(threads), []string{t1.EventID, t2.EventID}) {
			t.Fatalf("thread children oldest first = %v", eventIDs(threads))
		}
		reactions, err := d.RelatedEvents(ctx, RelationsQuery{RoomID: "!r:x", Parent: root.EventID, RelType: "m.annotation", EventType: "m.reaction", Before: 1 << 62, Limit: 100, Depth: 1})
		if err != nil || !slices.Equal(eventIDs(reactions), []string{reaction.EventID}) {
			t.Fatalf("reactions = %v, %v", eventIDs(reactions), err)
		}
		deep, err := d.RelatedEvents(ctx, RelationsQuery{RoomID: "!r:x", Parent: root.EventID, Before: 1 << 62, Limit: 100, Depth: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(deep) != 8 || !slices.Contains(eventIDs(deep), t1edit.EventID) {
			t.Fatalf("recursive children = %v", eventIDs(deep))
		}
		// The other room's copy of a parent ID does not leak across rooms.
		other, err := d.RelatedEvents(ctx, RelationsQuery{RoomID: "!other:x", Parent: root.EventID, Before: 1 << 62, Limit: 100, Depth: 3})
		if err != nil || len(other) != 0 {
			t.Fatalf("children in another room = %v, %v", eventIDs(other), err)
		}

		sums, err := d.ChildSummaries(ctx, []string{root.EventID, t1.EventID, "$unknown"}, "@b:x")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]ChildSummary{}
		for _, s := range sums {
			got[s.Parent+"|"+s.RelType] = s
		}
		if th := got[root.EventID+"|"+RelThread]; th.Count != 2 || th.Latest != r2.Position || !th.ByUser {
			t.Fatalf("thread summary = %+v", th)
		}
		if rf := got[root.EventID+"|"+RelReference]; rf.Count != 1 || rf.ByUser {
			t.Fatalf("reference summary = %+v", rf)
		}
		if _, ok := got[root.EventID+"|m.annotation"]; ok || len(got) != 4 {
			t.Fatalf("summaries = %+v", got)
		}
		edits, err := d.LatestEdits(ctx, []string{root.EventID, t1.EventID})
		if err != nil {
			t.Fatal(err)
		}
		if len(edits) != 2 || !slices.Contains(edits, EditCandidate{root.EventID, edit.EventID}) || !slices.Contains(edits, EditCandidate{t1.EventID, t1edit.EventID}) {
			t.Fatalf("latest edits = %+v", edits)
		}
		refs, err := d.ChildrenOf(ctx, []string{root.EventID}, RelReference, 10)
		if err != nil || len(refs) != 1 || refs[0].EventID != ref.EventID || refs[0].Parent != root.EventID {
			t.Fatalf("references = %+v, %v", refs, err)
		}

		roots, err := d.Threads(ctx, ThreadsQuery{RoomID: "!r:x", Before: 1 << 62, Limit: 10})
		if err != nil || len(roots) != 1 || roots[0].EventID != root.EventID || roots[0].LatestPosition != r2.Position {
			t.Fatalf("threads = %+v, %v", roots, err)
		}
		for user, want := range map[string]int{"@a:x": 1, "@c:x": 1, "@d:x": 0} {
			roots, err := d.Threads(ctx, ThreadsQuery{RoomID: "!r:x", Before: 1 << 62, Limit: 10, Participant: user})
			if err != nil || len(roots) != want {
				t.Fatalf("threads %s participated in = %d, want %d (%v)", user, len(roots), want, err)
			}
		}

		// Redacting the newest reply moves the thread back to the first
		// reply and drops it from the counts.
		red := b.ev("@c:x", "m.room.redaction", nil, map[string]any{"redacts": t2.EventID})
		red.Redacts = t2.EventID
		mustStore(t, d, red)
		roots, err = d.Threads(ctx, ThreadsQuery{RoomID: "!r:x", Before: 1 << 62, Limit: 10})
		if err != nil || len(roots) != 1 || roots[0].LatestPosition >= r2.Position {
			t.Fatalf("threads after redaction = %+v, %v", roots, err)
		}
		if roots, _ := d.Threads(ctx, ThreadsQuery{RoomID: "!r:x", Before: 1 << 62, Limit: 10, Participant: "@c:x"}); len(roots) != 0 {
			t.Fatal("redacted reply still counts as participation")
		}
		red1 := b.ev("@b:x", "m.room.redaction", nil, map[string]any{"redacts": t1.EventID})
		red1.Redacts = t1.EventID
		mustStore(t, d, red1)
		if roots, _ := d.Threads(ctx, ThreadsQuery{RoomID: "!r:x", Before: 1 << 62, Limit: 10}); len(roots) != 0 {
			t.Fatalf("thread without replies still listed: %+v", roots)
		}
	})
}

func TestSearchBothDialects(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		d := openTest(t, dbURL)
		b := &roomBuilder{roomID: "!r:x"}
		mustStore(t, d, b.ev("@a:x", "m.room.create", sk(""), map[string]any{"creator": "@a:x"}))
		mustStore(t, d, b.ev("@a:x", "m.room.member", sk("@a:x"), map[string]any{"membership": "join"}))
		name := b.ev("@a:x", "m.room.name", sk(""), map[string]any{"name": "Martian outpost"})
		mustStore(t, d, name)
		m1 := b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "The martians are running towards us"})
		mustStore(t, d, m1)
		m2 := b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "martians martians martians everywhere"})
		mustStore(t, d, m2)
		m3 := b.ev("@a:x", "m.room.message", nil, map[string]any{"body": "nothing to see here; OR \"quotes\" NEAR( *"})
		mustStore(t, d, m3)
		other := &roomBuilder{roomID: "!secret:x"}
		mustStore(t, d, other.ev("@z:x", "m.room.create", sk(""), map[string]any{"creator": "@z:x"}))
		mustStore(t, d, other.ev("@z:x", "m.room.member", sk("@z:x"), map[string]any{"membership": "join"}))
		mustStore(t, d, other.ev("@z:x", "m.room.message", nil, map[string]any{"body": "secret martians"}))

		search := func(q SearchQuery) []string {
			t.Helper()
			q.Limit = 50
			hits, err := d.Search(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]string, len(hits))
			for i, h := range hits {
				out[i] = h.EventID
			}
			return out
		}
		if got := search(SearchQuery{UserID: "@a:x", Term: "martians", Keys: []string{SearchKeyBody}, Recent: true}); !slices.Equal(got, []string{m2.EventID, m1.EventID}) {
			t.Fatalf("recent order = %v", got)
		}
		// Stemming: "martian" finds the room name and both messages; "run" finds "running".
		if got := search(SearchQuery{UserID: "@a:x", Term: "martian"}); len(got) != 3 || got[0] != m2.EventID {
			t.Fatalf("ranked = %v (the message saying it three times ranks first)", got)
		}
		if got := search(SearchQuery{UserID: "@a:x", Term: "run"}); !slices.Equal(got, []string{m1.EventID}) {
			t.Fatalf("stemmed = %v", got)
		}
		if got := search(SearchQuery{UserID: "@a:x", Term: "martian", Keys: []string{SearchKeyName}}); !slices.Equal(got, []string{name.EventID}) {
			t.Fatalf("name key = %v", got)
		}
		if got := search(SearchQuery{UserID: "@a:x", Term: "martians running"}); !slices.Equal(got, []string{m1.EventID}) {
			t.Fatalf("all words must match: %v", got)
		}
		// Query syntax of either engine in the user's text is harmless.
		if got := search(SearchQuery{UserID: "@a:x", Term: `OR "quotes" NEAR( *`}); !slices.Equal(got, []string{m3.EventID}) {
			t.Fatalf("operators = %v", got)
		}
		if got := search(SearchQuery{UserID: "@a:x", Term: "martians", NotRooms: []string{"!r:x"}}); len(got) != 0 {
			t.Fatalf("not_rooms = %v", got)
		}
		if got := search(SearchQuery{UserID: "@nobody:x", Term: "martians"}); len(got) != 0 {
			t.Fatalf("a user in no room found %v", got)
		}
		// Redaction removes the text.
		red := b.ev("@a:x", "m.room.redaction", nil, map[string]any{"redacts": m2.EventID})
		red.Redacts = m2.EventID
		mustStore(t, d, red)
		if got := search(SearchQuery{UserID: "@a:x", Term: "everywhere"}); len(got) != 0 {
			t.Fatalf("redacted text still found: %v", got)
		}
		if got := search(SearchQuery{UserID: "@a:x", Term: "   "}); len(got) != 0 {
			t.Fatalf("blank term found %v", got)
		}
	})
}
