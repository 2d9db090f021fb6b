package clientevent

import (
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestNew(t *testing.T) {
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	eventJSON := `{"type":"m.room.redaction","room_id":"!r:x","sender":"@a:x","origin_server_ts":5,` +
		`"content":{"reason":"spam"},"redacts":"$target","depth":3,"prev_events":[],"auth_events":[],` +
		`"unsigned":{"prev_content":{"a":1},"secret":"server-only"}}`
	ev, err := verImpl.NewEventFromTrustedJSON([]byte(eventJSON), false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(New(ev))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(got, &m)
	if m["event_id"] != ev.EventID() || m["room_id"] != "!r:x" || m["sender"] != "@a:x" || m["redacts"] != "$target" ||
		m["origin_server_ts"] != float64(5) || m["type"] != "m.room.redaction" {
		t.Fatalf("client event = %s", got)
	}
	for _, k := range []string{"depth", "prev_events", "auth_events", "hashes", "signatures", "state_key"} {
		if _, ok := m[k]; ok {
			t.Errorf("client event has %s: %s", k, got)
		}
	}
	unsigned, _ := m["unsigned"].(map[string]any)
	if unsigned["prev_content"] == nil || unsigned["secret"] != nil {
		t.Errorf("unsigned = %v", unsigned)
	}
}
