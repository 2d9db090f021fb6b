package clientapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Spec: client-server §"Reporting content" (POST
// /rooms/{roomId}/report/{eventId}), and Synapse's admin API to read the
// reports (GET /_synapse/admin/v1/event_reports), which admin tools use.

const (
	// maxReportReason bounds a report's reason, in bytes.
	maxReportReason = 4096
	// defaultReportsLimit and maxReportsLimit size a page of reports.
	defaultReportsLimit = 100
	maxReportsLimit     = 1000
)

// POST /rooms/{roomId}/report/{eventId}
func (s *Server) handleReportEvent(w http.ResponseWriter, r *http.Request) {
	roomID, err := roomIDParam(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	eventID, err := pathParam(r, "eventId")
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if !strings.HasPrefix(eventID, "$") || len(eventID) > 255 {
		httputil.WriteError(w, r, httputil.InvalidParam("Invalid event ID %q", eventID))
		return
	}
	var body struct {
		Reason *string `json:"reason"`
		Score  *int    `json:"score"`
	}
	if err := httputil.DecodeJSON(r, s.cfg.Client.MaxBodyBytes, &body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body.Score != nil && (*body.Score < -100 || *body.Score > 0) {
		httputil.WriteError(w, r, httputil.InvalidParam("score must be between -100 and 0"))
		return
	}
	reason := ""
	if body.Reason != nil {
		reason = *body.Reason
	}
	if len(reason) > maxReportReason {
		httputil.WriteError(w, r, httputil.InvalidParam("reason is longer than %d bytes", maxReportReason))
		return
	}
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx).UserID
	if err := s.checkReportable(ctx, roomID, eventID, caller); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if err := s.rooms.ReportEvent(ctx, &rsapi.EventReport{
		RoomID: roomID, EventID: eventID, Reporter: caller, Reason: reason, Score: body.Score,
	}); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// checkReportable answers 404 unless the caller is joined to the room
// (required since spec v1.8) and may see the event; the answer is the
// same whichever is missing, so it does not reveal events.
func (s *Server) checkReportable(ctx context.Context, roomID, eventID, userID string) error {
	notFound := httputil.NotFound("The event was not found or you are not joined to the room")
	m, err := s.rooms.QueryMembership(ctx, roomID, userID)
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	if m.Membership != visibility.Join {
		return notFound
	}
	evs, err := s.rooms.QueryEventsByID(ctx, []string{eventID})
	if err != nil {
		return err
	}
	if len(evs) == 0 || evs[0].RoomID().String() != roomID {
		return notFound
	}
	reader, err := visibility.LoadReader(ctx, s.rooms, roomID, userID)
	if err != nil {
		return err
	}
	ok, err := visibility.CanSeeEvent(ctx, s.rooms, reader, evs[0])
	if err != nil {
		return err
	}
	if !ok {
		return notFound
	}
	return nil
}

type eventReportJSON struct {
	ID         int64  `json:"id"`
	ReceivedTS int64  `json:"received_ts"`
	RoomID     string `json:"room_id"`
	EventID    string `json:"event_id"`
	UserID     string `json:"user_id"`
	Reason     string `json:"reason"`
	Score      *int   `json:"score"`
}

// GET /_synapse/admin/v1/event_reports: server admins only. from is the
// ID of the last report of the previous page (next_token).
func (s *Server) handleListEventReports(w http.ResponseWriter, r *http.Request) {
	if !httputil.CallerFrom(r.Context()).Admin {
		httputil.WriteError(w, r, httputil.Forbidden("You are not a server admin"))
		return
	}
	q := r.URL.Query()
	limit := defaultReportsLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			httputil.WriteError(w, r, httputil.InvalidParam("limit must be a positive integer"))
			return
		}
		limit = min(n, maxReportsLimit)
	}
	var from int64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			httputil.WriteError(w, r, httputil.InvalidParam("from must be a non-negative integer"))
			return
		}
		from = n
	}
	reports, err := s.rooms.QueryEventReports(r.Context(), from, limit)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	resp := struct {
		EventReports []eventReportJSON `json:"event_reports"`
		NextToken    *int64            `json:"next_token,omitempty"`
	}{EventReports: make([]eventReportJSON, len(reports))}
	for i, rep := range reports {
		resp.EventReports[i] = eventReportJSON{
			ID: rep.ID, ReceivedTS: rep.ReceivedAt.UnixMilli(), RoomID: rep.RoomID, EventID: rep.EventID,
			UserID: rep.Reporter, Reason: rep.Reason, Score: rep.Score,
		}
	}
	if len(reports) == limit {
		last := reports[len(reports)-1].ID
		resp.NextToken = &last
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}
