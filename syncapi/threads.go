package syncapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Bounds of GET /threads.
const (
	defaultThreadsLimit = 20
	maxThreadsLimit     = 100
)

type threadsResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

// handleThreads serves GET /v1/rooms/{roomId}/threads (client-server spec
// §"Querying threads in a room"): thread roots the user may see, newest
// activity first, each with its bundled m.thread aggregation.
func (s *Service) handleThreads(w http.ResponseWriter, r *http.Request) {
	resp, err := s.threads(r)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, resp)
}

func (s *Service) threads(r *http.Request) (*threadsResponse, error) {
	ctx := r.Context()
	caller := httputil.CallerFrom(ctx)
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	tq := storage.ThreadsQuery{RoomID: roomID}
	switch q.Get("include") {
	case "", "all":
	case "participated":
		tq.Participant = caller.UserID
	default:
		return nil, httputil.InvalidParam("include must be 'all' or 'participated'")
	}
	limit := defaultThreadsLimit
	if v := q.Get("limit"); v != "" {
		// Spec: "Must be an integer greater than zero".
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return nil, httputil.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxThreadsLimit)
	}
	cur, err := s.currentToken(ctx)
	if err != nil {
		return nil, err
	}
	tq.Before = cur.Events
	if v := q.Get("from"); v != "" {
		if tq.Before, err = parsePaginationToken(v); err != nil {
			return nil, httputil.InvalidParam("Unknown pagination token")
		}
	}
	vis, err := s.roomAccess(ctx, roomID, caller.UserID)
	if err != nil {
		return nil, err
	}

	// Page through threads until limit roots the user may see are found;
	// the rows read are bounded as in scan.
	want := limit + 1
	batch := max(2*want, 50)
	var roots []storage.ThreadRoot
	more := false
	for scanned := 0; ; {
		tq.Limit = batch
		rows, err := s.db.Threads(ctx, tq)
		if err != nil {
			return nil, err
		}
		for i := range rows {
			if vis.canSee(&rows[i].Event) {
				roots = append(roots, rows[i])
			}
		}
		scanned += len(rows)
		if len(roots) >= want {
			roots, more = roots[:limit], true
			break
		}
		if len(rows) < batch {
			break
		}
		if scanned >= maxScanRows {
			more = len(roots) > 0
			break
		}
		tq.Before = rows[len(rows)-1].LatestPosition - 1
	}

	resp := &threadsResponse{Chunk: []json.RawMessage{}}
	if more {
		resp.NextBatch = paginationToken(roots[len(roots)-1].LatestPosition - 1)
	}
	evs := make([]storage.Event, len(roots))
	for i := range roots {
		evs[i] = roots[i].Event
	}
	fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
	if fm, err = s.withRelations(ctx, fm, map[string]roomVisibility{roomID: vis}, evs); err != nil {
		return nil, err
	}
	resp.Chunk = fm.formatAll(evs)
	return resp, nil
}
