package clientapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Spaces" (GET /rooms/{roomId}/hierarchy).

const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 100
	// maxHierarchyDepth is both the default and the largest max_depth.
	maxHierarchyDepth = 20
	// hierarchyExtraSteps bounds the rooms one page may look at beyond
	// the rooms it returns (rooms the user may not see, or not known here).
	hierarchyExtraSteps = 200
	// maxHierarchySkip bounds how far a pagination token may point.
	maxHierarchySkip = 100_000
	// maxChildOrderLength is the longest valid "order" of an m.space.child.
	maxChildOrderLength = 50
)

// hierarchyRoom is the spec's SpaceHierarchyRoomsChunk.
type hierarchyRoom struct {
	rsapi.PublicRoomsChunk
	ChildrenState []strippedChildEvent `json:"children_state"`
}

// strippedChildEvent is an m.space.child event as stripped state with its
// origin_server_ts.
type strippedChildEvent struct {
	Type           string          `json:"type"`
	StateKey       string          `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	Sender         string          `json:"sender"`
	OriginServerTS int64           `json:"origin_server_ts"`
}

// hierarchyToken is the pagination state, opaque to clients: the request's
// root and filters (which must not change between pages) and how many
// steps of the depth-first walk earlier pages took. A page walks again
// from the root, which keeps the server free of per-client state.
type hierarchyToken struct {
	Root          string `json:"r"`
	MaxDepth      int    `json:"d"`
	SuggestedOnly bool   `json:"s"`
	Steps         int    `json:"n"`
}

func (t *hierarchyToken) encode() string {
	return base64.RawURLEncoding.EncodeToString(mustJSON(t))
}

func parseHierarchyToken(s string) (*hierarchyToken, error) {
	bad := httputil.InvalidParam("Unknown pagination token")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, bad
	}
	var t hierarchyToken
	if json.Unmarshal(raw, &t) != nil || t.Steps < 0 || t.Steps > maxHierarchySkip {
		return nil, bad
	}
	return &t, nil
}

type hierarchyRequest struct {
	root          string
	limit         int
	maxDepth      int
	suggestedOnly bool
	skip          int
}

func parseHierarchyRequest(r *http.Request) (*hierarchyRequest, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := &hierarchyRequest{root: roomID, limit: defaultHierarchyLimit, maxDepth: maxHierarchyDepth}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, httputil.InvalidParam("limit must be a positive integer")
		}
		req.limit = min(n, maxHierarchyLimit)
	}
	if v := q.Get("max_depth"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, httputil.InvalidParam("max_depth must be a non-negative integer")
		}
		req.maxDepth = min(n, maxHierarchyDepth)
	}
	switch v := q.Get("suggested_only"); v {
	case "", "false":
	case "true":
		req.suggestedOnly = true
	default:
		return nil, httputil.InvalidParam("suggested_only must be true or false")
	}
	if v := q.Get("from"); v != "" {
		t, err := parseHierarchyToken(v)
		if err != nil {
			return nil, err
		}
		if t.Root != roomID {
			return nil, httputil.InvalidParam("Unknown pagination token")
		}
		if t.MaxDepth != req.maxDepth || t.SuggestedOnly != req.suggestedOnly {
			return nil, httputil.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		req.skip = t.Steps
	}
	return req, nil
}

// GET /rooms/{roomId}/hierarchy
func (s *Server) handleGetHierarchy(w http.ResponseWriter, r *http.Request) {
	req, err := parseHierarchyRequest(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	rooms, next, err := s.walkHierarchy(r.Context(), req)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	resp := struct {
		Rooms     []hierarchyRoom `json:"rooms"`
		NextBatch string          `json:"next_batch,omitempty"`
	}{Rooms: rooms}
	if next != nil {
		resp.NextBatch = next.encode()
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

type hierarchyEntry struct {
	roomID string
	depth  int
}

// walkHierarchy walks the space tree depth first from the root: a room,
// then each of its children (in the spec's order) with everything under
// it. Rooms the user may not see, and rooms this server does not know
// (they would need federation), are left out, though they still appear in
// their parent's children_state. Each room is visited once, which breaks
// loops. A step is one room taken off the walk; the first req.skip steps
// were returned by earlier pages.
func (s *Server) walkHierarchy(ctx context.Context, req *hierarchyRequest) ([]hierarchyRoom, *hierarchyToken, error) {
	caller := httputil.CallerFrom(ctx).UserID
	stack := []hierarchyEntry{{roomID: req.root}}
	visited := map[string]bool{}
	rooms := []hierarchyRoom{}
	steps := 0
	budget := req.skip + req.limit + hierarchyExtraSteps
	for len(stack) > 0 && len(rooms) < req.limit && steps < budget {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if visited[e.roomID] {
			continue
		}
		visited[e.roomID] = true
		steps++
		isRoot := e.roomID == req.root
		sum, err := s.rooms.QueryRoomSummary(ctx, e.roomID)
		if errors.Is(err, rsapi.ErrRoomNotFound) {
			if isRoot {
				return nil, nil, httputil.Forbidden("You are not allowed to view this room")
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		ok, err := s.canPeekSummary(ctx, caller, sum)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			if isRoot {
				return nil, nil, httputil.Forbidden("You are not allowed to view this room")
			}
			continue
		}
		var children []strippedChildEvent
		if sum.RoomType == roomTypeSpace {
			if children, err = s.spaceChildren(ctx, e.roomID, req.suggestedOnly); err != nil {
				return nil, nil, err
			}
		}
		if steps > req.skip {
			rooms = append(rooms, hierarchyRoom{PublicRoomsChunk: rsapi.ChunkFromSummary(sum), ChildrenState: orEmpty(children)})
		}
		if e.depth < req.maxDepth {
			for i := len(children) - 1; i >= 0; i-- {
				stack = append(stack, hierarchyEntry{roomID: children[i].StateKey, depth: e.depth + 1})
			}
		}
	}
	for _, e := range stack {
		if !visited[e.roomID] {
			return rooms, &hierarchyToken{Root: req.root, MaxDepth: req.maxDepth, SuggestedOnly: req.suggestedOnly, Steps: steps}, nil
		}
	}
	return rooms, nil, nil
}

func orEmpty(c []strippedChildEvent) []strippedChildEvent {
	if c == nil {
		return []strippedChildEvent{}
	}
	return c
}

// canPeekSummary says whether the user may see a room's summary in the
// hierarchy: they are joined or invited, anyone may read it
// (world_readable), anyone may ask to get in (public or knock join rules),
// or a restricted join rule lets them in through a room they are joined
// to. Users banned from a room never see it.
func (s *Server) canPeekSummary(ctx context.Context, userID string, sum *rsapi.RoomSummary) (bool, error) {
	m, err := s.rooms.QueryMembership(ctx, sum.RoomID, userID)
	if err != nil {
		return false, err
	}
	switch m.Membership {
	case visibility.Ban:
		return false, nil
	case visibility.Join, visibility.Invite:
		return true, nil
	}
	if sum.WorldReadable() {
		return true, nil
	}
	switch sum.JoinRule {
	case spec.Public, spec.Knock, spec.KnockRestricted:
		return true, nil
	case spec.Restricted:
	default:
		return false, nil
	}
	for _, allowed := range sum.AllowRoomIDs {
		am, err := s.rooms.QueryMembership(ctx, allowed, userID)
		if errors.Is(err, rsapi.ErrRoomNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if am.Membership == visibility.Join {
			return true, nil
		}
	}
	return false, nil
}

// spaceChildren returns a space's valid m.space.child events (a room ID
// as state key and a non-empty via list), in the spec's order: children
// with a valid "order" by it, then by timestamp, then by room ID.
func (s *Server) spaceChildren(ctx context.Context, roomID string, suggestedOnly bool) ([]strippedChildEvent, error) {
	evs, err := s.rooms.QueryCurrentStateOfType(ctx, roomID, typeSpaceChild)
	if err != nil {
		return nil, err
	}
	type child struct {
		ev       strippedChildEvent
		order    string
		hasOrder bool
	}
	var kids []child
	for _, ev := range evs {
		if ev.StateKey() == nil {
			continue
		}
		if _, err := spec.NewRoomID(*ev.StateKey()); err != nil {
			continue
		}
		var c struct {
			Via       []string        `json:"via"`
			Order     json.RawMessage `json:"order"`
			Suggested bool            `json:"suggested"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || len(c.Via) == 0 {
			continue
		}
		if suggestedOnly && !c.Suggested {
			continue
		}
		k := child{ev: strippedChildEvent{
			Type: ev.Type(), StateKey: *ev.StateKey(), Content: ev.Content(),
			Sender: string(ev.SenderID()), OriginServerTS: int64(ev.OriginServerTS()),
		}}
		var order string
		if json.Unmarshal(c.Order, &order) == nil && validChildOrder(order) {
			k.order, k.hasOrder = order, true
		}
		kids = append(kids, k)
	}
	sort.SliceStable(kids, func(i, j int) bool {
		a, b := kids[i], kids[j]
		if a.hasOrder != b.hasOrder {
			return a.hasOrder
		}
		if a.hasOrder && a.order != b.order {
			return a.order < b.order
		}
		if a.ev.OriginServerTS != b.ev.OriginServerTS {
			return a.ev.OriginServerTS < b.ev.OriginServerTS
		}
		return a.ev.StateKey < b.ev.StateKey
	})
	out := make([]strippedChildEvent, len(kids))
	for i, k := range kids {
		out[i] = k.ev
	}
	return out, nil
}

// validChildOrder: at most 50 characters, each in \x20–\x7E (spec
// m.space.child "order").
func validChildOrder(o string) bool {
	if len(o) > maxChildOrderLength {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7E {
			return false
		}
	}
	return true
}
