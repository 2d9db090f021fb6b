package syncapi

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Bounds of /messages and /context.
const (
	defaultMessagesLimit = 10
	maxMessagesLimit     = 1000
	maxContextLimit      = 100
	maxTimestampScan     = 200
)

// roomAccess loads what decides which of a room's events the caller may
// see. A user who was never in the room may read it only while it is
// world_readable (client-server spec §"History visibility").
func (s *Service) roomAccess(ctx context.Context, roomID, userID string) (roomVisibility, error) {
	hist, err := s.db.MembershipHistory(ctx, roomID, userID)
	if err != nil {
		return roomVisibility{}, err
	}
	vis := newRoomVisibility(userID, hist)
	if vis.everMember() {
		return vis, nil
	}
	hv, err := s.db.CurrentState(ctx, storage.StateQuery{RoomID: roomID, Types: []string{"m.room.history_visibility"}})
	if err != nil {
		return vis, err
	}
	for _, e := range hv {
		var c struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		_ = json.Unmarshal(e.JSON, &c)
		if c.Content.HistoryVisibility == "world_readable" {
			return vis, nil
		}
	}
	return vis, httputil.Forbidden("You are not allowed to read this room")
}

func parseLimit(v string, def, max int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, httputil.InvalidParam("limit must be a non-negative integer")
	}
	if n == 0 {
		return def, nil
	}
	return min(n, max), nil
}

func parseRoomEventFilter(v string) (*RoomEventFilter, error) {
	if v == "" {
		return nil, nil
	}
	if len(v) > maxFilterBytes {
		return nil, httputil.TooLarge("Filter is larger than %d bytes", maxFilterBytes)
	}
	var f RoomEventFilter
	if err := httputil.UnmarshalJSONObject([]byte(v), &f); err != nil {
		return nil, err
	}
	if f.Limit != nil && *f.Limit < 0 {
		return nil, httputil.BadJSON("limit must not be negative")
	}
	return &f, nil
}

type messagesResponse struct {
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	Chunk []json.RawMessage `json:"chunk"`
	State []json.RawMessage `json:"state,omitempty"`
}

// handleMessages serves GET /rooms/{roomId}/messages (client-server spec
// §"GET /_matrix/client/v3/rooms/{roomId}/messages").
func (s *Service) handleMessages(w http.ResponseWriter, r *http.Request) {
	resp, err := s.messages(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) messages(r *http.Request) (*messagesResponse, error) {
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx)
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return nil, httputil.InvalidParam("dir must be 'b' or 'f'")
	}
	limit, err := parseLimit(q.Get("limit"), defaultMessagesLimit, maxMessagesLimit)
	if err != nil {
		return nil, err
	}
	f, err := parseRoomEventFilter(q.Get("filter"))
	if err != nil {
		return nil, err
	}
	if f != nil && f.Limit != nil && *f.Limit > 0 {
		limit = min(limit, *f.Limit)
	}
	cur, err := s.currentToken(ctx)
	if err != nil {
		return nil, err
	}
	if c, ok, err := parseBackfillToken(q.Get("from")); ok || err != nil {
		if err != nil {
			return nil, err
		}
		return s.messagesInBackfill(ctx, roomID, dir, c, limit, f, cur.Events)
	}
	from := cur.Events
	if dir == "f" {
		from = 0
	}
	if v := q.Get("from"); v != "" {
		if from, err = parsePaginationToken(v); err != nil {
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
	vis, err := s.roomAccess(ctx, roomID, caller.UserID)
	if err != nil {
		return nil, err
	}

	var evs []storage.Event
	var more bool
	resp := &messagesResponse{Start: paginationToken(from), Chunk: []json.RawMessage{}}
	if dir == "b" {
		evs, more, err = s.scan(ctx, roomID, vis, max(to, 0), from, true, limit, f)
		if err == nil && more && len(evs) > 0 {
			resp.End = paginationToken(evs[len(evs)-1].Position - 1)
		}
		if err == nil && !more && to < 0 {
			evs, resp.End, err = s.continueIntoBackfill(ctx, roomID, vis, evs, limit, f)
		}
	} else {
		upto := cur.Events
		if to >= 0 {
			upto = min(upto, to)
		}
		evs, more, err = s.scan(ctx, roomID, vis, from, upto, false, limit, f)
		if err == nil && len(evs) > 0 {
			resp.End = paginationToken(evs[len(evs)-1].Position)
		}
	}
	if err != nil {
		return nil, err
	}
	fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
	if fm, err = s.withRelations(ctx, fm, map[string]roomVisibility{roomID: vis}, evs); err != nil {
		return nil, err
	}
	resp.Chunk = fm.formatAll(evs)
	if f != nil && f.LazyLoadMembers && len(evs) > 0 {
		members, err := s.membersOf(ctx, roomID, evs)
		if err != nil {
			return nil, err
		}
		resp.State = fm.formatAll(members)
	}
	return resp, nil
}

// membersOf returns the current member events of the senders of evs.
func (s *Service) membersOf(ctx context.Context, roomID string, evs []storage.Event) ([]storage.Event, error) {
	var senders []string
	for _, e := range evs {
		if !slices.Contains(senders, e.Sender) {
			senders = append(senders, e.Sender)
		}
	}
	return s.db.CurrentState(ctx, storage.StateQuery{RoomID: roomID, OnlyMembers: true, MemberKeys: senders})
}

type contextResponse struct {
	Start        string            `json:"start"`
	End          string            `json:"end"`
	Event        json.RawMessage   `json:"event"`
	EventsBefore []json.RawMessage `json:"events_before"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	State        []json.RawMessage `json:"state"`
}

// handleContext serves GET /rooms/{roomId}/context/{eventId} (client-server
// spec §"Event Context"): about limit/2 visible events either side.
func (s *Service) handleContext(w http.ResponseWriter, r *http.Request) {
	resp, err := s.eventContext(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) eventContext(r *http.Request) (*contextResponse, error) {
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx)
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	limit, err := parseLimit(r.URL.Query().Get("limit"), defaultMessagesLimit, maxContextLimit)
	if err != nil {
		return nil, err
	}
	f, err := parseRoomEventFilter(r.URL.Query().Get("filter"))
	if err != nil {
		return nil, err
	}
	vis, err := s.roomAccess(ctx, roomID, caller.UserID)
	if err != nil {
		return nil, err
	}
	ev, softFailed, err := s.db.EventByID(ctx, pathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if ev == nil || softFailed || ev.RoomID != roomID || !vis.canSee(ev) {
		return nil, httputil.NotFound("Event not found")
	}
	cur, err := s.currentToken(ctx)
	if err != nil {
		return nil, err
	}
	nBefore := limit / 2
	before, _, err := s.scan(ctx, roomID, vis, 0, ev.Position-1, true, nBefore, f)
	if err != nil {
		return nil, err
	}
	after, _, err := s.scan(ctx, roomID, vis, ev.Position, cur.Events, false, limit-nBefore, f)
	if err != nil {
		return nil, err
	}
	fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
	if fm, err = s.withRelations(ctx, fm, map[string]roomVisibility{roomID: vis}, slices.Concat([]storage.Event{*ev}, before, after)); err != nil {
		return nil, err
	}
	resp := &contextResponse{
		Start:        paginationToken(ev.Position - 1),
		End:          paginationToken(ev.Position),
		Event:        fm.format(ev),
		EventsBefore: fm.formatAll(before),
		EventsAfter:  fm.formatAll(after),
	}
	if len(before) > 0 {
		resp.Start = paginationToken(before[len(before)-1].Position - 1)
	}
	if len(after) > 0 {
		resp.End = paginationToken(after[len(after)-1].Position)
	}
	all := append(append([]storage.Event{*ev}, before...), after...)
	var state []storage.Event
	if f != nil && f.LazyLoadMembers {
		state, err = s.membersOf(ctx, roomID, all)
		if err == nil {
			var others []storage.Event
			others, err = s.db.CurrentState(ctx, storage.StateQuery{RoomID: roomID, MemberKeys: []string{}})
			state = append(others, state...)
		}
	} else {
		state, err = s.db.CurrentState(ctx, storage.StateQuery{RoomID: roomID})
	}
	if err != nil {
		return nil, err
	}
	resp.State = fm.formatAll(state)
	return resp, nil
}

// handleTimestampToEvent serves GET /v1/rooms/{roomId}/timestamp_to_event
// (client-server spec §"GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event"):
// the closest event the caller may see in the given direction.
func (s *Service) handleTimestampToEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx)
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		httputil.WriteError(w, r, httputil.InvalidParam("ts must be a timestamp in milliseconds"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		httputil.WriteError(w, r, httputil.InvalidParam("dir must be 'f' or 'b'"))
		return
	}
	vis, err := s.roomAccess(ctx, roomID, caller.UserID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evs, err := s.db.EventsByTimestamp(ctx, roomID, ts, dir == "f", maxTimestampScan)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	for i := range evs {
		if vis.canSee(&evs[i]) {
			httputil.WriteJSON(w, http.StatusOK, map[string]any{"event_id": evs[i].EventID, "origin_server_ts": evs[i].OriginServerTS})
			return
		}
	}
	httputil.WriteError(w, r, httputil.NotFound("No event found"))
}
