package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Bounds of relations work per request.
const (
	defaultRelationsLimit = 50
	maxRelationsLimit     = 100
	// recursionDepth is how many levels of relations recurse=true follows
	// (client-server spec: "It is recommended that homeservers traverse at
	// least 3 levels of relationships").
	recursionDepth = 3
	// maxBundledReferences bounds the m.reference chunk of one event.
	maxBundledReferences = 50
	// latestThreadScan bounds the replies read back from a thread's newest
	// when that one is hidden from the user.
	latestThreadScan = 20
)

// withRelations returns fm with the bundled aggregations (client-server
// spec §"Aggregations of child events") of evs, so that formatting them
// adds unsigned."m.relations". vis holds the user's visibility of each
// room evs come from: a child the user may not see is not bundled.
//
// The cost is one query for the whole page when none of its events has
// children (the common case) and a handful more, again for the whole page,
// when some do; never a query per event.
func (s *Service) withRelations(ctx context.Context, fm eventFormatter, vis map[string]roomVisibility, evs []storage.Event) (eventFormatter, error) {
	if fm.federation || len(evs) == 0 {
		return fm, nil
	}
	rel, err := s.aggregate(ctx, fm, vis, evs, true)
	if err != nil {
		return fm, err
	}
	fm.relations = rel
	return fm, nil
}

func canSeeIn(vis map[string]roomVisibility, ev *storage.Event) bool {
	v, ok := vis[ev.RoomID]
	return ok && v.canSee(ev)
}

// aggregate computes the m.relations object of each of evs that has one.
// withThreads is false for the latest event of a thread, which cannot
// itself be a thread root (threads do not nest).
func (s *Service) aggregate(ctx context.Context, fm eventFormatter, vis map[string]roomVisibility, evs []storage.Event, withThreads bool) (map[string]json.RawMessage, error) {
	byID := make(map[string]*storage.Event, len(evs))
	ids := make([]string, 0, len(evs))
	for i := range evs {
		if _, dup := byID[evs[i].EventID]; !dup {
			byID[evs[i].EventID] = &evs[i]
			ids = append(ids, evs[i].EventID)
		}
	}
	sums, err := s.db.ChildSummaries(ctx, ids, fm.userID)
	if err != nil || len(sums) == 0 {
		return nil, err
	}
	var editParents, refParents []string
	var threads []storage.ChildSummary
	for _, sum := range sums {
		parent := byID[sum.Parent]
		// A child in another room claiming this parent is no relation
		// (spec: related events must share the room).
		if parent == nil || parent.RoomID != sum.RoomID {
			continue
		}
		switch sum.RelType {
		case storage.RelReplace:
			if editable(parent) {
				editParents = append(editParents, sum.Parent)
			}
		case storage.RelThread:
			if withThreads {
				threads = append(threads, sum)
			}
		case storage.RelReference:
			refParents = append(refParents, sum.Parent)
		}
	}

	out := map[string]map[string]any{}
	put := func(parent, relType string, v any) {
		if out[parent] == nil {
			out[parent] = map[string]any{}
		}
		out[parent][relType] = v
	}
	plain := fm
	plain.relations = nil

	// Load the newest edits and each thread's newest reply together.
	newestEdit := map[string]string{}
	if len(editParents) > 0 {
		cands, err := s.db.LatestEdits(ctx, editParents)
		if err != nil {
			return nil, err
		}
		for _, c := range cands {
			// Ties on origin_server_ts go to the lexicographically largest
			// event ID (client-server spec §"Server-side aggregation of
			// m.replace relationships").
			if c.EventID > newestEdit[c.Parent] {
				newestEdit[c.Parent] = c.EventID
			}
		}
	}
	editIDs := make([]string, 0, len(newestEdit))
	for _, id := range newestEdit {
		editIDs = append(editIDs, id)
	}
	positions := make([]int64, 0, len(threads))
	for _, t := range threads {
		positions = append(positions, t.Latest)
	}
	loaded, err := s.db.EventsByIDOrPosition(ctx, editIDs, positions)
	if err != nil {
		return nil, err
	}
	loadedByID := map[string]*storage.Event{}
	loadedByPos := map[int64]*storage.Event{}
	for i := range loaded {
		loadedByID[loaded[i].EventID] = &loaded[i]
		loadedByPos[loaded[i].Position] = &loaded[i]
	}
	for parent, id := range newestEdit {
		if ev := loadedByID[id]; ev != nil && canSeeIn(vis, ev) {
			put(parent, storage.RelReplace, plain.format(ev))
		}
	}

	if len(threads) > 0 {
		latest := make([]storage.Event, 0, len(threads))
		latestOf := map[string]int{}
		for _, t := range threads {
			ev := loadedByPos[t.Latest]
			if ev == nil || !canSeeIn(vis, ev) {
				if ev, err = s.latestVisibleReply(ctx, vis, byID[t.Parent]); err != nil {
					return nil, err
				}
			}
			if ev != nil {
				latestOf[t.Parent] = len(latest)
				latest = append(latest, *ev)
			}
		}
		// The latest event carries its own aggregations (its edits).
		nested, err := s.aggregate(ctx, fm, vis, latest, false)
		if err != nil {
			return nil, err
		}
		withNested := fm
		withNested.relations = nested
		for _, t := range threads {
			i, ok := latestOf[t.Parent]
			if !ok {
				continue
			}
			// Spec: client-server §"Server-side aggregation of m.thread
			// relationships". The count is the server's (approximate)
			// number of replies, including any the user cannot see.
			put(t.Parent, storage.RelThread, map[string]any{
				"latest_event":              withNested.format(&latest[i]),
				"count":                     t.Count,
				"current_user_participated": t.ByUser || byID[t.Parent].Sender == fm.userID,
			})
		}
	}

	if len(refParents) > 0 {
		refs, err := s.db.ChildrenOf(ctx, refParents, storage.RelReference, maxBundledReferences)
		if err != nil {
			return nil, err
		}
		chunks := map[string][]map[string]string{}
		for i := range refs {
			if canSeeIn(vis, &refs[i].Event) && refs[i].RoomID == byID[refs[i].Parent].RoomID {
				chunks[refs[i].Parent] = append(chunks[refs[i].Parent], map[string]string{"event_id": refs[i].EventID})
			}
		}
		for parent, chunk := range chunks {
			put(parent, storage.RelReference, map[string]any{"chunk": chunk})
		}
	}

	res := make(map[string]json.RawMessage, len(out))
	for id, m := range out {
		res[id], _ = json.Marshal(m)
	}
	return res, nil
}

// latestVisibleReply walks a thread back from its newest reply to the
// newest one the user may see, a bounded number of replies.
func (s *Service) latestVisibleReply(ctx context.Context, vis map[string]roomVisibility, root *storage.Event) (*storage.Event, error) {
	evs, err := s.db.RelatedEvents(ctx, storage.RelationsQuery{RoomID: root.RoomID, Parent: root.EventID, RelType: storage.RelThread,
		Before: 1<<62 - 1, Backwards: true, Limit: latestThreadScan, Depth: 1})
	if err != nil {
		return nil, err
	}
	for i := range evs {
		if canSeeIn(vis, &evs[i]) {
			return &evs[i], nil
		}
	}
	return nil, nil
}

// editable says whether ev may have its replacements bundled: not a state
// event, not redacted (client-server spec: a redacted original has no
// m.replace bundle) and not itself an edit.
func editable(ev *storage.Event) bool {
	if ev.StateKey != nil || ev.RedactedBecause != nil {
		return false
	}
	rel, ok := storage.RelationOf(ev.JSON)
	return !ok || rel.RelType != storage.RelReplace
}

type relationsResponse struct {
	Chunk          []json.RawMessage `json:"chunk"`
	NextBatch      string            `json:"next_batch,omitempty"`
	PrevBatch      string            `json:"prev_batch,omitempty"`
	RecursionDepth *int              `json:"recursion_depth,omitempty"`
}

// handleRelations serves GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
// (client-server spec §"GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}").
func (s *Service) handleRelations(w http.ResponseWriter, r *http.Request) {
	resp, err := s.relations(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) relations(r *http.Request) (*relationsResponse, error) {
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx)
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	parentID := pathParam(r, "eventId")
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return nil, httputil.InvalidParam("dir must be 'b' or 'f'")
	}
	limit, err := parseLimit(q.Get("limit"), defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return nil, err
	}
	depth := 1
	var respDepth *int
	switch q.Get("recurse") {
	case "":
	case "true":
		depth = recursionDepth
		respDepth = &depth
	case "false":
		respDepth = &depth
	default:
		return nil, httputil.InvalidParam("recurse must be true or false")
	}
	cur, err := s.currentToken(ctx)
	if err != nil {
		return nil, err
	}
	from := cur.Events
	if dir == "f" {
		from = 0
	}
	fromGiven := q.Get("from") != ""
	if fromGiven {
		if from, err = parsePaginationToken(q.Get("from")); err != nil {
			return nil, httputil.InvalidParam("Invalid from token")
		}
		from = min(from, cur.Events)
	}
	to := int64(-1)
	if v := q.Get("to"); v != "" {
		if to, err = parsePaginationToken(v); err != nil {
			return nil, httputil.InvalidParam("Invalid to token")
		}
	}

	// Spec: 404 when the parent is unknown or the user may not see it.
	vis, err := s.roomAccess(ctx, roomID, caller.UserID)
	var herr *httputil.Error
	if errors.As(err, &herr) {
		return nil, httputil.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	parent, softFailed, err := s.db.EventByID(ctx, parentID)
	if err != nil {
		return nil, err
	}
	if parent == nil || softFailed || parent.RoomID != roomID || !vis.canSee(parent) {
		return nil, httputil.NotFound("Event not found")
	}

	rq := storage.RelationsQuery{RoomID: roomID, Parent: parentID, RelType: pathParam(r, "relType"), EventType: pathParam(r, "eventType"),
		Backwards: dir == "b", Depth: depth}
	if dir == "b" {
		rq.After, rq.Before = max(to, 0), from
	} else {
		rq.After, rq.Before = from, cur.Events
		if to >= 0 {
			rq.Before = min(rq.Before, to)
		}
	}
	evs, more, err := s.scanRelations(ctx, vis, rq, limit)
	if err != nil {
		return nil, err
	}
	resp := &relationsResponse{Chunk: []json.RawMessage{}, RecursionDepth: respDepth}
	if fromGiven {
		resp.PrevBatch = paginationToken(from)
	}
	if more && len(evs) > 0 {
		last := evs[len(evs)-1].Position
		if dir == "b" {
			last--
		}
		resp.NextBatch = paginationToken(last)
	}
	fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
	if fm, err = s.withRelations(ctx, fm, map[string]roomVisibility{roomID: vis}, evs); err != nil {
		return nil, err
	}
	resp.Chunk = fm.formatAll(evs)
	return resp, nil
}

// scanRelations pages through the children of q, keeping those the user
// may see, until it has limit of them; more reports that others may
// follow. Rows read are bounded as in scan.
func (s *Service) scanRelations(ctx context.Context, vis roomVisibility, q storage.RelationsQuery, limit int) (out []storage.Event, more bool, err error) {
	want := limit + 1
	batch := max(2*want, 50)
	scanned := 0
	for {
		q.Limit = batch
		rows, err := s.db.RelatedEvents(ctx, q)
		if err != nil {
			return nil, false, err
		}
		for i := range rows {
			if vis.canSee(&rows[i]) {
				out = append(out, rows[i])
				if len(out) == want {
					return out[:limit], true, nil
				}
			}
		}
		scanned += len(rows)
		if len(rows) < batch {
			return out, false, nil
		}
		if scanned >= maxScanRows {
			return out, true, nil
		}
		if q.Backwards {
			q.Before = rows[len(rows)-1].Position - 1
		} else {
			q.After = rows[len(rows)-1].Position
		}
	}
}
