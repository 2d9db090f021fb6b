package roomserver

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/testdb"
)

func TestRedactionPerRoomVersion(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		alice := user("alice")
		for _, tc := range []struct {
			version gomatrixserverlib.RoomVersion
			// content keys of the redacted power levels event
			plKeys []string
		}{
			// Room v1 keeps the classic power-level keys but not "invite";
			// v11 keeps "invite" too (room versions §v11 "Redactions").
			{"1", []string{"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}},
			{"11", []string{"ban", "events", "events_default", "invite", "kick", "redact", "state_default", "users", "users_default"}},
		} {
			t.Run("v"+string(tc.version), func(t *testing.T) {
				roomID := h.createRoom(tc.version, alice, "public", nil)
				msg := h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "secret"})
				pl := h.mustSend(roomID, alice, "m.room.power_levels", strp(""), map[string]any{
					"users": map[string]int{alice: 100}, "invite": 0, "ban": 50, "kick": 50, "redact": 50,
					"events_default": 0, "state_default": 50, "users_default": 0, "events": map[string]int{}, "notifications": map[string]int{"room": 50},
				})
				for _, target := range []string{msg, pl} {
					h.mustSend(roomID, alice, "m.room.redaction", nil, map[string]any{"redacts": target, "reason": "test"})
				}
				evs, err := h.rs.QueryEventsByID(ctx, []string{msg, pl})
				if err != nil || len(evs) != 2 {
					t.Fatalf("query: %d %v", len(evs), err)
				}
				for _, ev := range evs {
					if !ev.Redacted() {
						t.Errorf("%s not marked redacted", ev.Type())
					}
				}
				if string(evs[0].Content()) != "{}" {
					t.Errorf("redacted message content %s, want {}", evs[0].Content())
				}
				var content map[string]json.RawMessage
				if err := json.Unmarshal(evs[1].Content(), &content); err != nil {
					t.Fatal(err)
				}
				if len(content) != len(tc.plKeys) {
					t.Errorf("redacted power levels keep %v, want %v", keys(content), tc.plKeys)
				}
				for _, k := range tc.plKeys {
					if _, ok := content[k]; !ok {
						t.Errorf("redacted power levels lost %q: %s", k, evs[1].Content())
					}
				}
				// The room still authorises events with the redacted power levels.
				h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "after"})
			})
		}
	})
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
