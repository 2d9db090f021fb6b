package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// syncer follows one client's /sync stream.
type syncer struct {
	t        *testing.T
	cli      *mautrix.Client
	since    string
	timeline map[id.EventID]*event.Event
	invited  map[id.RoomID]bool
	knocked  map[id.RoomID]bool
	left     map[id.RoomID]bool
}

func newSyncer(t *testing.T, cli *mautrix.Client) *syncer {
	return &syncer{t: t, cli: cli, timeline: map[id.EventID]*event.Event{}, invited: map[id.RoomID]bool{}, knocked: map[id.RoomID]bool{}, left: map[id.RoomID]bool{}}
}

// waitFor syncs until cond holds (or fails the test after 30s).
func (s *syncer) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			var seen []string
			for id, ev := range s.timeline {
				seen = append(seen, fmt.Sprintf("%s %s %s %v", id, ev.Type.Type, ev.Sender, ev.Content.Raw))
			}
			s.t.Fatalf("%s: %s not seen through /sync within 30s; seen:\n%s", s.cli.UserID, what, strings.Join(seen, "\n"))
		}
		resp, err := s.cli.SyncRequest(context.Background(), 500, s.since, "", false, "")
		if err != nil {
			s.t.Fatalf("%s: sync: %v", s.cli.UserID, err)
		}
		s.since = resp.NextBatch
		for roomID, r := range resp.Rooms.Join {
			for _, ev := range r.Timeline.Events {
				ev.RoomID = roomID
				s.timeline[ev.ID] = ev
			}
		}
		for roomID := range resp.Rooms.Invite {
			s.invited[roomID] = true
		}
		for roomID := range resp.Rooms.Knock {
			s.knocked[roomID] = true
		}
		for roomID, r := range resp.Rooms.Leave {
			s.left[roomID] = true
			for _, ev := range r.Timeline.Events {
				ev.RoomID = roomID
				s.timeline[ev.ID] = ev
			}
		}
	}
}

func (s *syncer) sees(evID id.EventID) {
	s.waitFor("event "+evID.String(), func() bool { return s.timeline[evID] != nil })
}

// stateIDs is a room's current state over the client API, as
// "type|state_key" → event ID.
func stateIDs(t *testing.T, cli *mautrix.Client, roomID id.RoomID) map[string]string {
	t.Helper()
	st, err := cli.State(context.Background(), roomID)
	if err != nil {
		t.Fatalf("%s: state of %s: %v", cli.UserID, roomID, err)
	}
	out := map[string]string{}
	for typ, byKey := range st {
		for key, ev := range byKey {
			out[typ.Type+"|"+key] = ev.ID.String()
		}
	}
	return out
}

func sameState(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func describe(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, "\n")
}

// waitSameState waits until every client sees the same current state.
func waitSameState(t *testing.T, roomID id.RoomID, clis ...*mautrix.Client) map[string]string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		first := stateIDs(t, clis[0], roomID)
		same := true
		var other map[string]string
		for _, c := range clis[1:] {
			if other = stateIDs(t, c, roomID); !sameState(first, other) {
				same = false
				break
			}
		}
		if same {
			return first
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers disagree on the state of %s:\n%s\n--- vs ---\n%s", roomID, describe(first), describe(other))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustSend(t *testing.T, cli *mautrix.Client, roomID id.RoomID, text string) id.EventID {
	t.Helper()
	resp, err := cli.SendText(context.Background(), roomID, text)
	if err != nil {
		t.Fatalf("%s: send: %v", cli.UserID, err)
	}
	return resp.EventID
}

func mustState(t *testing.T, cli *mautrix.Client, roomID id.RoomID, typ event.Type, key string, content any) id.EventID {
	t.Helper()
	resp, err := cli.SendStateEvent(context.Background(), roomID, typ, key, content)
	if err != nil {
		t.Fatalf("%s: send %s: %v", cli.UserID, typ.Type, err)
	}
	return resp.EventID
}

func httpStatus(err error) int {
	var herr mautrix.HTTPError
	if e, ok := err.(mautrix.HTTPError); ok {
		herr = e
	} else if he, ok := err.(*mautrix.HTTPError); ok {
		herr = *he
	}
	if herr.Response != nil {
		return herr.Response.StatusCode
	}
	return 0
}

// TestFederatedMembershipAndHistory runs three Parleys, each with its own
// name, key and certificate, and drives them through their client APIs.
func TestFederatedMembershipAndHistory(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	c := testserver.StartFederated(t, ca, testserver.Options{})
	ctx := context.Background()
	aName, bName := spec.ServerName(a.ServerName), spec.ServerName(b.ServerName)
	bID, cID := identityOf(t, b), identityOf(t, c)

	alice := a.RegisterUser(t, "alice")
	bob := b.RegisterUser(t, "bob")
	dave := b.RegisterUser(t, "dave")
	carol := c.RegisterUser(t, "carol")
	erin := c.RegisterUser(t, "erin")
	aliceSync, bobSync, carolSync := newSyncer(t, alice), newSyncer(t, bob), newSyncer(t, carol)
	daveSync, erinSync := newSyncer(t, dave), newSyncer(t, erin)

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "room"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := room.RoomID
	early := mustSend(t, alice, roomID, "before anyone else joined")

	// B joins by room ID through A; C by A's alias.
	if _, err := bob.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}}); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	joined, err := carol.JoinRoom(ctx, "#room:"+a.ServerName, nil)
	if err != nil {
		t.Fatalf("carol joins by alias: %v", err)
	}
	if joined.RoomID != roomID {
		t.Fatalf("alias resolved to %s, want %s", joined.RoomID, roomID)
	}

	// Once every server has seen every join (so each sends to the others),
	// messages flow every way and arrive through /sync.
	waitSameState(t, roomID, alice, bob, carol)
	m1 := mustSend(t, alice, roomID, "hello from A")
	m2 := mustSend(t, bob, roomID, "hello from B")
	m3 := mustSend(t, carol, roomID, "hello from C")
	for _, s := range []*syncer{aliceSync, bobSync, carolSync} {
		for _, ev := range []id.EventID{m1, m2, m3} {
			s.sees(ev)
		}
	}

	// A state change is seen everywhere.
	topic := mustState(t, alice, roomID, event.StateTopic, "", map[string]string{"topic": "federated"})
	bobSync.sees(topic)
	carolSync.sees(topic)
	st := waitSameState(t, roomID, alice, bob, carol)
	if st["m.room.topic|"] != topic.String() {
		t.Fatalf("topic in state is %s, want %s", st["m.room.topic|"], topic)
	}

	t.Run("invite to a room B is not in, accepted", func(t *testing.T) {
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		// C is not in this room: it may not read its state.
		status, body := do(t, ca, signedRequest(t, cID, aName, "GET",
			"/_matrix/federation/v1/state_ids/"+url.PathEscape(private.RoomID.String())+"?event_id="+url.QueryEscape(m1.String()), nil))
		if status != http.StatusForbidden {
			t.Fatalf("state_ids of a room C is not in: %d %s", status, body)
		}
		if _, err := alice.InviteUser(ctx, private.RoomID, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
			t.Fatalf("invite dave: %v", err)
		}
		daveSync.waitFor("the invite", func() bool { return daveSync.invited[private.RoomID] })
		if _, err := dave.JoinRoomByID(ctx, private.RoomID); err != nil {
			t.Fatalf("dave accepts: %v", err)
		}
		hi := mustSend(t, alice, private.RoomID, "welcome dave")
		daveSync.sees(hi)
		waitSameState(t, private.RoomID, alice, dave)

		// An invite to C, rejected: the leave goes through A.
		if _, err := alice.InviteUser(ctx, private.RoomID, &mautrix.ReqInviteUser{UserID: erin.UserID}); err != nil {
			t.Fatalf("invite erin: %v", err)
		}
		erinSync.waitFor("the invite", func() bool { return erinSync.invited[private.RoomID] })
		if _, err := erin.LeaveRoom(ctx, private.RoomID); err != nil {
			t.Fatalf("erin rejects: %v", err)
		}
		waitFor(t, "erin's rejection at A", 20*time.Second, func() bool {
			var content event.MemberEventContent
			err := alice.StateEvent(ctx, private.RoomID, event.StateMember, erin.UserID.String(), &content)
			return err == nil && content.Membership == event.MembershipLeave
		})
	})

	t.Run("knock from B, let in by invite", func(t *testing.T) {
		knockRoom, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
			Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dave.KnockRoom(ctx, knockRoom.RoomID.String(), &mautrix.ReqKnockRoom{Via: []string{a.ServerName}, Reason: "let me in"}); err != nil {
			t.Fatalf("dave knocks: %v", err)
		}
		daveSync.waitFor("the knock", func() bool { return daveSync.knocked[knockRoom.RoomID] })
		var content event.MemberEventContent
		if err := alice.StateEvent(ctx, knockRoom.RoomID, event.StateMember, dave.UserID.String(), &content); err != nil || content.Membership != event.MembershipKnock {
			t.Fatalf("dave's membership at A: %+v %v", content, err)
		}
		if _, err := alice.InviteUser(ctx, knockRoom.RoomID, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
			t.Fatalf("invite after the knock: %v", err)
		}
		daveSync.waitFor("the invite", func() bool { return daveSync.invited[knockRoom.RoomID] })
		if _, err := dave.JoinRoomByID(ctx, knockRoom.RoomID); err != nil {
			t.Fatalf("dave joins: %v", err)
		}
		waitSameState(t, knockRoom.RoomID, alice, dave)
	})

	t.Run("C down, A and B go on, C catches up", func(t *testing.T) {
		c.Stop()
		pl := mustState(t, alice, roomID, event.StatePowerLevels, "", map[string]any{
			"users": map[string]int{alice.UserID.String(): 100, bob.UserID.String(): 50},
		})
		ban := mustState(t, alice, roomID, event.StateMember, "@mallory:"+a.ServerName, map[string]any{"membership": "ban"})
		var sent []id.EventID
		for i := 0; i < 3; i++ {
			sent = append(sent, mustSend(t, alice, roomID, fmt.Sprintf("A while C is down %d", i)))
			sent = append(sent, mustSend(t, bob, roomID, fmt.Sprintf("B while C is down %d", i)))
		}
		c.Restart()
		for _, ev := range append([]id.EventID{pl, ban}, sent...) {
			carolSync.sees(ev)
		}
		st := waitSameState(t, roomID, alice, bob, carol)
		if st["m.room.power_levels|"] != pl.String() || st["m.room.member|@mallory:"+a.ServerName] != ban.String() {
			t.Fatalf("state after catching up:\n%s", describe(st))
		}
		// After the outage, C's own messages reach the others again.
		back := mustSend(t, carol, roomID, "C is back")
		aliceSync.sees(back)
		bobSync.sees(back)
	})

	t.Run("backfill and history endpoints", func(t *testing.T) {
		latest := mustSend(t, alice, roomID, "latest")
		bobSync.sees(latest)
		path := "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID.String()) + "?limit=5&v=" + url.QueryEscape(latest.String())
		status, body := do(t, ca, signedRequest(t, bID, aName, "GET", path, nil))
		if status != http.StatusOK {
			t.Fatalf("backfill: %d %s", status, body)
		}
		var txn struct {
			PDUs []json.RawMessage `json:"pdus"`
		}
		if err := json.Unmarshal(body, &txn); err != nil || len(txn.PDUs) != 5 {
			t.Fatalf("backfill answer (%v): %s", err, body)
		}
		verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(roomVersion(t, alice, roomID)))
		prevDepth := int64(1 << 62)
		for i, raw := range txn.PDUs {
			ev, err := verImpl.NewEventFromUntrustedJSON(raw)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 && ev.EventID() != latest.String() {
				t.Fatalf("backfill starts at %s, want %s", ev.EventID(), latest)
			}
			if ev.Depth() > prevDepth {
				t.Fatalf("backfill not deepest first")
			}
			prevDepth = ev.Depth()
		}
		// The whole history back to the creation, which B (having joined
		// later) does not have: A has it.
		path = "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID.String()) + "?limit=100&v=" + url.QueryEscape(latest.String())
		status, body = do(t, ca, signedRequest(t, cID, aName, "GET", path, nil))
		if status != http.StatusOK || !strings.Contains(string(body), `"m.room.create"`) || !strings.Contains(string(body), early.String()) {
			t.Fatalf("full backfill from A: %d %.300s", status, body)
		}
		// B answers from its own copy too.
		status, body = do(t, ca, signedRequest(t, cID, bName, "GET", path, nil))
		if status != http.StatusOK || !strings.Contains(string(body), m2.String()) {
			t.Fatalf("backfill from B: %d %.300s", status, body)
		}

		status, body = do(t, ca, signedRequest(t, bID, aName, "GET",
			"/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID.String())+"?event_id="+url.QueryEscape(latest.String()), nil))
		var ids struct {
			PDUIDs  []string `json:"pdu_ids"`
			AuthIDs []string `json:"auth_chain_ids"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &ids) != nil || !contains(ids.PDUIDs, topic.String()) || len(ids.AuthIDs) == 0 {
			t.Fatalf("state_ids: %d %s", status, body)
		}
		status, body = do(t, ca, signedRequest(t, bID, aName, "POST",
			"/_matrix/federation/v1/get_missing_events/"+url.PathEscape(roomID.String()),
			map[string]any{"limit": 2, "earliest_events": []string{}, "latest_events": []string{latest.String()}}))
		var missing struct {
			Events []json.RawMessage `json:"events"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &missing) != nil || len(missing.Events) != 2 {
			t.Fatalf("get_missing_events: %d %s", status, body)
		}
		status, body = do(t, ca, signedRequest(t, bID, aName, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(m2.String()), nil))
		if status != http.StatusOK || !strings.Contains(string(body), "hello from B") {
			t.Fatalf("event: %d %s", status, body)
		}
		status, body = do(t, ca, signedRequest(t, bID, aName, "GET",
			"/_matrix/federation/v1/state/"+url.PathEscape(roomID.String())+"?event_id="+url.QueryEscape(latest.String()), nil))
		var full struct {
			PDUs      []json.RawMessage `json:"pdus"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &full) != nil || len(full.PDUs) != len(ids.PDUIDs) || len(full.AuthChain) != len(ids.AuthIDs) {
			t.Fatalf("state: %d %.300s", status, body)
		}
		status, body = do(t, ca, signedRequest(t, bID, aName, "GET",
			"/_matrix/federation/v1/event_auth/"+url.PathEscape(roomID.String())+"/"+url.PathEscape(m2.String()), nil))
		if status != http.StatusOK || !strings.Contains(string(body), `"m.room.create"`) {
			t.Fatalf("event_auth: %d %.300s", status, body)
		}
		// Bad input is refused, not answered.
		for _, bad := range []struct {
			method, path string
			body         any
			status       int
		}{
			{"GET", "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID.String()) + "?limit=5", nil, http.StatusBadRequest},
			{"GET", "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID.String()) + "?limit=x&v=" + url.QueryEscape(latest.String()), nil, http.StatusBadRequest},
			{"GET", "/_matrix/federation/v1/state_ids/" + url.PathEscape(roomID.String()), nil, http.StatusBadRequest},
			{"GET", "/_matrix/federation/v1/state_ids/" + url.PathEscape(roomID.String()) + "?event_id=%24nope", nil, http.StatusNotFound},
			{"POST", "/_matrix/federation/v1/get_missing_events/" + url.PathEscape(roomID.String()), map[string]any{"latest_events": []string{}}, http.StatusBadRequest},
			{"GET", "/_matrix/federation/v1/event/%24nope", nil, http.StatusNotFound},
			{"GET", "/_matrix/federation/v1/state_ids/" + url.PathEscape("!nope:"+a.ServerName) + "?event_id=%24x", nil, http.StatusNotFound},
		} {
			if status, body := do(t, ca, signedRequest(t, bID, aName, bad.method, bad.path, bad.body)); status != bad.status {
				t.Errorf("%s %s: %d %s, want %d", bad.method, bad.path, status, body, bad.status)
			}
		}
	})

	t.Run("B's last member leaves", func(t *testing.T) {
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatalf("bob leaves: %v", err)
		}
		bobSync.waitFor("the room under leave", func() bool { return bobSync.left[roomID] })
		waitFor(t, "bob's leave at A and C", 20*time.Second, func() bool {
			for _, cli := range []*mautrix.Client{alice, carol} {
				var content event.MemberEventContent
				if err := cli.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &content); err != nil || content.Membership != event.MembershipLeave {
					return false
				}
			}
			return true
		})
		after := mustSend(t, alice, roomID, "after bob left")
		carolSync.sees(after)
	})
}

// roomVersion returns a room's version as its creation event says.
func roomVersion(t *testing.T, cli *mautrix.Client, roomID id.RoomID) string {
	t.Helper()
	var content struct {
		RoomVersion string `json:"room_version"`
	}
	if err := cli.StateEvent(context.Background(), roomID, event.StateCreate, "", &content); err != nil {
		t.Fatal(err)
	}
	if content.RoomVersion == "" {
		return "1"
	}
	return content.RoomVersion
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestFederationMembershipRejections checks the refusals a joining server
// can meet, speaking the server-server API as B with B's own key.
func TestFederationMembershipRejections(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	ctx := context.Background()
	aName := spec.ServerName(a.ServerName)
	bID := identityOf(t, b)
	alice := a.RegisterUser(t, "alice")
	bob := b.RegisterUser(t, "bob")

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	version := roomVersion(t, alice, room.RoomID)
	makeJoin := func(user, query string) (int, []byte) {
		return do(t, ca, signedRequest(t, bID, aName, "GET",
			"/_matrix/federation/v1/make_join/"+url.PathEscape(room.RoomID.String())+"/"+url.PathEscape(user)+query, nil))
	}

	t.Run("make_join for another server's user", func(t *testing.T) {
		status, body := makeJoin("@someone:"+a.ServerName, "?ver="+version)
		if status != http.StatusForbidden || errcode(body) != "M_FORBIDDEN" {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("make_join with an unsupported room version", func(t *testing.T) {
		status, body := makeJoin("@eve:"+b.ServerName, "?ver=1&ver=2")
		if status != http.StatusBadRequest || errcode(body) != "M_INCOMPATIBLE_ROOM_VERSION" || !strings.Contains(string(body), `"room_version":"`+version+`"`) {
			t.Fatalf("%d %s", status, body)
		}
	})
	t.Run("send_join that fails auth", func(t *testing.T) {
		status, body := makeJoin("@eve:"+b.ServerName, "?ver="+version)
		if status != http.StatusOK {
			t.Fatalf("make_join: %d %s", status, body)
		}
		var mj struct {
			Event       gomatrixserverlib.ProtoEvent  `json:"event"`
			RoomVersion gomatrixserverlib.RoomVersion `json:"room_version"`
		}
		if err := json.Unmarshal(body, &mj); err != nil {
			t.Fatal(err)
		}
		// The room becomes invite-only before the join is sent: the join
		// passes against the state at its prev_events but not the current
		// state, so it is refused.
		mustState(t, alice, room.RoomID, event.StateJoinRules, "", map[string]string{"join_rule": "invite"})
		ev, err := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion).NewEventBuilderFromProtoEvent(&mj.Event).
			Build(time.Now(), bID.name, gomatrixserverlib.KeyID(bID.key.ID), bID.key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		status, body = do(t, ca, signedRequest(t, bID, aName, "PUT",
			"/_matrix/federation/v2/send_join/"+url.PathEscape(room.RoomID.String())+"/"+url.PathEscape(ev.EventID()), json.RawMessage(ev.JSON())))
		if status != http.StatusForbidden || errcode(body) != "M_FORBIDDEN" {
			t.Fatalf("send_join: %d %s", status, body)
		}
		// Nor may eve ask again now.
		if status, body := makeJoin("@eve:"+b.ServerName, "?ver="+version); status != http.StatusForbidden {
			t.Fatalf("make_join of an invite-only room: %d %s", status, body)
		}
	})
	t.Run("server ACL", func(t *testing.T) {
		acl, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type:    event.StateServerACL,
			Content: event.Content{Raw: map[string]any{"allow": []string{"*"}, "allow_ip_literals": false}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		status, body := do(t, ca, signedRequest(t, bID, aName, "GET",
			"/_matrix/federation/v1/make_join/"+url.PathEscape(acl.RoomID.String())+"/"+url.PathEscape("@eve:"+b.ServerName)+"?ver="+version, nil))
		if status != http.StatusForbidden || errcode(body) != "M_FORBIDDEN" {
			t.Fatalf("make_join from a denied server: %d %s", status, body)
		}
		_, err = bob.JoinRoom(ctx, acl.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{a.ServerName}})
		if httpStatus(err) != http.StatusForbidden {
			t.Fatalf("bob's join of a room denying B: %v", err)
		}
		// A PDU from B into that room is dropped with an error result.
		st := stateIDs(t, alice, acl.RoomID)
		sender := "@eve:" + b.ServerName
		proto := gomatrixserverlib.ProtoEvent{
			SenderID: sender, RoomID: acl.RoomID.String(), Type: "m.room.message", Depth: 10,
			PrevEvents: []string{st["m.room.server_acl|"]}, AuthEvents: []string{st["m.room.create|"], st["m.room.power_levels|"]},
			Content: []byte(`{"body":"let me in","msgtype":"m.text"}`),
		}
		ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version)).NewEventBuilderFromProtoEvent(&proto).
			Build(time.Now(), bID.name, gomatrixserverlib.KeyID(bID.key.ID), bID.key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		status, body = do(t, ca, signedRequest(t, bID, aName, "PUT", "/_matrix/federation/v1/send/acl1", map[string]any{
			"origin": b.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{ev.JSON()},
		}))
		if status != http.StatusOK || !strings.Contains(string(body), ev.EventID()) || !strings.Contains(string(body), "server ACL") {
			t.Fatalf("/send from a denied server: %d %s", status, body)
		}
	})
}
