package syncapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

func rel(relType, parent string) map[string]any {
	return map[string]any{"rel_type": relType, "event_id": parent}
}

func (e *env) leave(roomID, userID string) string {
	return e.event(roomID, userID, "m.room.member", sk(userID), map[string]any{"membership": "leave"}, nil)
}

// redact publishes a redaction of target. Test rooms are version 10,
// where redacts is a top-level key that output does not set; the sync API
// trusts the roomserver's JSON, so adding it after signing is enough here.
func (e *env) redact(roomID, sender, target string) string {
	oe := e.output(roomID, sender, "m.room.redaction", nil, map[string]any{"redacts": target}, nil)
	var js map[string]any
	if err := json.Unmarshal(oe.Event, &js); err != nil {
		e.t.Fatal(err)
	}
	js["redacts"] = target
	oe.Event, _ = json.Marshal(js)
	e.publish(oe)
	e.waitStored(oe.EventID)
	return oe.EventID
}

// edit sends a valid replacement of target, a little later than the last
// one so that origin_server_ts orders the edits.
func (e *env) edit(roomID, sender, target, body string) string {
	time.Sleep(3 * time.Millisecond)
	return e.event(roomID, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body}, "m.relates_to": rel("m.replace", target)}, nil)
}

type relationsPage struct {
	Chunk          []testEvent `json:"chunk"`
	NextBatch      string      `json:"next_batch"`
	PrevBatch      string      `json:"prev_batch"`
	RecursionDepth *int        `json:"recursion_depth"`
}

func (e *env) relations(token, roomID, eventID, suffix string, q url.Values) (int, relationsPage, []byte) {
	e.t.Helper()
	var out relationsPage
	path := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/relations/" + url.PathEscape(eventID) + suffix
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	status, raw := e.do("GET", path, token, nil, &out)
	return status, out, raw
}

// relationsOf reads the bundled aggregations of a formatted event.
func relationsOf(t *testing.T, ev testEvent) map[string]json.RawMessage {
	t.Helper()
	raw, ok := ev.Unsigned["m.relations"]
	if !ok {
		return nil
	}
	b, _ := json.Marshal(raw)
	var out map[string]json.RawMessage
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

type threadBundle struct {
	LatestEvent             testEvent `json:"latest_event"`
	Count                   int       `json:"count"`
	CurrentUserParticipated bool      `json:"current_user_participated"`
}

func findEvent(evs []testEvent, id string) (testEvent, bool) {
	for _, ev := range evs {
		if ev.EventID == id {
			return ev, true
		}
	}
	return testEvent{}, false
}

func TestRelationsPaginationFiltersAndErrors(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			alice, aliceTok := e.user("alice")
			bob, bobTok := e.user("bob")
			room := "!rel:test.local"
			e.createRoom(room, alice, "shared")
			e.join(room, bob)
			root := e.message(room, alice, "root")
			edit := e.edit(room, alice, root, "root v2")
			reaction := e.event(room, bob, "m.reaction", nil, map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}}, nil)
			ref := e.event(room, bob, "m.room.message", nil, map[string]any{"body": "see", "m.relates_to": rel("m.reference", root)}, nil)
			var replies []string
			for i := 0; i < 3; i++ {
				replies = append(replies, e.event(room, bob, "m.room.message", nil, map[string]any{"body": "reply", "m.relates_to": rel("m.thread", root)}, nil))
			}
			replyEdit := e.edit(room, bob, replies[0], "reply v2")
			direct := []string{edit, reaction, ref, replies[0], replies[1], replies[2]}

			// Backwards (the default) in pages of two, newest first.
			var got []string
			q := url.Values{"limit": {"2"}}
			for pages := 0; ; pages++ {
				status, page, raw := e.relations(aliceTok, room, root, "", q)
				if status != http.StatusOK || pages > 5 {
					t.Fatalf("relations: %d %s", status, raw)
				}
				if page.RecursionDepth != nil {
					t.Fatal("recursion_depth present without recurse")
				}
				got = append(got, ids(page.Chunk)...)
				if page.NextBatch == "" {
					break
				}
				q.Set("from", page.NextBatch)
				if len(page.Chunk) != 2 {
					t.Fatalf("page of %d with a next_batch", len(page.Chunk))
				}
			}
			want := slices.Clone(direct)
			slices.Reverse(want)
			if !slices.Equal(got, want) {
				t.Fatalf("backwards = %v, want %v", got, want)
			}
			// Forwards, oldest first, starting from the beginning.
			got = nil
			q = url.Values{"dir": {"f"}, "limit": {"4"}}
			for {
				status, page, raw := e.relations(aliceTok, room, root, "", q)
				if status != http.StatusOK {
					t.Fatalf("relations: %d %s", status, raw)
				}
				got = append(got, ids(page.Chunk)...)
				if page.NextBatch == "" {
					break
				}
				if page.PrevBatch == "" && q.Get("from") != "" {
					t.Fatal("no prev_batch on a later page")
				}
				q.Set("from", page.NextBatch)
			}
			if !slices.Equal(got, direct) {
				t.Fatalf("forwards = %v, want %v", got, direct)
			}
			// A to token stops the page: from the newest down to (not
			// including) the reference.
			_, first, _ := e.relations(aliceTok, room, root, "", url.Values{"limit": {"2"}})
			_, bounded, _ := e.relations(aliceTok, room, root, "", url.Values{"to": {paginationToken(e.storedEvent(ref).Position)}})
			if !slices.Equal(ids(bounded.Chunk), []string{replies[2], replies[1], replies[0]}) || len(first.Chunk) != 2 {
				t.Fatalf("to-bounded = %v", ids(bounded.Chunk))
			}

			if _, page, _ := e.relations(bobTok, room, root, "/m.thread", nil); !slices.Equal(ids(page.Chunk), []string{replies[2], replies[1], replies[0]}) {
				t.Fatalf("m.thread = %v", ids(page.Chunk))
			}
			if _, page, _ := e.relations(bobTok, room, root, "/m.annotation/m.reaction", nil); !slices.Equal(ids(page.Chunk), []string{reaction}) {
				t.Fatalf("m.annotation/m.reaction = %v", ids(page.Chunk))
			}
			if _, page, _ := e.relations(bobTok, room, root, "/m.annotation/m.room.message", nil); len(page.Chunk) != 0 {
				t.Fatalf("event type filter ignored: %v", ids(page.Chunk))
			}
			// recurse follows the reply's edit; the thread's events in a
			// page carry their own bundled edit.
			_, deep, _ := e.relations(bobTok, room, root, "", url.Values{"recurse": {"true"}})
			if deep.RecursionDepth == nil || *deep.RecursionDepth != 3 || !slices.Contains(ids(deep.Chunk), replyEdit) || len(deep.Chunk) != 7 {
				t.Fatalf("recursive = %v depth %v", ids(deep.Chunk), deep.RecursionDepth)
			}
			_, thread, _ := e.relations(bobTok, room, root, "/m.thread", nil)
			first0, _ := findEvent(thread.Chunk, replies[0])
			if r := relationsOf(t, first0); r == nil || r["m.replace"] == nil {
				t.Fatalf("thread reply lacks its bundled edit: %v", first0.Unsigned)
			}

			for _, c := range []struct {
				name, room, event, suffix string
				q                         url.Values
				status                    int
				code                      string
			}{
				{"bad dir", room, root, "", url.Values{"dir": {"x"}}, 400, "M_INVALID_PARAM"},
				{"bad limit", room, root, "", url.Values{"limit": {"many"}}, 400, "M_INVALID_PARAM"},
				{"negative limit", room, root, "", url.Values{"limit": {"-1"}}, 400, "M_INVALID_PARAM"},
				{"bad from", room, root, "", url.Values{"from": {"garbage"}}, 400, "M_INVALID_PARAM"},
				{"bad to", room, root, "", url.Values{"to": {"t-4"}}, 400, "M_INVALID_PARAM"},
				{"bad recurse", room, root, "", url.Values{"recurse": {"maybe"}}, 400, "M_INVALID_PARAM"},
				{"unknown event", room, "$nope", "", nil, 404, "M_NOT_FOUND"},
				{"unknown room", "!nope:test.local", root, "", nil, 404, "M_NOT_FOUND"},
				{"event of another room", "!other:test.local", root, "", nil, 404, "M_NOT_FOUND"},
				{"not a room ID", "nope", root, "", nil, 400, "M_INVALID_PARAM"},
			} {
				status, _, raw := e.relations(aliceTok, c.room, c.event, c.suffix, c.q)
				if status != c.status || errcode(raw) != c.code {
					t.Errorf("%s: %d %s, want %d %s", c.name, status, raw, c.status, c.code)
				}
			}
		})
	}
}

func TestBundledAggregationsInSyncMessagesAndContext(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			alice, aliceTok := e.user("alice")
			bob, bobTok := e.user("bob")
			room := "!agg:test.local"
			e.createRoom(room, alice, "shared")
			e.join(room, bob)
			root := e.message(room, alice, "root")
			e.edit(room, alice, root, "v2")
			edit2 := e.edit(room, alice, root, "v3")
			// An edit by someone else is not valid and never bundled.
			e.edit(room, bob, root, "hijacked")
			ref := e.event(room, bob, "m.room.message", nil, map[string]any{"body": "see", "m.relates_to": rel("m.reference", root)}, nil)
			e.event(room, bob, "m.room.message", nil, map[string]any{"body": "r1", "m.relates_to": rel("m.thread", root)}, nil)
			r2 := e.event(room, bob, "m.room.message", nil, map[string]any{"body": "r2", "m.relates_to": rel("m.thread", root)}, nil)
			r2edit := e.edit(room, bob, r2, "r2 v2")

			check := func(where string, ev testEvent, viewer string, wantEdit string) {
				t.Helper()
				r := relationsOf(t, ev)
				if r == nil {
					t.Fatalf("%s: no m.relations on the root: %v", where, ev.Unsigned)
				}
				var edit testEvent
				_ = json.Unmarshal(r["m.replace"], &edit)
				if edit.EventID != wantEdit {
					t.Fatalf("%s: m.replace = %s, want %s", where, edit.EventID, wantEdit)
				}
				var th threadBundle
				if err := json.Unmarshal(r["m.thread"], &th); err != nil {
					t.Fatalf("%s: m.thread %s", where, r["m.thread"])
				}
				if th.Count != 2 || th.LatestEvent.EventID != r2 || !th.CurrentUserParticipated {
					t.Fatalf("%s: m.thread = %+v", where, th)
				}
				var latestEdit testEvent
				_ = json.Unmarshal(relationsOf(t, th.LatestEvent)["m.replace"], &latestEdit)
				if latestEdit.EventID != r2edit {
					t.Fatalf("%s: the thread's latest event lacks its edit: %v", where, th.LatestEvent.Unsigned)
				}
				var refs struct {
					Chunk []struct {
						EventID string `json:"event_id"`
					} `json:"chunk"`
				}
				_ = json.Unmarshal(r["m.reference"], &refs)
				if len(refs.Chunk) != 1 || refs.Chunk[0].EventID != ref {
					t.Fatalf("%s: m.reference = %s", where, r["m.reference"])
				}
			}

			s := e.sync(aliceTok, "", "", 0)
			ev, ok := findEvent(s.Rooms.Join[room].Timeline.Events, root)
			if !ok {
				t.Fatal("root not in the timeline")
			}
			check("sync (alice, who sent the root)", ev, alice, edit2)
			var msgs struct {
				Chunk []testEvent `json:"chunk"`
			}
			if status, raw := e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", bobTok, nil, &msgs); status != 200 {
				t.Fatalf("messages: %d %s", status, raw)
			}
			ev, _ = findEvent(msgs.Chunk, root)
			check("messages (bob, who replied)", ev, bob, edit2)
			var ctxResp struct {
				Event testEvent `json:"event"`
			}
			if status, raw := e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/context/"+url.PathEscape(root), bobTok, nil, &ctxResp); status != 200 {
				t.Fatalf("context: %d %s", status, raw)
			}
			check("context", ctxResp.Event, bob, edit2)

			// A carol who never replied has not participated.
			_, carolTok := e.user("carol")
			e.join(room, "@carol:test.local")
			cs := e.sync(carolTok, "", "", 0)
			ev, _ = findEvent(cs.Rooms.Join[room].Timeline.Events, root)
			var th threadBundle
			_ = json.Unmarshal(relationsOf(t, ev)["m.thread"], &th)
			if th.Count != 2 || th.CurrentUserParticipated {
				t.Fatalf("carol's m.thread = %+v", th)
			}

			// Redacting the newest edit falls back to the previous one; an
			// incremental sync carries the redaction and the new bundle is
			// what /messages returns.
			e.redact(room, alice, edit2)
			e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", bobTok, nil, &msgs)
			ev, _ = findEvent(msgs.Chunk, root)
			var edit testEvent
			_ = json.Unmarshal(relationsOf(t, ev)["m.replace"], &edit)
			if edit.EventID == "" || edit.EventID == edit2 {
				t.Fatalf("after redacting the newest edit, m.replace = %q", edit.EventID)
			}
			// A redacted original has no m.replace bundle.
			e.redact(room, alice, root)
			e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", bobTok, nil, &msgs)
			ev, _ = findEvent(msgs.Chunk, root)
			if r := relationsOf(t, ev); r["m.replace"] != nil {
				t.Fatalf("redacted original still bundles an edit: %s", r["m.replace"])
			}
		})
	}
}

// TestRelationsVisibility: a user sees neither a parent from before they
// joined (joined visibility) nor children from after they left.
func TestRelationsVisibility(t *testing.T) {
	e := newEnv(t, "sqlite")
	alice, aliceTok := e.user("alice")
	carol, carolTok := e.user("carol")
	room := "!vis:test.local"
	e.createRoom(room, alice, "joined")
	early := e.message(room, alice, "before carol")
	e.event(room, alice, "m.room.message", nil, map[string]any{"body": "x", "m.relates_to": rel("m.thread", early)}, nil)
	e.join(room, carol)
	root := e.message(room, alice, "root")
	seen := e.event(room, alice, "m.room.message", nil, map[string]any{"body": "while carol was here", "m.relates_to": rel("m.thread", root)}, nil)
	e.leave(room, carol)
	e.event(room, alice, "m.room.message", nil, map[string]any{"body": "after carol left", "m.relates_to": rel("m.thread", root)}, nil)

	if status, _, raw := e.relations(carolTok, room, early, "", nil); status != 404 || errcode(raw) != "M_NOT_FOUND" {
		t.Fatalf("parent from before carol joined: %d %s", status, raw)
	}
	_, page, _ := e.relations(carolTok, room, root, "", nil)
	if !slices.Equal(ids(page.Chunk), []string{seen}) {
		t.Fatalf("carol sees children %v, want only %s", ids(page.Chunk), seen)
	}
	_, page, _ = e.relations(aliceTok, room, root, "", nil)
	if len(page.Chunk) != 2 {
		t.Fatalf("alice sees %v", ids(page.Chunk))
	}
	// Carol's bundle names the newest reply she may see.
	var msgs struct {
		Chunk []testEvent `json:"chunk"`
	}
	e.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/messages?dir=b&limit=50", carolTok, nil, &msgs)
	ev, ok := findEvent(msgs.Chunk, root)
	if !ok {
		t.Fatalf("root missing from carol's /messages: %v", ids(msgs.Chunk))
	}
	var th threadBundle
	_ = json.Unmarshal(relationsOf(t, ev)["m.thread"], &th)
	if th.LatestEvent.EventID != seen {
		t.Fatalf("carol's latest thread event = %q, want %q", th.LatestEvent.EventID, seen)
	}
}

func TestThreadsEndpoint(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			alice, aliceTok := e.user("alice")
			bob, bobTok := e.user("bob")
			_, carolTok := e.user("carol")
			_, daveTok := e.user("dave")
			room := "!threads:test.local"
			e.createRoom(room, alice, "shared")
			e.join(room, bob)
			e.join(room, "@carol:test.local")
			t1 := e.message(room, alice, "thread one")
			t2 := e.message(room, bob, "thread two")
			e.message(room, alice, "not a thread")
			e.event(room, bob, "m.room.message", nil, map[string]any{"body": "a", "m.relates_to": rel("m.thread", t1)}, nil)
			e.event(room, alice, "m.room.message", nil, map[string]any{"body": "b", "m.relates_to": rel("m.thread", t2)}, nil)

			type threadsResp struct {
				Chunk     []testEvent `json:"chunk"`
				NextBatch string      `json:"next_batch"`
			}
			get := func(tok string, q url.Values) (int, threadsResp, []byte) {
				var out threadsResp
				status, raw := e.do("GET", "/_matrix/client/v1/rooms/"+url.PathEscape(room)+"/threads?"+q.Encode(), tok, nil, &out)
				return status, out, raw
			}
			_, all, _ := get(carolTok, nil)
			if !slices.Equal(ids(all.Chunk), []string{t2, t1}) {
				t.Fatalf("threads = %v, want newest activity first", ids(all.Chunk))
			}
			var th threadBundle
			_ = json.Unmarshal(relationsOf(t, all.Chunk[0])["m.thread"], &th)
			if th.Count != 1 || th.CurrentUserParticipated {
				t.Fatalf("bundled thread = %+v", th)
			}
			// New activity moves a thread to the front.
			e.event(room, bob, "m.room.message", nil, map[string]any{"body": "c", "m.relates_to": rel("m.thread", t1)}, nil)
			_, page1, _ := get(carolTok, url.Values{"limit": {"1"}})
			if !slices.Equal(ids(page1.Chunk), []string{t1}) || page1.NextBatch == "" {
				t.Fatalf("first page = %v next %q", ids(page1.Chunk), page1.NextBatch)
			}
			_, page2, _ := get(carolTok, url.Values{"limit": {"1"}, "from": {page1.NextBatch}})
			if !slices.Equal(ids(page2.Chunk), []string{t2}) || page2.NextBatch != "" {
				t.Fatalf("second page = %v next %q", ids(page2.Chunk), page2.NextBatch)
			}
			if _, p, _ := get(carolTok, url.Values{"include": {"participated"}}); len(p.Chunk) != 0 {
				t.Fatalf("carol participated in %v", ids(p.Chunk))
			}
			if _, p, _ := get(bobTok, url.Values{"include": {"participated"}}); !slices.Equal(ids(p.Chunk), []string{t1, t2}) {
				t.Fatalf("bob participated in %v", ids(p.Chunk))
			}
			if _, p, _ := get(aliceTok, url.Values{"include": {"participated"}}); len(p.Chunk) != 2 {
				t.Fatalf("alice participated in %v", ids(p.Chunk))
			}
			for _, c := range []struct {
				tok    string
				q      url.Values
				status int
				code   string
			}{
				{aliceTok, url.Values{"include": {"mine"}}, 400, "M_INVALID_PARAM"},
				{aliceTok, url.Values{"limit": {"0"}}, 400, "M_INVALID_PARAM"},
				{aliceTok, url.Values{"limit": {"x"}}, 400, "M_INVALID_PARAM"},
				{aliceTok, url.Values{"from": {"nope"}}, 400, "M_INVALID_PARAM"},
				{daveTok, nil, 403, "M_FORBIDDEN"},
			} {
				if status, _, raw := get(c.tok, c.q); status != c.status || errcode(raw) != c.code {
					t.Errorf("%v: %d %s, want %d %s", c.q, status, raw, c.status, c.code)
				}
			}
		})
	}
}
