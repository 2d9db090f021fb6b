package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/roomserver/api"
)

const testServer = "test.local"

// harness is a roomserver on a database and an embedded bus.
type harness struct {
	t    testing.TB
	db   *sqlutil.DB
	bus  *bus.Bus
	cfg  *config.Config
	keys *signingkey.Set
	rs   *Service
}

func newHarness(t testing.TB, dbURL string) *harness {
	t.Helper()
	ctx := context.Background()
	db, err := sqlutil.Open(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir(), Prefix: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ServerName = testServer
	h := &harness{t: t, db: db, bus: b, cfg: cfg, keys: &signingkey.Set{Current: key}}
	h.open()
	return h
}

func (h *harness) open() {
	h.t.Helper()
	rs, err := Open(context.Background(), h.db, h.bus, h.cfg, h.keys)
	if err != nil {
		h.t.Fatal(err)
	}
	h.rs = rs
	h.t.Cleanup(rs.Close)
}

func user(local string) string { return "@" + local + ":" + testServer }

func strp(s string) *string { return &s }

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

var roomCounter atomic.Int64

// createRoom makes a room created by creator with the given join rule;
// extraPL adds users to the power levels.
func (h *harness) createRoom(version gomatrixserverlib.RoomVersion, creator, joinRule string, extraPL map[string]int) string {
	h.t.Helper()
	roomID := fmt.Sprintf("!r%d_%d:%s", time.Now().UnixNano(), roomCounter.Add(1), h.cfg.ServerName)
	users := map[string]int{creator: 100}
	for u, l := range extraPL {
		users[u] = l
	}
	createContent := map[string]any{"room_version": version}
	if version != gomatrixserverlib.RoomVersionV11 {
		createContent["creator"] = creator
	}
	_, err := h.rs.CreateRoom(context.Background(), &api.CreateRoomRequest{
		RoomID:      roomID,
		RoomVersion: version,
		Events: []api.EventTemplate{
			{Sender: creator, Type: "m.room.create", StateKey: strp(""), Content: mustJSON(createContent)},
			{Sender: creator, Type: "m.room.member", StateKey: strp(creator), Content: mustJSON(map[string]any{"membership": "join"})},
			{Sender: creator, Type: "m.room.power_levels", StateKey: strp(""), Content: mustJSON(map[string]any{"users": users})},
			{Sender: creator, Type: "m.room.join_rules", StateKey: strp(""), Content: mustJSON(map[string]any{"join_rule": joinRule})},
			{Sender: creator, Type: "m.room.history_visibility", StateKey: strp(""), Content: mustJSON(map[string]any{"history_visibility": "shared"})},
		},
	})
	if err != nil {
		h.t.Fatalf("create room: %v", err)
	}
	return roomID
}

func (h *harness) send(roomID, sender, evType string, stateKey *string, content any) (string, error) {
	res, err := h.rs.SendEvent(context.Background(), &api.SendEventRequest{
		RoomID: roomID,
		Event:  api.EventTemplate{Sender: sender, Type: evType, StateKey: stateKey, Content: mustJSON(content)},
	})
	if err != nil {
		return "", err
	}
	return res.EventID, nil
}

func (h *harness) mustSend(roomID, sender, evType string, stateKey *string, content any) string {
	h.t.Helper()
	id, err := h.send(roomID, sender, evType, stateKey, content)
	if err != nil {
		h.t.Fatalf("send %s from %s: %v", evType, sender, err)
	}
	return id
}

func (h *harness) join(roomID, userID string) {
	h.t.Helper()
	h.mustSend(roomID, userID, "m.room.member", strp(userID), map[string]any{"membership": "join"})
}

// outputCollector records the output stream.
type outputCollector struct {
	mu   sync.Mutex
	outs []api.OutputEvent
	sub  *bus.Subscription
}

func (h *harness) collect(durable string) *outputCollector {
	h.t.Helper()
	c := &outputCollector{}
	sub, err := h.bus.Subscribe(context.Background(), api.OutputStream, durable, api.OutputSubject, func(_ context.Context, m bus.Message) error {
		var o api.OutputEvent
		if err := json.Unmarshal(m.Data, &o); err != nil {
			return err
		}
		c.mu.Lock()
		c.outs = append(c.outs, o)
		c.mu.Unlock()
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	c.sub = sub
	h.t.Cleanup(sub.Stop)
	return c
}

// waitFor waits until the collector holds at least n messages.
func (c *outputCollector) waitFor(t testing.TB, n int) []api.OutputEvent {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c.mu.Lock()
		got := append([]api.OutputEvent(nil), c.outs...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d output messages, want %d", len(got), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
