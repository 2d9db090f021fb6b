package syncapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
)

// maxSyncTimeout bounds a long-poll; clients re-poll after it.
const maxSyncTimeout = 5 * time.Minute

// maxFilterBytes bounds a stored or inline filter.
const maxFilterBytes = 64 << 10

// handleSync serves GET /sync (client-server spec §"Syncing").
func (s *Service) handleSync(w http.ResponseWriter, r *http.Request) {
	caller := httputil.CallerFrom(r.Context())
	req, timeout, err := s.parseSyncRequest(r, caller)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	defer s.presence.syncing(caller.UserID, r.URL.Query().Get("set_presence"))()
	resp, err := s.sync(r.Context(), req, timeout)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away; nobody to answer
		}
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) parseSyncRequest(r *http.Request, caller httputil.Caller) (*syncRequest, time.Duration, error) {
	q := r.URL.Query()
	req := &syncRequest{userID: caller.UserID, deviceID: caller.DeviceID}
	if v := q.Get("since"); v != "" {
		tok, err := ParseStreamToken(v)
		if err != nil {
			return nil, 0, httputil.InvalidParam("Invalid since token")
		}
		req.since = &tok
	}
	var timeout time.Duration
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, 0, httputil.InvalidParam("timeout must be an integer number of milliseconds")
		}
		timeout = time.Duration(min(max(ms, 0), maxSyncTimeout.Milliseconds())) * time.Millisecond
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return nil, 0, httputil.InvalidParam("full_state must be true or false")
	}
	switch q.Get("set_presence") {
	case "", "online", "offline", "unavailable":
	default:
		return nil, 0, httputil.InvalidParam("set_presence must be online, offline or unavailable")
	}
	f, err := s.loadFilter(r.Context(), caller.UserID, q.Get("filter"))
	if err != nil {
		return nil, 0, err
	}
	req.filter = f
	return req, timeout, nil
}

// loadFilter resolves the filter parameter: inline JSON or a filter ID.
func (s *Service) loadFilter(ctx context.Context, userID, param string) (*Filter, error) {
	if param == "" {
		return nil, nil
	}
	if len(param) > maxFilterBytes {
		return nil, httputil.TooLarge("Filter is larger than %d bytes", maxFilterBytes)
	}
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		return parseFilter([]byte(param))
	}
	// A stored filter never changes, so its parsed form is cached.
	return s.caches.filters.get(ctx, filterKey{userID, param}, func(ctx context.Context) (*Filter, error) {
		body, err := s.db.GetFilter(ctx, userID, param)
		if err != nil {
			return nil, err
		}
		if body == nil {
			return nil, httputil.InvalidParam("No filter %q for this user", param)
		}
		return parseFilter(body)
	})
}

// sync answers at once when there is something to send (or for an initial
// or full-state sync); otherwise it waits until the notifier wakes this
// user or the timeout passes. The listener is registered before the
// current positions are read, so an event committed in between still
// wakes it.
func (s *Service) sync(ctx context.Context, req *syncRequest, timeout time.Duration) (*syncResponse, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		wake, stop := s.notifier.Listen(req.userID)
		cur, _ := s.currentToken(ctx)
		resp, err := s.buildSync(ctx, req, cur)
		if err != nil {
			stop()
			return nil, err
		}
		if req.since == nil || req.fullState || timeout <= 0 || !resp.empty() {
			stop()
			return resp, nil
		}
		select {
		case <-wake:
			stop()
		case <-timer.C:
			stop()
			return resp, nil
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		}
	}
}

// handlePostFilter serves POST /user/{userId}/filter.
func (s *Service) handlePostFilter(w http.ResponseWriter, r *http.Request) {
	caller, err := ownUser(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body, err := httputil.ReadBody(r, maxFilterBytes)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if _, err := parseFilter(body); err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	id, err := s.db.PutFilter(r.Context(), caller.UserID, body)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": id})
}

// handleGetFilter serves GET /user/{userId}/filter/{filterId}.
func (s *Service) handleGetFilter(w http.ResponseWriter, r *http.Request) {
	caller, err := ownUser(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	body, err := s.db.GetFilter(r.Context(), caller.UserID, pathParam(r, "filterId"))
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	if body == nil {
		httputil.WriteError(w, r, httputil.NotFound("No such filter"))
		return
	}
	f, err := parseFilter(body)
	if err != nil {
		httputil.WriteError(w, r, errors.New("stored filter no longer parses"))
		return
	}
	httputil.WriteJSON(w, http.StatusOK, f)
}
