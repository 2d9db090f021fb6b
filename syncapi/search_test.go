package syncapi

import (
	"net/http"
	"slices"
	"testing"
)

type searchResp struct {
	SearchCategories struct {
		RoomEvents struct {
			Count      int      `json:"count"`
			Highlights []string `json:"highlights"`
			NextBatch  string   `json:"next_batch"`
			Results    []struct {
				Rank    float64   `json:"rank"`
				Result  testEvent `json:"result"`
				Context *struct {
					Start        string                       `json:"start"`
					End          string                       `json:"end"`
					EventsBefore []testEvent                  `json:"events_before"`
					EventsAfter  []testEvent                  `json:"events_after"`
					ProfileInfo  map[string]map[string]string `json:"profile_info"`
				} `json:"context"`
			} `json:"results"`
			Groups map[string]map[string]struct {
				Order     int      `json:"order"`
				Results   []string `json:"results"`
				NextBatch string   `json:"next_batch"`
			} `json:"groups"`
			State map[string][]testEvent `json:"state"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

func (e *env) search(token, nextBatch string, criteria map[string]any) (int, searchResp, []byte) {
	e.t.Helper()
	var out searchResp
	path := "/_matrix/client/v3/search"
	if nextBatch != "" {
		path += "?next_batch=" + nextBatch
	}
	status, raw := e.do("POST", path, token, map[string]any{"search_categories": map[string]any{"room_events": criteria}}, &out)
	return status, out, raw
}

func resultIDs(r searchResp) []string {
	var out []string
	for _, res := range r.SearchCategories.RoomEvents.Results {
		out = append(out, res.Result.EventID)
	}
	return out
}

func TestSearch(t *testing.T) {
	for _, dialect := range []string{"sqlite", "postgres"} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			alice, aliceTok := e.user("alice")
			bob, bobTok := e.user("bob")
			dave, daveTok := e.user("dave")
			open := "!open:test.local"
			e.createRoom(open, alice, "shared")
			e.event(open, alice, "m.room.member", sk(alice), map[string]any{"membership": "join", "displayname": "Alice A"}, nil)
			e.join(open, bob)
			name := e.event(open, alice, "m.room.name", sk(""), map[string]any{"name": "Pineapple fans"}, nil)
			m1 := e.message(open, alice, "I love pineapples on pizza")
			chatter := e.message(open, bob, "unrelated chatter")
			m2 := e.message(open, bob, "pineapple is controversial")
			m3 := e.message(open, alice, "more pineapple talk, pineapple everywhere")

			closed := "!closed:test.local"
			e.createRoom(closed, alice, "joined")
			e.join(closed, dave)
			planA := e.message(closed, alice, "secret pineapple plan A")
			e.leave(closed, dave)
			e.message(closed, alice, "secret pineapple plan B")
			never := "!never:test.local"
			e.createRoom(never, alice, "world_readable")
			e.message(never, alice, "pineapple in a room dave never joined")

			// Dave sees what he could see while joined, nothing after he
			// left, and nothing of rooms he was never in.
			_, r, _ := e.search(daveTok, "", map[string]any{"search_term": "pineapple"})
			if !slices.Equal(resultIDs(r), []string{planA}) || r.SearchCategories.RoomEvents.Count != 1 {
				t.Fatalf("dave found %v (count %d), want only %s", resultIDs(r), r.SearchCategories.RoomEvents.Count, planA)
			}
			_ = dave

			// Recent order, paged two at a time.
			var got []string
			next := ""
			for pages := 0; ; pages++ {
				status, r, raw := e.search(bobTok, next, map[string]any{"search_term": "pineapple", "order_by": "recent", "keys": []string{"content.body"},
					"filter": map[string]any{"limit": 2}})
				if status != http.StatusOK || pages > 3 {
					t.Fatalf("search: %d %s", status, raw)
				}
				if r.SearchCategories.RoomEvents.Count != 3 {
					t.Fatalf("count = %d, want 3", r.SearchCategories.RoomEvents.Count)
				}
				got = append(got, resultIDs(r)...)
				if next = r.SearchCategories.RoomEvents.NextBatch; next == "" {
					break
				}
			}
			if !slices.Equal(got, []string{m3, m2, m1}) {
				t.Fatalf("recent pages = %v, want %v", got, []string{m3, m2, m1})
			}

			// Rank order (the default): the message saying it twice first;
			// paging returns every result once; stems are highlighted.
			_, r1, _ := e.search(bobTok, "", map[string]any{"search_term": "Pineapple", "keys": []string{"content.body"}, "filter": map[string]any{"limit": 1}})
			res := r1.SearchCategories.RoomEvents
			if len(res.Results) != 1 || res.Results[0].Result.EventID != m3 || res.NextBatch == "" || res.Results[0].Rank <= 0 {
				t.Fatalf("first ranked page = %v next %q", resultIDs(r1), res.NextBatch)
			}
			if !slices.Contains(res.Highlights, "pineapple") {
				t.Fatalf("highlights = %v", res.Highlights)
			}
			_, r2, _ := e.search(bobTok, res.NextBatch, map[string]any{"search_term": "Pineapple", "keys": []string{"content.body"}, "filter": map[string]any{"limit": 5}})
			rest := resultIDs(r2)
			slices.Sort(rest)
			want := []string{m1, m2}
			slices.Sort(want)
			if !slices.Equal(rest, want) || r2.SearchCategories.RoomEvents.NextBatch != "" {
				t.Fatalf("second ranked page = %v", resultIDs(r2))
			}
			_, all, _ := e.search(bobTok, "", map[string]any{"search_term": "pineapple", "keys": []string{"content.body"}})
			if !slices.Contains(all.SearchCategories.RoomEvents.Highlights, "pineapples") {
				t.Fatalf("stemmed word not highlighted: %v", all.SearchCategories.RoomEvents.Highlights)
			}

			// Keys, filters, context with profiles, groups and state.
			if _, r, _ := e.search(bobTok, "", map[string]any{"search_term": "pineapple", "keys": []string{"content.name"}}); !slices.Equal(resultIDs(r), []string{name}) {
				t.Fatalf("content.name = %v", resultIDs(r))
			}
			if _, r, _ := e.search(bobTok, "", map[string]any{"search_term": "pineapple", "filter": map[string]any{"senders": []string{bob}}}); !slices.Equal(resultIDs(r), []string{m2}) {
				t.Fatalf("senders filter = %v", resultIDs(r))
			}
			if _, r, _ := e.search(aliceTok, "", map[string]any{"search_term": "pineapple", "filter": map[string]any{"rooms": []string{closed}}}); len(resultIDs(r)) != 2 {
				t.Fatalf("rooms filter = %v", resultIDs(r))
			}
			_, rc, raw := e.search(bobTok, "", map[string]any{"search_term": "controversial",
				"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true},
				"groupings":     map[string]any{"group_by": []map[string]string{{"key": "room_id"}, {"key": "sender"}}},
				"include_state": true})
			results := rc.SearchCategories.RoomEvents.Results
			if len(results) != 1 || results[0].Context == nil {
				t.Fatalf("context search: %s", raw)
			}
			c := results[0].Context
			if !slices.Equal(ids(c.EventsBefore), []string{chatter}) || !slices.Equal(ids(c.EventsAfter), []string{m3}) || c.Start == "" || c.End == "" {
				t.Fatalf("context = before %v after %v", ids(c.EventsBefore), ids(c.EventsAfter))
			}
			if c.ProfileInfo[alice]["displayname"] != "Alice A" || c.ProfileInfo[bob] == nil {
				t.Fatalf("profile_info = %v", c.ProfileInfo)
			}
			groups := rc.SearchCategories.RoomEvents.Groups
			if g := groups["room_id"][open]; g.Order != 1 || !slices.Equal(g.Results, []string{m2}) {
				t.Fatalf("room group = %+v", groups)
			}
			if g := groups["sender"][bob]; !slices.Equal(g.Results, []string{m2}) {
				t.Fatalf("sender group = %+v", groups)
			}
			if len(rc.SearchCategories.RoomEvents.State[open]) == 0 {
				t.Fatal("include_state gave no state")
			}
		})
	}
}

func TestSearchBadInput(t *testing.T) {
	e := newEnv(t, "sqlite")
	_, tok := e.user("alice")
	for _, c := range []struct {
		name   string
		body   any
		next   string
		status int
		code   string
	}{
		{"not JSON", "{nope", "", 400, "M_NOT_JSON"},
		{"no categories", map[string]any{}, "", 400, "M_BAD_JSON"},
		{"no search_term", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}, "", 400, "M_BAD_JSON"},
		{"search_term not a string", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 5}}}, "", 400, "M_BAD_JSON"},
		{"bad key", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "keys": []string{"content.x"}}}}, "", 400, "M_BAD_JSON"},
		{"bad order", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "size"}}}, "", 400, "M_BAD_JSON"},
		{"bad group", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []map[string]string{{"key": "type"}}}}}}, "", 400, "M_BAD_JSON"},
		{"negative context", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "event_context": map[string]any{"before_limit": -1}}}}, "", 400, "M_BAD_JSON"},
		{"bad next_batch", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}}, "zzz", 400, "M_INVALID_PARAM"},
		{"recent token for rank", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}}, "p5", 400, "M_INVALID_PARAM"},
		{"empty categories", map[string]any{"search_categories": map[string]any{}}, "", 200, ""},
		{"punctuation only", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "!!"}}}, "", 200, ""},
	} {
		path := "/_matrix/client/v3/search"
		if c.next != "" {
			path += "?next_batch=" + c.next
		}
		status, raw := e.do("POST", path, tok, c.body, nil)
		if status != c.status || errcode(raw) != c.code {
			t.Errorf("%s: %d %s, want %d %s", c.name, status, raw, c.status, c.code)
		}
	}
}
