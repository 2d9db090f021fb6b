package roomserver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

// Many state changes go through deltas and checkpoints; the state read
// back from the database after a restart, and at an older event, is exact.
func TestSnapshotsAcrossCheckpoints(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		alice := user("alice")
		roomID := h.createRoom("10", alice, "public", nil)
		var midEvent string
		for i := 0; i < 60; i++ {
			key := fmt.Sprintf("k%d", i%25)
			id := h.mustSend(roomID, alice, "org.example.state", strp(key), map[string]any{"i": i})
			if i == 30 {
				midEvent = id
			}
		}
		var maxChain, checkpoints int
		if err := h.db.QueryRowContext(ctx, `SELECT MAX(chain_len), SUM(CASE WHEN parent = 0 THEN 1 ELSE 0 END) FROM roomserver_state_snapshots`).Scan(&maxChain, &checkpoints); err != nil {
			t.Fatal(err)
		}
		if maxChain >= 16 || checkpoints < 3 {
			t.Fatalf("max chain %d, %d checkpoints: deltas should be cut by checkpoints every 16", maxChain, checkpoints)
		}
		before, err := h.rs.QueryCurrentState(ctx, roomID, nil)
		if err != nil {
			t.Fatal(err)
		}
		h.rs.Close()
		h.open()
		after, err := h.rs.QueryCurrentState(ctx, roomID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if ids(before) != ids(after) || len(after) != 5+25 {
			t.Fatalf("state after restart differs: %d vs %d events", len(before), len(after))
		}
		for _, e := range after {
			if e.Type() == "org.example.state" && *e.StateKey() == "k5" && string(e.Content()) != `{"i":55}` {
				t.Fatalf("k5 = %s, want the last write", e.Content())
			}
		}
		mid, err := h.rs.QueryStateAfterEvent(ctx, roomID, midEvent, []gomatrixserverlib.StateKeyTuple{{EventType: "org.example.state", StateKey: "k5"}, {EventType: "org.example.state", StateKey: "k6"}})
		if err != nil || len(mid) != 2 {
			t.Fatalf("state at event 30: %v %v", mid, err)
		}
		for _, e := range mid {
			want := map[string]string{"k5": `{"i":30}`, "k6": `{"i":6}`}[*e.StateKey()]
			if string(e.Content()) != want {
				t.Errorf("state after event 30: %s = %s, want %s", *e.StateKey(), e.Content(), want)
			}
		}
		// The reloaded room keeps working.
		h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "after restart"})
	})
}

func ids(evs []gomatrixserverlib.PDU) string {
	m := map[string]bool{}
	for _, e := range evs {
		m[e.EventID()] = true
	}
	return fmt.Sprint(m)
}

func TestAliases(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		alice, bob, carol := user("alice"), user("bob"), user("carol")
		roomID := h.createRoom("10", alice, "public", nil)
		h.join(roomID, bob)
		h.join(roomID, carol)
		alias := "#room:" + testServer
		if err := h.rs.SetRoomAlias(ctx, alias, "!missing:"+testServer, bob); !errors.Is(err, api.ErrRoomNotFound) {
			t.Fatalf("alias to unknown room: %v", err)
		}
		if err := h.rs.SetRoomAlias(ctx, alias, roomID, bob); err != nil {
			t.Fatal(err)
		}
		if err := h.rs.SetRoomAlias(ctx, alias, roomID, alice); !errors.Is(err, api.ErrAliasInUse) {
			t.Fatalf("duplicate alias: %v", err)
		}
		if got, err := h.rs.GetRoomIDForAlias(ctx, alias); err != nil || got != roomID {
			t.Fatalf("resolve: %s %v", got, err)
		}
		if got, err := h.rs.GetAliasesForRoom(ctx, roomID); err != nil || len(got) != 1 || got[0] != alias {
			t.Fatalf("aliases for room: %v %v", got, err)
		}
		var na *api.NotAllowedError
		if err := h.rs.RemoveRoomAlias(ctx, alias, carol); !errors.As(err, &na) {
			t.Fatalf("remove by a plain member: %v", err)
		}
		if err := h.rs.RemoveRoomAlias(ctx, alias, alice); err != nil {
			t.Fatalf("remove by the room admin: %v", err)
		}
		if _, err := h.rs.GetRoomIDForAlias(ctx, alias); !errors.Is(err, api.ErrAliasNotFound) {
			t.Fatalf("after removal: %v", err)
		}
		if err := h.rs.SetRoomAlias(ctx, alias, roomID, bob); err != nil {
			t.Fatal(err)
		}
		if err := h.rs.RemoveRoomAlias(ctx, alias, bob); err != nil {
			t.Fatalf("remove by its creator: %v", err)
		}
		if err := h.rs.RemoveRoomAlias(ctx, alias, bob); !errors.Is(err, api.ErrAliasNotFound) {
			t.Fatalf("remove twice: %v", err)
		}
	})
}
