package syncapi

import (
	"encoding/json"
	"time"

	"github.com/parley-chat/parley/internal/clientevent"
	"github.com/parley-chat/parley/syncapi/storage"
)

// pduFields are the parts of a stored event's JSON the client format needs.
type pduFields struct {
	Content        json.RawMessage `json:"content"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Redacts        string          `json:"redacts"`
	Sender         string          `json:"sender"`
	Unsigned       struct {
		InviteRoomState json.RawMessage `json:"invite_room_state"`
		KnockRoomState  json.RawMessage `json:"knock_room_state"`
	} `json:"unsigned"`
}

// eventFormatter renders stored events for one requesting device.
type eventFormatter struct {
	userID, deviceID string
	federation       bool
	now              time.Time
	// relations holds unsigned."m.relations" per event ID (relations.go).
	relations map[string]json.RawMessage
}

func (f eventFormatter) format(ev *storage.Event) json.RawMessage {
	if f.federation {
		return json.RawMessage(ev.JSON)
	}
	var p pduFields
	_ = json.Unmarshal(ev.JSON, &p)
	ce := clientevent.Event{
		Content:        p.Content,
		EventID:        ev.EventID,
		OriginServerTS: p.OriginServerTS,
		RoomID:         ev.RoomID,
		Sender:         ev.Sender,
		StateKey:       ev.StateKey,
		Type:           ev.Type,
		Redacts:        p.Redacts,
	}
	if len(ce.Content) == 0 {
		ce.Content = json.RawMessage("{}")
	}
	if ce.Redacts == "" && ev.Type == "m.room.redaction" {
		var c struct {
			Redacts string `json:"redacts"`
		}
		_ = json.Unmarshal(ce.Content, &c)
		ce.Redacts = c.Redacts
	}
	unsigned := map[string]any{}
	if age := f.now.UnixMilli() - p.OriginServerTS; age >= 0 {
		unsigned["age"] = age
	}
	if ev.PrevContent != nil {
		unsigned["prev_content"] = json.RawMessage(ev.PrevContent)
	}
	if ev.RedactedBecause != nil {
		because := &storage.Event{RoomID: ev.RoomID, JSON: ev.RedactedBecause, Type: "m.room.redaction"}
		var bp pduFields
		_ = json.Unmarshal(ev.RedactedBecause, &bp)
		because.Sender = bp.Sender
		var idOnly struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(ev.RedactedBecause, &idOnly)
		because.EventID = idOnly.EventID
		unsigned["redacted_because"] = f.format(because)
	}
	// Spec: client-server §"Transaction identifiers": only the device that
	// sent the event learns its transaction ID.
	if ev.TxnID != "" && ev.Sender == f.userID && ev.TxnDeviceID == f.deviceID {
		unsigned["transaction_id"] = ev.TxnID
	}
	if rel, ok := f.relations[ev.EventID]; ok {
		unsigned["m.relations"] = rel
	}
	if len(unsigned) > 0 {
		ce.Unsigned, _ = json.Marshal(unsigned)
	}
	b, _ := json.Marshal(ce)
	return b
}

func (f eventFormatter) formatAll(evs []storage.Event) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i := range evs {
		out[i] = f.format(&evs[i])
	}
	return out
}

// strippedEvent is a stripped state event (client-server spec §"Stripped
// state").
type strippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

func stripped(ev *storage.Event) json.RawMessage {
	var p pduFields
	_ = json.Unmarshal(ev.JSON, &p)
	sk := ""
	if ev.StateKey != nil {
		sk = *ev.StateKey
	}
	if len(p.Content) == 0 {
		p.Content = json.RawMessage("{}")
	}
	b, _ := json.Marshal(strippedEvent{Content: p.Content, Sender: ev.Sender, StateKey: sk, Type: ev.Type})
	return b
}
