package syncapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/syncapi/storage"
	"github.com/parley-chat/parley/userapi"
	uapi "github.com/parley-chat/parley/userapi/api"
)

const testServer = "test.local"

// env is a sync API with a real user API, an embedded bus and an HTTP
// front, fed with signed events published as the roomserver would.
type env struct {
	t     *testing.T
	svc   *Service
	users *userapi.Service
	bus   *bus.Bus
	srv   *httptest.Server
	key   ed25519.PrivateKey

	mu    sync.Mutex
	rooms map[string]*testRoom
}

func newEnv(t *testing.T, dialect string) *env {
	t.Helper()
	ctx := context.Background()
	cfg := config.Default()
	cfg.ServerName = testServer
	cfg.Accounts.BcryptCost = 4
	db, err := sqlutil.Open(testdb.URL(t, dialect))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	users, err := userapi.Open(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Open(ctx, db, b, cfg, users, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	r := chi.NewRouter()
	svc.Register(r)
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	_, key, _ := ed25519.GenerateKey(nil)
	return &env{t: t, svc: svc, users: users, bus: b, srv: srv, key: key, rooms: map[string]*testRoom{}}
}

// user registers an account and returns its user ID and access token.
func (e *env) user(localpart string) (string, string) {
	e.t.Helper()
	ctx := context.Background()
	id, err := e.users.CreateAccount(ctx, localpart, "", false)
	if err != nil {
		e.t.Fatal(err)
	}
	sess, err := e.users.CreateDevice(ctx, uapi.DeviceRequest{UserID: id, DeviceID: "DEV_" + localpart})
	if err != nil {
		e.t.Fatal(err)
	}
	return id, sess.AccessToken
}

// testRoom tracks what the roomserver would: room position and state.
type testRoom struct {
	id    string
	pos   int64
	depth int64
	state map[[2]string]string // (type, state_key) → event ID
	last  string
}

// event signs a new event and publishes it as an OutputEvent; it returns
// the event ID once the sync API has stored it.
func (e *env) event(roomID, sender, typ string, stateKey *string, content any, txn *rsapi.TransactionID) string {
	e.t.Helper()
	oe := e.output(roomID, sender, typ, stateKey, content, txn)
	e.publish(oe)
	e.waitStored(oe.EventID)
	return oe.EventID
}

func (e *env) output(roomID, sender, typ string, stateKey *string, content any, txn *rsapi.TransactionID) rsapi.OutputEvent {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	room := e.rooms[roomID]
	if room == nil {
		room = &testRoom{id: roomID, state: map[[2]string]string{}}
		e.rooms[roomID] = room
	}
	room.depth++
	prev := []string{}
	if room.last != "" {
		prev = []string{room.last}
	}
	c, _ := json.Marshal(content)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	eb := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents: prev, AuthEvents: []string{}, Depth: room.depth,
	})
	pdu, err := eb.Build(time.Now(), spec.ServerName(testServer), "ed25519:test", e.key)
	if err != nil {
		e.t.Fatal(err)
	}
	room.pos++
	room.last = pdu.EventID()
	oe := rsapi.OutputEvent{RoomID: roomID, RoomVersion: gomatrixserverlib.RoomVersionV10, Event: pdu.JSON(),
		EventID: pdu.EventID(), RoomPosition: room.pos, Sender: sender, TransactionID: txn}
	if stateKey != nil {
		k := [2]string{typ, *stateKey}
		if old, ok := room.state[k]; ok {
			oe.RemovesStateEventIDs = []string{old}
		}
		room.state[k] = pdu.EventID()
		oe.AddsStateEventIDs = []string{pdu.EventID()}
	}
	return oe
}

func (e *env) publish(oe rsapi.OutputEvent) {
	e.t.Helper()
	data, _ := json.Marshal(oe)
	// A distinct message ID per publish, so a deliberate redelivery is not
	// dropped by the bus's own duplicate window.
	if err := e.bus.Publish(context.Background(), rsapi.OutputSubject, data, fmt.Sprintf("%s/%d", oe.EventID, time.Now().UnixNano())); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) waitStored(eventID string) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ev, _, err := e.svc.db.EventByID(context.Background(), eventID)
		if err != nil {
			e.t.Fatal(err)
		}
		// Stored, and published to /sync once the caches have it.
		if ev != nil && e.svc.db.LatestPositions().Events >= ev.Position {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.t.Fatalf("event %s was not consumed", eventID)
}

func sk(s string) *string { return &s }

// createRoom makes a room with creator joined and the given visibility.
func (e *env) createRoom(roomID, creator, historyVisibility string) {
	e.event(roomID, creator, "m.room.create", sk(""), map[string]any{"room_version": "10"}, nil)
	e.event(roomID, creator, "m.room.member", sk(creator), map[string]any{"membership": "join"}, nil)
	e.event(roomID, creator, "m.room.power_levels", sk(""), map[string]any{"users": map[string]int{creator: 100}}, nil)
	e.event(roomID, creator, "m.room.join_rules", sk(""), map[string]any{"join_rule": "public"}, nil)
	e.event(roomID, creator, "m.room.history_visibility", sk(""), map[string]any{"history_visibility": historyVisibility}, nil)
}

func (e *env) join(roomID, userID string) string {
	return e.event(roomID, userID, "m.room.member", sk(userID), map[string]any{"membership": "join"}, nil)
}

func (e *env) message(roomID, sender, body string) string {
	return e.event(roomID, sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": body}, nil)
}

// do sends an HTTP request and decodes the JSON answer into out (if not
// nil), returning the status and the raw body.
func (e *env) do(method, path, token string, body any, out any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			b, _ := json.Marshal(body)
			rd = strings.NewReader(string(b))
		}
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, out); err != nil {
			e.t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
	return resp.StatusCode, raw
}

// syncResp is the part of a /sync answer the tests read.
type syncResp struct {
	NextBatch   string `json:"next_batch"`
	AccountData struct {
		Events []testEvent `json:"events"`
	} `json:"account_data"`
	ToDevice struct {
		Events []testEvent `json:"events"`
	} `json:"to_device"`
	Rooms struct {
		Join map[string]struct {
			Timeline struct {
				Events    []testEvent `json:"events"`
				Limited   bool        `json:"limited"`
				PrevBatch string      `json:"prev_batch"`
			} `json:"timeline"`
			State struct {
				Events []testEvent `json:"events"`
			} `json:"state"`
			Ephemeral struct {
				Events []testEvent `json:"events"`
			} `json:"ephemeral"`
			AccountData struct {
				Events []testEvent `json:"events"`
			} `json:"account_data"`
			Summary map[string]any `json:"summary"`
		} `json:"join"`
		Invite map[string]struct {
			InviteState struct {
				Events []testEvent `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Leave map[string]struct {
			Timeline struct {
				Events []testEvent `json:"events"`
			} `json:"timeline"`
		} `json:"leave"`
	} `json:"rooms"`
}

type testEvent struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Unsigned map[string]any  `json:"unsigned"`
}

func (e *env) sync(token, since, filter string, timeoutMS int) syncResp {
	e.t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if filter != "" {
		q.Set("filter", filter)
	}
	q.Set("timeout", fmt.Sprint(timeoutMS))
	var out syncResp
	status, raw := e.do("GET", "/_matrix/client/v3/sync?"+q.Encode(), token, nil, &out)
	if status != http.StatusOK {
		e.t.Fatalf("sync: %d %s", status, raw)
	}
	return out
}

func ids(evs []testEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}

// storedEvent reads an event straight from the sync API's tables.
func (e *env) storedEvent(id string) *storage.Event {
	ev, _, err := e.svc.db.EventByID(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return ev
}

func errcode(raw []byte) string {
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.Unmarshal(raw, &e)
	return e.Errcode
}
