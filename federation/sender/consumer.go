package sender

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/federation/storage"
	"github.com/parley-chat/parley/internal/bus"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// ConsumerName is the durable consumer of the roomserver output stream.
const ConsumerName = "federation_sender"

// ConsumeRoomOutput follows the roomserver output stream: it keeps the
// federation's own list of joined servers per room from the state changes,
// and queues every event sent by a local user for each other server joined
// to the room before or after the event.
func (s *Sender) ConsumeRoomOutput(ctx context.Context, b *bus.Bus, rooms rsapi.RoomserverAPI) error {
	if err := b.EnsureStream(ctx, rsapi.OutputStream, rsapi.OutputSubject); err != nil {
		return err
	}
	sub, err := b.Subscribe(ctx, rsapi.OutputStream, ConsumerName, rsapi.OutputSubject, func(ctx context.Context, msg bus.Message) error {
		var out rsapi.OutputEvent
		if err := json.Unmarshal(msg.Data, &out); err != nil {
			logrus.WithError(err).WithField("seq", msg.Sequence).Error("federation sender: undecodable roomserver output; skipped")
			return nil
		}
		return s.handleOutput(ctx, &out, rooms)
	})
	if err != nil {
		return err
	}
	s.sub = sub
	return nil
}

// eventFields are the parts of an event the consumer reads.
type eventFields struct {
	Type     string  `json:"type"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Membership string `json:"membership"`
	} `json:"content"`
}

// joinOf returns the joined member an event makes, if it is a join.
func joinOf(eventID string, raw []byte) (storage.JoinedMember, bool) {
	var f eventFields
	if json.Unmarshal(raw, &f) != nil || f.Type != spec.MRoomMember || f.StateKey == nil || f.Content.Membership != spec.Join {
		return storage.JoinedMember{}, false
	}
	user, err := spec.NewUserID(*f.StateKey, true)
	if err != nil {
		return storage.JoinedMember{}, false
	}
	return storage.JoinedMember{EventID: eventID, UserID: user.String(), ServerName: string(user.Domain())}, true
}

func (s *Sender) handleOutput(ctx context.Context, out *rsapi.OutputEvent, rooms rsapi.RoomserverAPI) error {
	u := storage.RoomUpdate{
		RoomID:          out.RoomID,
		Position:        out.RoomPosition,
		RemovedEventIDs: out.RemovesStateEventIDs,
		LocalServer:     string(s.origin),
	}
	var others []string
	for _, id := range out.AddsStateEventIDs {
		if id != out.EventID {
			others = append(others, id)
			continue
		}
		if m, ok := joinOf(id, out.Event); ok {
			u.AddedJoins = append(u.AddedJoins, m)
		}
	}
	// State that changed to events other than this one (a state
	// resolution after a fork) is loaded from the roomserver.
	if len(others) > 0 {
		pdus, err := rooms.QueryEventsByID(ctx, others)
		if err != nil {
			return fmt.Errorf("load state events of %s: %w", out.RoomID, err)
		}
		for _, p := range pdus {
			if m, ok := joinOf(p.EventID(), p.JSON()); ok {
				u.AddedJoins = append(u.AddedJoins, m)
			}
		}
	}
	if !out.SoftFailed && isLocalUser(out.Sender, s.origin) {
		u.PDU = out.Event
	}
	dests, applied, err := s.db.ApplyRoomUpdate(ctx, u)
	if err != nil {
		return err
	}
	if applied {
		s.Notify(dests)
	}
	return nil
}

func isLocalUser(userID string, origin spec.ServerName) bool {
	u, err := spec.NewUserID(userID, true)
	return err == nil && u.Domain() == origin
}
