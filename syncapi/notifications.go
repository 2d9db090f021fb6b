package syncapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Bounds of GET /notifications.
const (
	defaultNotificationsLimit = 20
	maxNotificationsLimit     = 100
)

type notificationJSON struct {
	Actions    json.RawMessage `json:"actions"`
	Event      json.RawMessage `json:"event"`
	ProfileTag string          `json:"profile_tag,omitempty"`
	Read       bool            `json:"read"`
	RoomID     string          `json:"room_id"`
	TS         int64           `json:"ts"`
}

// handleNotifications serves GET /notifications (client-server spec
// §"Listing Notifications"): the caller's notified events, newest first,
// each with the actions that fired and whether a read receipt covers it.
func (s *Service) handleNotifications(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller := httputil.CallerFrom(r.Context())
		q := r.URL.Query()
		limit := defaultNotificationsLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return httputil.InvalidParam("limit must be a positive integer")
			}
			limit = min(n, maxNotificationsLimit)
		}
		var from int64
		if v := q.Get("from"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return httputil.InvalidParam("Bad from token")
			}
			from = n
		}
		ns, err := s.db.Notifications(r.Context(), caller.UserID, from, limit, q.Get("only") == "highlight")
		if err != nil {
			return err
		}
		fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
		reads := map[string]map[string]int64{}
		out := make([]notificationJSON, 0, len(ns))
		for _, n := range ns {
			ev, _, err := s.db.EventByID(r.Context(), n.EventID)
			if err != nil {
				return err
			}
			if ev == nil {
				continue
			}
			read, ok := reads[n.RoomID]
			if !ok {
				if read, err = s.db.ReadPositions(r.Context(), caller.UserID, n.RoomID); err != nil {
					return err
				}
				reads[n.RoomID] = read
			}
			out = append(out, notificationJSON{Actions: n.Actions, Event: fm.format(ev), Read: storage.IsRead(read, n.ThreadID, n.Position),
				RoomID: n.RoomID, TS: n.TS})
		}
		resp := map[string]any{"notifications": out}
		if len(ns) == limit {
			resp["next_token"] = strconv.FormatInt(ns[len(ns)-1].ID, 10)
		}
		httputil.WriteJSON(w, http.StatusOK, resp)
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
	}
}
