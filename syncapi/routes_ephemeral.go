package syncapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// requireJoined answers 403 unless the user is joined to the room.
func (s *Service) requireJoined(ctx context.Context, roomID, userID string) error {
	m, err := s.db.CurrentMembership(ctx, roomID, userID)
	if err != nil {
		return err
	}
	if m != "join" {
		return httputil.Forbidden("You are not joined to this room")
	}
	return nil
}

// handleTyping serves PUT /rooms/{roomId}/typing/{userId} (client-server
// spec §"Typing Notifications").
func (s *Service) handleTyping(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller, err := ownUser(r)
		if err != nil {
			return err
		}
		roomID, err := roomIDParam(r)
		if err != nil {
			return err
		}
		var body struct {
			Typing  *bool  `json:"typing"`
			Timeout *int64 `json:"timeout"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		if body.Typing == nil {
			return httputil.BadJSON("typing is required")
		}
		if err := s.requireJoined(r.Context(), roomID, caller.UserID); err != nil {
			return err
		}
		timeout := 30 * time.Second
		if body.Timeout != nil {
			timeout = time.Duration(max(*body.Timeout, 0)) * time.Millisecond
			if *body.Timeout > maxTypingTimeout.Milliseconds() {
				timeout = maxTypingTimeout
			}
		}
		s.typing.Set(roomID, caller.UserID, *body.Typing, timeout)
		s.publishTyping(r.Context(), roomID, caller.UserID, *body.Typing, timeout)
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// receiptTypes are the receipt types a client may send; m.fully_read moves
// the read marker instead (client-server spec §"Receipts").
var receiptTypes = map[string]bool{"m.read": true, "m.read.private": true, "m.fully_read": true}

// handleReceipt serves POST /rooms/{roomId}/receipt/{receiptType}/{eventId}.
func (s *Service) handleReceipt(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller := httputil.CallerFrom(r.Context())
		roomID, err := roomIDParam(r)
		if err != nil {
			return err
		}
		rtype := pathParam(r, "receiptType")
		if !receiptTypes[rtype] {
			return httputil.InvalidParam("Unknown receipt type %q", rtype)
		}
		var body struct {
			ThreadID string `json:"thread_id"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		if body.ThreadID != "" && body.ThreadID != "main" && body.ThreadID[0] != '$' {
			return httputil.InvalidParam("thread_id must be 'main' or an event ID")
		}
		if rtype == "m.fully_read" && body.ThreadID != "" {
			return httputil.InvalidParam("m.fully_read cannot be threaded")
		}
		eventID := pathParam(r, "eventId")
		if err := s.checkMarkerEvent(r.Context(), roomID, caller.UserID, eventID); err != nil {
			return err
		}
		if rtype == "m.fully_read" {
			return s.setFullyRead(r.Context(), caller.UserID, roomID, eventID)
		}
		return s.putReceipt(r.Context(), storage.Receipt{RoomID: roomID, Type: rtype, UserID: caller.UserID, ThreadID: body.ThreadID, EventID: eventID})
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handleReadMarkers serves POST /rooms/{roomId}/read_markers (client-server
// spec §"Fully read markers").
func (s *Service) handleReadMarkers(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller := httputil.CallerFrom(r.Context())
		roomID, err := roomIDParam(r)
		if err != nil {
			return err
		}
		var body struct {
			FullyRead   string `json:"m.fully_read"`
			Read        string `json:"m.read"`
			ReadPrivate string `json:"m.read.private"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		for _, id := range []string{body.FullyRead, body.Read, body.ReadPrivate} {
			if id != "" {
				if err := s.checkMarkerEvent(r.Context(), roomID, caller.UserID, id); err != nil {
					return err
				}
			}
		}
		if body.FullyRead != "" {
			if err := s.setFullyRead(r.Context(), caller.UserID, roomID, body.FullyRead); err != nil {
				return err
			}
		}
		if body.Read != "" {
			if err := s.putReceipt(r.Context(), storage.Receipt{RoomID: roomID, Type: "m.read", UserID: caller.UserID, EventID: body.Read}); err != nil {
				return err
			}
		}
		if body.ReadPrivate != "" {
			return s.putReceipt(r.Context(), storage.Receipt{RoomID: roomID, Type: "m.read.private", UserID: caller.UserID, EventID: body.ReadPrivate})
		}
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// checkMarkerEvent requires the caller to be joined and the event to be a
// visible event of that room.
func (s *Service) checkMarkerEvent(ctx context.Context, roomID, userID, eventID string) error {
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	ev, softFailed, err := s.db.EventByID(ctx, eventID)
	if err != nil {
		return err
	}
	if ev == nil || softFailed || ev.RoomID != roomID {
		return httputil.NotFound("Event not found in this room")
	}
	return nil
}

func (s *Service) putReceipt(ctx context.Context, rc storage.Receipt) error {
	rc.TS = time.Now().UnixMilli()
	if _, err := s.db.PutReceipt(ctx, rc); err != nil {
		return err
	}
	if err := s.publishReceipt(ctx, rc); err != nil {
		return err
	}
	if err := s.recountAfterReceipt(ctx, rc); err != nil {
		return err
	}
	if rc.Type == "m.read.private" {
		s.notifier.WakeUsers(rc.UserID)
	} else {
		s.notifier.WakeRoom(rc.RoomID)
	}
	return nil
}

func (s *Service) setFullyRead(ctx context.Context, userID, roomID, eventID string) error {
	content, _ := json.Marshal(map[string]string{"event_id": eventID})
	return s.putAccountData(ctx, userID, roomID, "m.fully_read", content)
}

func (s *Service) putAccountData(ctx context.Context, userID, roomID, dataType string, content []byte) error {
	if _, err := s.db.PutAccountData(ctx, userID, roomID, dataType, content); err != nil {
		return err
	}
	s.notifier.WakeUsers(userID)
	return nil
}
