// Package clientevent turns stored room events into the shape clients see
// (client-server spec §"Room Event Format": ClientEvent), for every
// component that answers clients with events.
package clientevent

import (
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib"
)

// Event is a ClientEvent. Federation-only fields (auth_events,
// prev_events, depth, hashes, signatures) are left out.
type Event struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Unsigned       json.RawMessage `json:"unsigned,omitempty"`
	// Redacts is top-level in room versions 1-10 and copied there for
	// clients from content in v11 (spec: m.room.redaction).
	Redacts string `json:"redacts,omitempty"`
}

// New formats one event. Senders are reported as they appear in the event;
// in every room version Parley creates that is the user ID.
func New(ev gomatrixserverlib.PDU) Event {
	out := Event{
		Content:        json.RawMessage(ev.Content()),
		EventID:        ev.EventID(),
		OriginServerTS: int64(ev.OriginServerTS()),
		RoomID:         ev.RoomID().String(),
		Sender:         string(ev.SenderID()),
		StateKey:       ev.StateKey(),
		Type:           ev.Type(),
		Redacts:        ev.Redacts(),
	}
	if len(out.Content) == 0 {
		out.Content = json.RawMessage("{}")
	}
	out.Unsigned = clientUnsigned(ev.Unsigned())
	if out.Redacts == "" && ev.Type() == "m.room.redaction" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil {
			out.Redacts = c.Redacts
		}
	}
	return out
}

// unsignedForClients are the unsigned keys clients may see. Others, such
// as whatever a remote server put there, stay on the server.
var unsignedForClients = []string{"prev_content", "replaces_state", "redacted_because", "invite_room_state", "knock_room_state"}

func clientUnsigned(raw []byte) json.RawMessage {
	var all map[string]json.RawMessage
	if len(raw) == 0 || json.Unmarshal(raw, &all) != nil {
		return nil
	}
	kept := map[string]json.RawMessage{}
	for _, k := range unsignedForClients {
		if v, ok := all[k]; ok {
			kept[k] = v
		}
	}
	if len(kept) == 0 {
		return nil
	}
	b, _ := json.Marshal(kept)
	return b
}

// List formats events in order.
func List(evs []gomatrixserverlib.PDU) []Event {
	out := make([]Event, 0, len(evs))
	for _, ev := range evs {
		out = append(out, New(ev))
	}
	return out
}
