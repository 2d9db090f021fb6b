package syncapi

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Bounds of one search request.
const (
	defaultSearchLimit = 10
	maxSearchLimit     = 50
	// maxSearchCandidates bounds the matches read per request, before
	// visibility and filters; count is then a lower bound.
	maxSearchCandidates = 1000
	defaultContextLimit = 5
	maxSearchContext    = 20
	maxSearchTermBytes  = 1000
)

// Search request (client-server spec §"POST /_matrix/client/v3/search").
type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *RoomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

func (c *roomEventsCriteria) validate() error {
	if c.SearchTerm == nil {
		return httputil.BadJSON("search_term is required")
	}
	if len(*c.SearchTerm) > maxSearchTermBytes {
		return httputil.BadJSON("search_term is longer than %d bytes", maxSearchTermBytes)
	}
	for _, k := range c.Keys {
		if k != storage.SearchKeyBody && k != storage.SearchKeyName && k != storage.SearchKeyTopic {
			return httputil.BadJSON("unknown search key %q", k)
		}
	}
	if c.OrderBy != "" && c.OrderBy != "rank" && c.OrderBy != "recent" {
		return httputil.BadJSON("order_by must be 'rank' or 'recent'")
	}
	if c.Filter != nil && c.Filter.Limit != nil && *c.Filter.Limit < 0 {
		return httputil.BadJSON("filter.limit must not be negative")
	}
	if ec := c.EventContext; ec != nil {
		if (ec.BeforeLimit != nil && *ec.BeforeLimit < 0) || (ec.AfterLimit != nil && *ec.AfterLimit < 0) {
			return httputil.BadJSON("event_context limits must not be negative")
		}
	}
	if c.Groupings != nil {
		for _, g := range c.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return httputil.BadJSON("group_by key must be 'room_id' or 'sender'")
			}
		}
	}
	return nil
}

type searchResponse struct {
	SearchCategories struct {
		RoomEvents *roomEventsResult `json:"room_events,omitempty"`
	} `json:"search_categories"`
}

type roomEventsResult struct {
	Count      int                                      `json:"count"`
	Highlights []string                                 `json:"highlights"`
	Results    []searchResult                           `json:"results"`
	NextBatch  string                                   `json:"next_batch,omitempty"`
	Groups     map[string]map[string]*searchResultGroup `json:"groups,omitempty"`
	State      map[string][]json.RawMessage             `json:"state,omitempty"`
}

type searchResult struct {
	Rank    float64         `json:"rank"`
	Result  json.RawMessage `json:"result"`
	Context *searchContext  `json:"context,omitempty"`
}

type searchContext struct {
	Start        string                 `json:"start"`
	End          string                 `json:"end"`
	ProfileInfo  map[string]profileInfo `json:"profile_info,omitempty"`
	EventsBefore []json.RawMessage      `json:"events_before"`
	EventsAfter  []json.RawMessage      `json:"events_after"`
}

type profileInfo struct {
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

type searchResultGroup struct {
	NextBatch string   `json:"next_batch,omitempty"`
	Order     int      `json:"order"`
	Results   []string `json:"results"`
}

// handleSearch serves POST /v3/search (client-server spec §"Server Side
// Search"). Only the room_events category exists.
func (s *Service) handleSearch(w http.ResponseWriter, r *http.Request) {
	resp, err := s.search(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

// A search's next_batch is "r<offset>" into the ranked results, or
// "p<position>" for recent order: the next page holds results older than
// that stream position, so new messages do not shift it.
func parseSearchToken(v string, recent bool) (int64, error) {
	prefix := "r"
	if recent {
		prefix = "p"
	}
	rest, ok := strings.CutPrefix(v, prefix)
	n, err := strconv.ParseInt(rest, 10, 64)
	if !ok || err != nil || n < 0 {
		return 0, httputil.InvalidParam("Invalid next_batch token for this order_by")
	}
	return n, nil
}

func (s *Service) search(r *http.Request) (*searchResponse, error) {
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx)
	var req searchRequest
	if err := httputil.DecodeJSON(r, s.maxBody(), &req); err != nil {
		return nil, err
	}
	if req.SearchCategories == nil {
		return nil, httputil.BadJSON("search_categories is required")
	}
	resp := &searchResponse{}
	crit := req.SearchCategories.RoomEvents
	if crit == nil {
		return resp, nil
	}
	if err := crit.validate(); err != nil {
		return nil, err
	}
	recent := crit.OrderBy == "recent"
	var token int64
	hasToken := r.URL.Query().Get("next_batch") != ""
	if hasToken {
		var err error
		if token, err = parseSearchToken(r.URL.Query().Get("next_batch"), recent); err != nil {
			return nil, err
		}
	}
	f := crit.Filter
	limit := f.limitOr(defaultSearchLimit, maxSearchLimit)

	histories, err := s.db.MembershipHistories(ctx, caller.UserID)
	if err != nil {
		return nil, err
	}
	vis := make(map[string]roomVisibility, len(histories))
	for roomID, h := range histories {
		vis[roomID] = newRoomVisibility(caller.UserID, h)
	}
	sq := storage.SearchQuery{UserID: caller.UserID, Term: *crit.SearchTerm, Keys: crit.Keys, Recent: recent, Limit: maxSearchCandidates}
	if f != nil {
		sq.Rooms, sq.NotRooms = f.Rooms, f.NotRooms
	}
	hits, err := s.db.Search(ctx, sq)
	if err != nil {
		return nil, err
	}
	// Visibility and the filter's senders and types (wildcards included)
	// are applied here, to the bounded candidate list.
	visible := hits[:0]
	for _, h := range hits {
		ev := storage.Event{Position: h.Position, RoomID: h.RoomID, Type: h.Type, StateKey: h.StateKey, HistoryVisibility: h.HistoryVisibility}
		if canSeeIn(vis, &ev) && (f == nil || f.EventFilter.matches(h.Sender, h.Type)) {
			visible = append(visible, h)
		}
	}
	start := 0
	if hasToken {
		if recent {
			for start < len(visible) && visible[start].Position >= token {
				start++
			}
		} else {
			start = int(min(token, int64(len(visible))))
		}
	}
	end := min(start+limit, len(visible))
	page := visible[start:end]

	out := &roomEventsResult{Count: len(visible), Highlights: []string{}, Results: []searchResult{}}
	resp.SearchCategories.RoomEvents = out
	if end < len(visible) {
		if recent {
			out.NextBatch = "p" + strconv.FormatInt(page[len(page)-1].Position, 10)
		} else {
			out.NextBatch = "r" + strconv.Itoa(end)
		}
	}
	if len(page) == 0 {
		return resp, nil
	}

	ids := make([]string, len(page))
	for i, h := range page {
		ids[i] = h.EventID
	}
	loaded, err := s.db.EventsByIDOrPosition(ctx, ids, nil)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*storage.Event, len(loaded))
	for i := range loaded {
		byID[loaded[i].EventID] = &loaded[i]
	}
	type pageEntry struct {
		hit    storage.SearchHit
		ev     *storage.Event
		before []storage.Event
		after  []storage.Event
	}
	entries := make([]pageEntry, 0, len(page))
	all := make([]storage.Event, 0, len(page))
	for _, h := range page {
		if ev := byID[h.EventID]; ev != nil {
			entries = append(entries, pageEntry{hit: h, ev: ev})
			all = append(all, *ev)
		}
	}
	if ec := crit.EventContext; ec != nil {
		cur, err := s.currentToken(ctx)
		if err != nil {
			return nil, err
		}
		nBefore, nAfter := contextLimit(ec.BeforeLimit), contextLimit(ec.AfterLimit)
		for i := range entries {
			e := &entries[i]
			v := vis[e.ev.RoomID]
			if e.before, _, err = s.scan(ctx, e.ev.RoomID, v, 0, e.ev.Position-1, true, nBefore, nil); err != nil {
				return nil, err
			}
			if e.after, _, err = s.scan(ctx, e.ev.RoomID, v, e.ev.Position, cur.Events, false, nAfter, nil); err != nil {
				return nil, err
			}
			all = append(append(all, e.before...), e.after...)
		}
	}

	fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
	if fm, err = s.withRelations(ctx, fm, vis, all); err != nil {
		return nil, err
	}
	for _, e := range entries {
		res := searchResult{Rank: e.hit.Rank, Result: fm.format(e.ev)}
		if ec := crit.EventContext; ec != nil {
			c := &searchContext{
				Start:        paginationToken(e.ev.Position - 1),
				End:          paginationToken(e.ev.Position),
				EventsBefore: fm.formatAll(e.before),
				EventsAfter:  fm.formatAll(e.after),
			}
			if len(e.before) > 0 {
				c.Start = paginationToken(e.before[len(e.before)-1].Position - 1)
			}
			if len(e.after) > 0 {
				c.End = paginationToken(e.after[len(e.after)-1].Position)
			}
			if ec.IncludeProfile {
				if c.ProfileInfo, err = s.historicProfiles(ctx, e.ev, e.before, e.after); err != nil {
					return nil, err
				}
			}
			res.Context = c
		}
		out.Results = append(out.Results, res)
	}

	bodies, err := s.db.SearchBodies(ctx, ids)
	if err != nil {
		return nil, err
	}
	out.Highlights = highlights(*crit.SearchTerm, bodies)
	if crit.Groupings != nil {
		out.Groups = groupResults(crit, page, visible[end:], out.NextBatch)
	}
	if crit.IncludeState {
		if out.State, err = s.searchState(ctx, caller.UserID, page); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// limitOr is the filter's limit bounded to max, or def when unset or 0.
func (f *RoomEventFilter) limitOr(def, max int) int {
	if f == nil || f.Limit == nil || *f.Limit == 0 {
		return def
	}
	return min(*f.Limit, max)
}

func contextLimit(v *int) int {
	if v == nil {
		return defaultContextLimit
	}
	return min(*v, maxSearchContext)
}

// historicProfiles gives the display name and avatar of each sender of a
// result and its context as of the result (client-server spec: "historic
// profile information"), from their member event in force at that point.
func (s *Service) historicProfiles(ctx context.Context, ev *storage.Event, before, after []storage.Event) (map[string]profileInfo, error) {
	out := map[string]profileInfo{}
	for _, e := range slices.Concat([]storage.Event{*ev}, before, after) {
		if _, done := out[e.Sender]; done {
			continue
		}
		member, err := s.db.MemberEventAt(ctx, ev.RoomID, e.Sender, ev.Position)
		if err != nil {
			return nil, err
		}
		var p profileInfo
		if member != nil {
			var c struct {
				Content profileInfo `json:"content"`
			}
			_ = json.Unmarshal(member.JSON, &c)
			p = c.Content
		}
		out[e.Sender] = p
	}
	return out, nil
}

// highlights lists the words clients should highlight: the query's words
// and the words of the results that share a stem-like prefix with one of
// them ("run" highlights "running"), since both databases stem.
func highlights(term string, bodies map[string]string) []string {
	words := storage.SearchWords(term)
	out := []string{}
	seen := map[string]bool{}
	add := func(w string) {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	for _, w := range words {
		add(w)
	}
	for _, body := range bodies {
		for _, tok := range storage.SearchWords(body) {
			for _, w := range words {
				if strings.HasPrefix(tok, w) || (len(tok) >= 3 && strings.HasPrefix(w, tok)) {
					add(tok)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// groupResults partitions the page by room or sender. A group has a
// next_batch when later results (rest) belong to it.
func groupResults(crit *roomEventsCriteria, page, rest []storage.SearchHit, nextBatch string) map[string]map[string]*searchResultGroup {
	out := map[string]map[string]*searchResultGroup{}
	for _, g := range crit.Groupings.GroupBy {
		keyOf := func(h storage.SearchHit) string { return h.RoomID }
		if g.Key == "sender" {
			keyOf = func(h storage.SearchHit) string { return h.Sender }
		}
		groups := map[string]*searchResultGroup{}
		for _, h := range page {
			k := keyOf(h)
			grp := groups[k]
			if grp == nil {
				grp = &searchResultGroup{Order: len(groups) + 1, Results: []string{}}
				groups[k] = grp
			}
			grp.Results = append(grp.Results, h.EventID)
		}
		for _, h := range rest {
			if grp := groups[keyOf(h)]; grp != nil {
				grp.NextBatch = nextBatch
			}
		}
		out[g.Key] = groups
	}
	return out
}

// searchState returns the current state of each room in the results that
// the user is joined to now; the current state of a room they left is not
// theirs to read.
func (s *Service) searchState(ctx context.Context, userID string, page []storage.SearchHit) (map[string][]json.RawMessage, error) {
	out := map[string][]json.RawMessage{}
	fm := eventFormatter{userID: userID, now: time.Now()}
	checked := map[string]bool{}
	for _, h := range page {
		if checked[h.RoomID] {
			continue
		}
		checked[h.RoomID] = true
		m, err := s.db.CurrentMembership(ctx, h.RoomID, userID)
		if err != nil {
			return nil, err
		}
		if m != "join" {
			continue
		}
		state, err := s.db.CurrentState(ctx, storage.StateQuery{RoomID: h.RoomID})
		if err != nil {
			return nil, err
		}
		out[h.RoomID] = fm.formatAll(state)
	}
	return out, nil
}
