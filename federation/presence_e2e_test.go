package federation_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

type presenceSeen struct {
	Presence  string `json:"presence"`
	StatusMsg string `json:"status_msg"`
}

// presenceSyncer collects every m.presence event one client's /sync gives.
type presenceSyncer struct {
	t     *testing.T
	cli   *mautrix.Client
	since string
	seen  map[id.UserID][]presenceSeen
}

func (s *presenceSyncer) waitFor(user id.UserID, want presenceSeen) {
	s.t.Helper()
	if !s.waitUpTo(user, want, 30*time.Second) {
		s.t.Fatalf("%s: presence %+v of %s not seen within 30s; seen %+v", s.cli.UserID, want, user, s.seen[user])
	}
}

func (s *presenceSyncer) waitUpTo(user id.UserID, want presenceSeen, d time.Duration) bool {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if l := s.seen[user]; len(l) > 0 && l[len(l)-1] == want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		resp, err := s.cli.SyncRequest(context.Background(), 500, s.since, "", false, "")
		if err != nil {
			s.t.Fatalf("%s: sync: %v", s.cli.UserID, err)
		}
		s.since = resp.NextBatch
		for _, ev := range resp.Presence.Events {
			var c presenceSeen
			_ = json.Unmarshal(ev.Content.VeryRaw, &c)
			s.seen[ev.Sender] = append(s.seen[ev.Sender], c)
		}
	}
}

// TestPresenceOverFederation: presence of users sharing a room crosses
// servers both ways; a server speaking for another server's users, or for
// its own users who share no room, is ignored.
func TestPresenceOverFederation(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	c := testserver.StartFederated(t, ca, testserver.Options{})
	ctx := context.Background()
	alice := a.RegisterUser(t, "alice")
	bob := b.RegisterUser(t, "bob")
	cID := identityOf(t, c)

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	waitSameState(t, room.RoomID, alice, bob)
	aliceSync := &presenceSyncer{t: t, cli: alice, seen: map[id.UserID][]presenceSeen{}}
	bobSync := &presenceSyncer{t: t, cli: bob, seen: map[id.UserID][]presenceSeen{}}

	// B applies the room's membership to its federation tables a moment
	// after the join; presence arriving before that is dropped (nothing
	// shared yet), so the first change is repeated until it gets through.
	for try := 0; ; try++ {
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "in a meeting"}); err != nil {
			t.Fatal(err)
		}
		if bobSync.waitUpTo(alice.UserID, presenceSeen{"unavailable", "in a meeting"}, 2*time.Second) {
			break
		}
		if try == 10 {
			t.Fatalf("bob never saw alice's presence; seen %+v", bobSync.seen[alice.UserID])
		}
	}
	got, err := bob.GetPresence(ctx, alice.UserID)
	if err != nil || got.Presence != event.PresenceUnavailable || got.StatusMsg != "in a meeting" {
		t.Fatalf("bob's GET presence of alice: %+v, %v", got, err)
	}

	// C speaks for alice, and for its own user who shares no room: both
	// are dropped (the transaction itself is accepted).
	sendTxn(t, ca, cID, spec.ServerName(b.ServerName), "forged-presence",
		edu(t, "m.presence", map[string]any{"push": []map[string]any{
			{"user_id": alice.UserID, "presence": "offline", "status_msg": "forged", "last_active_ago": 0},
			{"user_id": "@carol:" + c.ServerName, "presence": "online", "last_active_ago": 0},
		}}))

	if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "around"}); err != nil {
		t.Fatal(err)
	}
	aliceSync.waitFor(bob.UserID, presenceSeen{"online", "around"})
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "back"}); err != nil {
		t.Fatal(err)
	}
	bobSync.waitFor(alice.UserID, presenceSeen{"online", "back"})
	for _, p := range bobSync.seen[alice.UserID] {
		if p.StatusMsg == "forged" {
			t.Fatalf("a presence C sent for alice reached bob: %+v", bobSync.seen[alice.UserID])
		}
	}
	if l := bobSync.seen[id.UserID("@carol:"+c.ServerName)]; len(l) > 0 {
		t.Fatalf("presence of carol, who shares no room, reached bob: %+v", l)
	}
}
