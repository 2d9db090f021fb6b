package federation_test

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testserver"
)

// fakeRemote is a minimal homeserver over HTTPS: it publishes its key,
// answers /version, and records every transaction sent to it, refusing
// them with a 500 while down is set.
type fakeRemote struct {
	id   identity
	srv  *httptest.Server
	down atomic.Bool

	mu       sync.Mutex
	attempts int
	// delivered maps event ID to how many accepted transactions held it.
	delivered map[string]int
	// attempted maps event ID to how many transactions held it.
	attempted map[string]int
}

func startFakeRemote(t testing.TB, ca *testserver.CA) *fakeRemote {
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRemote{delivered: map[string]int{}, attempted: map[string]int{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.TLS = ca.TLSConfig(t, "127.0.0.1")
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	f.id = identity{name: spec.ServerName(f.srv.Listener.Addr().String()), key: key}
	return f
}

func (f *fakeRemote) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_matrix/key/v2/server":
		fields := gomatrixserverlib.ServerKeyFields{
			ServerName:   f.id.name,
			ValidUntilTS: spec.AsTimestamp(time.Now().Add(time.Hour)),
			VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
				gomatrixserverlib.KeyID(f.id.key.ID): {Key: spec.Base64Bytes(f.id.key.PrivateKey.Public().(ed25519.PublicKey))},
			},
		}
		raw, _ := json.Marshal(fields)
		signed, _ := gomatrixserverlib.SignJSON(string(f.id.name), gomatrixserverlib.KeyID(f.id.key.ID), f.id.key.PrivateKey, raw)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(signed)
	case r.URL.Path == "/_matrix/federation/v1/version":
		if f.down.Load() {
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, 502)
			return
		}
		_, _ = w.Write([]byte(`{"server":{"name":"fake","version":"1"}}`))
	case r.Method == "PUT" && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/"):
		var txn struct {
			Origin string            `json:"origin"`
			PDUs   []json.RawMessage `json:"pdus"`
		}
		_ = json.NewDecoder(r.Body).Decode(&txn)
		down := f.down.Load()
		f.mu.Lock()
		f.attempts++
		for _, p := range txn.PDUs {
			ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromTrustedJSON(p, false)
			if err != nil {
				continue
			}
			f.attempted[ev.EventID()]++
			if !down {
				f.delivered[ev.EventID()]++
			}
		}
		f.mu.Unlock()
		if down {
			http.Error(w, `{"errcode":"M_UNKNOWN"}`, 500)
			return
		}
		_, _ = w.Write([]byte(`{"pdus":{}}`))
	default:
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, 404)
	}
}

func (f *fakeRemote) counts(eventID string) (attempts, attempted, delivered int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts, f.attempted[eventID], f.delivered[eventID]
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// joinRemote makes the fake remote's user join a public room on a: it
// builds and signs the join event itself and pushes it with /send, the way
// a remote server does after make_join/send_join.
func joinRemote(t testing.TB, ca *testserver.CA, a *testserver.FederatedServer, f *fakeRemote, alice *mautrix.Client, roomID id.RoomID, prevEventID id.EventID) string {
	t.Helper()
	state, err := alice.State(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	authIDs := []string{}
	for _, typ := range []event.Type{event.StateCreate, event.StateJoinRules, event.StatePowerLevels} {
		authIDs = append(authIDs, state[typ][""].ID.String())
	}
	user := "@bob:" + string(f.id.name)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	builder := verImpl.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
		SenderID: user, RoomID: roomID.String(), Type: "m.room.member", StateKey: &user,
		PrevEvents: []string{prevEventID.String()}, AuthEvents: authIDs, Depth: 100,
		Content: []byte(`{"membership":"join"}`),
	})
	join, err := builder.Build(time.Now(), f.id.name, gomatrixserverlib.KeyID(f.id.key.ID), f.id.key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	txn := map[string]any{"origin": f.id.name, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{join.JSON()}}
	var first []byte
	for i := 0; i < 2; i++ { // the retry must get the same answer
		status, body := do(t, ca, signedRequest(t, f.id, spec.ServerName(a.ServerName), "PUT", "/_matrix/federation/v1/send/join1", txn))
		if status != 200 {
			t.Fatalf("send join: %d %s", status, body)
		}
		var resp struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		if r, ok := resp.PDUs[join.EventID()]; !ok || r.Error != "" {
			t.Fatalf("join not accepted: %s", body)
		}
		if i == 1 && string(body) != string(first) {
			t.Fatalf("retried transaction answered differently: %s vs %s", body, first)
		}
		first = body
	}
	return join.EventID()
}

// destinationFailures reads a's federation_destinations row for dest.
func destinationFailures(t *testing.T, a *testserver.FederatedServer, dest spec.ServerName) (int, time.Time) {
	t.Helper()
	db, err := sqlutil.Open("sqlite:" + filepath.Join(a.DataDir, "parley.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	var retryAt int64
	err = db.QueryRow(`SELECT failure_count, retry_at FROM federation_destinations WHERE server_name = $1`, string(dest)).Scan(&n, &retryAt)
	if err == sql.ErrNoRows {
		return 0, time.Time{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return n, time.UnixMilli(retryAt)
}

func TestOutboundQueueBackoffAndRestart(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	remote := startFakeRemote(t, ca)
	ctx := context.Background()

	alice := a.RegisterUser(t, "alice")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := alice.SendText(ctx, room.RoomID, "before the remote joined")
	if err != nil {
		t.Fatal(err)
	}
	joinRemote(t, ca, a, remote, alice, room.RoomID, first.EventID)

	// The directory query lists the remote among the room's servers once
	// the federation consumer has seen the join.
	var body []byte
	waitFor(t, "the remote in the directory answer", 10*time.Second, func() bool {
		var status int
		status, body = do(t, ca, signedRequest(t, remote.id, spec.ServerName(a.ServerName), "GET",
			"/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape("#lobby:"+a.ServerName), nil))
		return status == 200 && strings.Contains(string(body), room.RoomID.String()) && strings.Contains(string(body), string(remote.id.name))
	})

	// Delivered while the remote is up.
	hello, err := alice.SendText(ctx, room.RoomID, "hello remote")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery of the first message", 15*time.Second, func() bool {
		_, _, d := remote.counts(hello.EventID.String())
		return d == 1
	})

	// The remote goes down: attempts back off instead of hammering it.
	remote.down.Store(true)
	queued, err := alice.SendText(ctx, room.RoomID, "sent while the remote is down")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a first failed attempt", 15*time.Second, func() bool {
		_, tried, _ := remote.counts(queued.EventID.String())
		return tried >= 1
	})
	time.Sleep(4 * time.Second)
	_, tried, _ := remote.counts(queued.EventID.String())
	// 1s, 2s, 4s backoff: at most the first try and two retries in ~4s.
	if tried < 2 || tried > 4 {
		t.Fatalf("%d attempts in ~4s of the remote being down, want 2-4 (backing off)", tried)
	}
	if n, retryAt := destinationFailures(t, a, remote.id.name); n < 2 || !retryAt.After(time.Now().Add(-time.Second)) {
		t.Fatalf("destination state: %d failures, retry at %v", n, retryAt)
	}

	// A crash with the event still queued loses nothing: after a restart
	// (and the remote coming back) it is delivered, once.
	a.Kill()
	remote.down.Store(false)
	a.Restart()
	waitFor(t, "delivery after the restart", 30*time.Second, func() bool {
		_, _, d := remote.counts(queued.EventID.String())
		return d >= 1
	})
	time.Sleep(500 * time.Millisecond)
	if _, _, d := remote.counts(queued.EventID.String()); d != 1 {
		t.Fatalf("queued event delivered %d times", d)
	}
	if _, _, d := remote.counts(hello.EventID.String()); d != 1 {
		t.Fatalf("first event delivered %d times after restart", d)
	}
	if n, _ := destinationFailures(t, a, remote.id.name); n != 0 {
		t.Fatalf("failures not reset after delivery: %d", n)
	}
}
