package roomserver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

// publishPage is how many stored events one catch-up query reads.
const publishPage = 100

// publish puts a room's committed output on the bus in room order: first
// anything older still missing (read back from the database), then outs.
// On failure the room is queued for a retry, which resumes at the first
// event not known to be published; the message ID (the event ID) makes a
// repeated publish a no-op on the bus.
func (s *Service) publish(ctx context.Context, rs *roomState, outs []*api.OutputEvent) {
	upTo := rs.room.LastPosition
	if len(outs) > 0 {
		upTo = outs[0].RoomPosition - 1
	}
	if err := s.catchUp(ctx, rs, upTo); err != nil {
		logrus.WithError(err).WithField("room_id", rs.room.RoomID).Warn("roomserver: publishing stored events failed; will retry")
		s.markUnpublished(rs.room.RoomID)
		return
	}
	for _, o := range outs {
		if o.RoomPosition <= rs.published {
			continue
		}
		if err := s.publishOne(ctx, o); err != nil {
			logrus.WithError(err).WithField("room_id", rs.room.RoomID).Warn("roomserver: publishing event failed; will retry")
			s.markUnpublished(rs.room.RoomID)
			return
		}
		rs.published = o.RoomPosition
	}
}

func (s *Service) publishOne(ctx context.Context, o *api.OutputEvent) error {
	if hook := s.testHookPublish.Load(); hook != nil {
		if err := (*hook)(*o); err != nil {
			return err
		}
	}
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	return s.bus.Publish(ctx, api.OutputSubject, data, o.EventID)
}

// catchUp publishes stored events after rs.published up to position upTo.
func (s *Service) catchUp(ctx context.Context, rs *roomState, upTo int64) error {
	for rs.published < upTo {
		rows, err := s.db.SelectEventsAfterPosition(ctx, s.db.DB, rs.room.NID, rs.published, publishPage)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return fmt.Errorf("events after position %d are missing", rs.published)
		}
		prevCurrent := int64(0)
		if rs.published > 0 {
			prev, err := s.db.SelectEventAtPosition(ctx, s.db.DB, rs.room.NID, rs.published)
			if err != nil {
				return err
			}
			if prev == nil {
				return fmt.Errorf("event at position %d is missing", rs.published)
			}
			prevCurrent = prev.CurrentState
		}
		for _, row := range rows {
			if row.Position > upTo {
				return nil
			}
			o, err := s.outputFromRow(ctx, rs, row, prevCurrent)
			if err != nil {
				return err
			}
			if err := s.publishOne(ctx, o); err != nil {
				return err
			}
			rs.published = row.Position
			prevCurrent = row.CurrentState
		}
	}
	return nil
}

// outputFromRow rebuilds a stored event's output message; its current-state
// change is the difference between the current state recorded with the
// event before it and with it.
func (s *Service) outputFromRow(ctx context.Context, rs *roomState, row *storage.Event, prevCurrent int64) (*api.OutputEvent, error) {
	o := &api.OutputEvent{
		RoomID:       rs.room.RoomID,
		RoomVersion:  rs.verImpl.Version(),
		Event:        row.JSON,
		EventID:      row.EventID,
		RoomPosition: row.Position,
		SoftFailed:   row.SoftFailed || row.Outlier,
		Outlier:      row.Outlier,
		Sender:       row.Sender,
	}
	if row.TxnID != "" {
		o.TransactionID = &api.TransactionID{DeviceID: row.TxnDevice, TxnID: row.TxnID}
	}
	if row.CurrentState == prevCurrent {
		return o, nil
	}
	from, _, err := loadSnapshot(ctx, s.db, s.db.DB, rs.room.NID, prevCurrent)
	if err != nil {
		return nil, err
	}
	to, _, err := loadSnapshot(ctx, s.db, s.db.DB, rs.room.NID, row.CurrentState)
	if err != nil {
		return nil, err
	}
	diff := diffStates(from, to)
	var nids []int64
	for _, d := range diff {
		if old, ok := from[tuple{EventType: d.Type, StateKey: d.StateKey}]; ok {
			nids = append(nids, old)
		}
		if d.EventNID != 0 {
			nids = append(nids, d.EventNID)
		}
	}
	b := &batch{s: s, q: s.db.DB, rs: rs, room: rs.room}
	evs, err := b.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	for _, d := range diff {
		if old, ok := from[tuple{EventType: d.Type, StateKey: d.StateKey}]; ok && evs[old] != nil {
			o.RemovesStateEventIDs = append(o.RemovesStateEventIDs, evs[old].id)
		}
		if e := evs[d.EventNID]; d.EventNID != 0 && e != nil {
			o.AddsStateEventIDs = append(o.AddsStateEventIDs, e.id)
		}
	}
	return o, nil
}
