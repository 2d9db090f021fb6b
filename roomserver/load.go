package roomserver

import (
	"context"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/roomserver/storage"
)

// toMeta parses a stored event.
func toMeta(row *storage.Event, verImpl gomatrixserverlib.IRoomVersion) (*eventMeta, error) {
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(row.EventID, row.JSON, row.Redacted)
	if err != nil {
		return nil, fmt.Errorf("parse stored event %s: %w", row.EventID, err)
	}
	return &eventMeta{
		nid: row.NID, roomNID: row.RoomNID, id: row.EventID, depth: row.Depth, position: row.Position,
		stateBefore: row.StateBefore, stateAfter: row.StateAfter, rejected: row.Rejected, softFailed: row.SoftFailed,
		outlier: row.Outlier, pdu: pdu,
	}, nil
}

// eventsByID returns the batch room's events among ids, from this batch,
// the cache or the database; events of other rooms are left out.
func (b *batch) eventsByID(ctx context.Context, ids []string) (map[string]*eventMeta, error) {
	out := make(map[string]*eventMeta, len(ids))
	var missing []string
	for _, id := range ids {
		if e := b.newByID[id]; e != nil {
			out[id] = e
		} else if e := b.s.events.getID(id); e != nil && e.roomNID == b.room.NID {
			out[id] = e
		} else if _, dup := out[id]; !dup {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := b.s.db.SelectEventsByID(ctx, b.q, missing)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		if row.RoomNID != b.room.NID {
			continue
		}
		e, err := toMeta(row, b.rs.verImpl)
		if err != nil {
			return nil, err
		}
		b.s.events.put(e)
		out[e.id] = e
	}
	return out, nil
}

// eventsByNID is eventsByID by NID.
func (b *batch) eventsByNID(ctx context.Context, nids []int64) (map[int64]*eventMeta, error) {
	out := make(map[int64]*eventMeta, len(nids))
	var missing []int64
	for _, n := range nids {
		if e := b.newByNID[n]; e != nil {
			out[n] = e
		} else if e := b.s.events.getNID(n); e != nil && e.roomNID == b.room.NID {
			out[n] = e
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := b.s.db.SelectEventsByNID(ctx, b.q, missing)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		if row.RoomNID != b.room.NID {
			continue
		}
		e, err := toMeta(row, b.rs.verImpl)
		if err != nil {
			return nil, err
		}
		b.s.events.put(e)
		out[e.nid] = e
	}
	return out, nil
}
