package federation

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: server-server §"Backfilling and retrieving missing events",
// §"Retrieving events".

// Bounds of the history endpoints.
const (
	maxBackfill      = 100
	maxMissingEvents = 100
	maxRequestedIDs  = 50
)

// checkRoomAccess lets origin read a room's history here if the ACL does
// not deny it and it has a member in the room, or the room is
// world_readable, or it is shared and origin had members in it before.
// Events returned by /event, /backfill and /get_missing_events are then
// filtered one by one (filterForServer); state answers are not.
func (s *Service) checkRoomAccess(ctx context.Context, roomID string, origin spec.ServerName) error {
	if _, err := spec.NewRoomID(roomID); err != nil {
		return httputil.InvalidParam("Invalid room ID %q", roomID)
	}
	if err := s.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	info, err := s.rooms.QueryRoomInfo(ctx, roomID)
	if errors.Is(err, rsapi.ErrRoomNotFound) || (err == nil && info.Stub) {
		return httputil.NotFound("Room %s is not known here", roomID)
	}
	if err != nil {
		return err
	}
	in, err := s.rooms.QueryServerInRoom(ctx, roomID, string(origin))
	if err != nil {
		return err
	}
	if in.JoinedMembers > 0 {
		return nil
	}
	evs, err := s.rooms.QueryCurrentState(ctx, roomID, []gomatrixserverlib.StateKeyTuple{{EventType: spec.MRoomHistoryVisibility}})
	if err != nil {
		return err
	}
	visibility := gomatrixserverlib.HistoryVisibilityShared
	for _, e := range evs {
		if v, err := e.HistoryVisibility(); err == nil {
			visibility = v
		}
	}
	if visibility == gomatrixserverlib.HistoryVisibilityWorldReadable ||
		(visibility == gomatrixserverlib.HistoryVisibilityShared && in.WasJoined) {
		return nil
	}
	return httputil.Forbidden("Server %s is not in room %s", origin, roomID)
}

// eventIDParam reads the event_id query parameter.
func eventIDParam(r *http.Request) (string, error) {
	id := r.URL.Query().Get("event_id")
	if id == "" {
		return "", httputil.MissingParam("event_id is required")
	}
	return id, nil
}

// stateAt returns the state before an event and the auth chain of that state.
func (s *Service) stateAt(r *http.Request) (state, chain []gomatrixserverlib.PDU, err error) {
	ctx := r.Context()
	roomID := chi.URLParam(r, "roomID")
	if err := s.checkRoomAccess(ctx, roomID, OriginFrom(ctx)); err != nil {
		return nil, nil, err
	}
	eventID, err := eventIDParam(r)
	if err != nil {
		return nil, nil, err
	}
	state, err = s.rooms.QueryStateBeforeEvent(ctx, roomID, eventID)
	if errors.Is(err, rsapi.ErrEventNotFound) {
		return nil, nil, httputil.NotFound("Event %s is not known in %s", eventID, roomID)
	}
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, 0, len(state))
	for _, e := range state {
		ids = append(ids, e.EventID())
	}
	chain, err = s.rooms.QueryAuthChain(ctx, roomID, ids)
	return state, chain, err
}

// handleGetState serves GET /_matrix/federation/v1/state/{roomId}.
func (s *Service) handleGetState(w http.ResponseWriter, r *http.Request) {
	state, chain, err := s.stateAt(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"pdus": eventJSONs(state), "auth_chain": eventJSONs(chain)})
}

// handleGetStateIDs serves GET /_matrix/federation/v1/state_ids/{roomId}.
func (s *Service) handleGetStateIDs(w http.ResponseWriter, r *http.Request) {
	state, chain, err := s.stateAt(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)})
}

// handleGetEvent serves GET /_matrix/federation/v1/event/{eventId}.
func (s *Service) handleGetEvent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	eventID := chi.URLParam(r, "eventID")
	evs, err := s.rooms.QueryEventsByID(ctx, []string{eventID})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(evs) == 0 {
		httputil.WriteError(w, r, httputil.NotFound("Event %s is not known here", eventID))
		return
	}
	roomID := evs[0].RoomID().String()
	if err := s.checkRoomAccess(ctx, roomID, OriginFrom(ctx)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if evs, err = s.filterForServer(ctx, roomID, OriginFrom(ctx), evs); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.writeTransaction(w, evs)
}

// handleGetEventAuth serves GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}.
func (s *Service) handleGetEventAuth(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID, eventID := chi.URLParam(r, "roomID"), chi.URLParam(r, "eventID")
	if err := s.checkRoomAccess(ctx, roomID, OriginFrom(ctx)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	evs, err := s.rooms.QueryEventsByID(ctx, []string{eventID})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(evs) == 0 || evs[0].RoomID().String() != roomID {
		httputil.WriteError(w, r, httputil.NotFound("Event %s is not known in %s", eventID, roomID))
		return
	}
	chain, err := s.rooms.QueryAuthChain(ctx, roomID, []string{eventID})
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": eventJSONs(chain)})
}

// handleBackfill serves GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=.
func (s *Service) handleBackfill(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := chi.URLParam(r, "roomID")
	if err := s.checkRoomAccess(ctx, roomID, OriginFrom(ctx)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		httputil.WriteError(w, r, httputil.MissingParam("v is required"))
		return
	}
	if len(from) > maxRequestedIDs {
		httputil.WriteError(w, r, httputil.InvalidParam("At most %d event IDs may be given", maxRequestedIDs))
		return
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 {
		httputil.WriteError(w, r, httputil.InvalidParam("limit must be a positive integer"))
		return
	}
	evs, err := s.rooms.QueryBackfill(ctx, roomID, from, min(limit, maxBackfill))
	if err == nil {
		evs, err = s.filterForServer(ctx, roomID, OriginFrom(ctx), evs)
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	s.writeTransaction(w, evs)
}

// handleGetMissingEvents serves POST /_matrix/federation/v1/get_missing_events/{roomId}.
func (s *Service) handleGetMissingEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	roomID := chi.URLParam(r, "roomID")
	if err := s.checkRoomAccess(ctx, roomID, OriginFrom(ctx)); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body := struct {
		Limit          *int     `json:"limit"`
		MinDepth       int64    `json:"min_depth"`
		EarliestEvents []string `json:"earliest_events"`
		LatestEvents   []string `json:"latest_events"`
	}{}
	if err := httputil.DecodeJSON(r, MaxRequestBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if len(body.LatestEvents) == 0 {
		httputil.WriteError(w, r, httputil.BadJSON("latest_events is required"))
		return
	}
	if len(body.LatestEvents) > maxRequestedIDs || len(body.EarliestEvents) > maxRequestedIDs {
		httputil.WriteError(w, r, httputil.BadJSON("At most %d event IDs may be given in each list", maxRequestedIDs))
		return
	}
	limit := 10 // the spec's default
	if body.Limit != nil {
		limit = min(max(*body.Limit, 1), maxMissingEvents)
	}
	evs, err := s.rooms.QueryMissingEvents(ctx, roomID, body.EarliestEvents, body.LatestEvents, limit, body.MinDepth)
	if err == nil {
		evs, err = s.filterForServer(ctx, roomID, OriginFrom(ctx), evs)
	}
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]any{"events": eventJSONs(evs)})
}

// filterForServer replaces the events origin may not see (by the history
// visibility at each) with their redacted form, which keeps the DAG whole
// for it without their content.
func (s *Service) filterForServer(ctx context.Context, roomID string, origin spec.ServerName, evs []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	visible, err := s.rooms.QueryServerVisibility(ctx, roomID, string(origin), eventIDs(evs))
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.PDU, 0, len(evs))
	for _, ev := range evs {
		if visible[ev.EventID()] || ev.Redacted() {
			out = append(out, ev)
			continue
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(ev.Version())
		if err != nil {
			return nil, err
		}
		redacted, err := verImpl.RedactEventJSON(ev.JSON())
		if err != nil {
			return nil, err
		}
		copyEv, err := verImpl.NewEventFromTrustedJSONWithEventID(ev.EventID(), redacted, true)
		if err != nil {
			return nil, err
		}
		out = append(out, copyEv)
	}
	return out, nil
}

// writeTransaction answers with the spec's Transaction shape.
func (s *Service) writeTransaction(w http.ResponseWriter, evs []gomatrixserverlib.PDU) {
	httputil.WriteJSON(w, http.StatusOK, map[string]any{
		"origin":           s.serverName,
		"origin_server_ts": time.Now().UnixMilli(),
		"pdus":             eventJSONs(evs),
	})
}

func eventIDs(evs []gomatrixserverlib.PDU) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.EventID())
	}
	return out
}
