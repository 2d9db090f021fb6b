package clientapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/internal/testserver"
)

// The room endpoints, driven through a real server with the mautrix-go
// client: what a Matrix client sees.

var (
	typeCustomState = event.Type{Type: "org.parley.test.state", Class: event.StateEventType}
	typeCustomMsg   = event.Type{Type: "org.parley.test.msg", Class: event.MessageEventType}
)

// raw sends a request with an arbitrary body (a []byte is sent as is) and
// decodes the answer into out.
func roomRequest(t *testing.T, cli *mautrix.Client, method, path string, body, out any) error {
	t.Helper()
	req := mautrix.FullRequest{Method: method, URL: cli.HomeserverURL.String() + path, ResponseJSON: out, MaxAttempts: 1}
	if b, ok := body.([]byte); ok {
		req.RequestBytes = b
	} else if body != nil {
		req.RequestJSON = body
	}
	_, err := cli.MakeFullRequest(context.Background(), req)
	return err
}

// wantErr checks that err is the Matrix error status/errcode.
func wantMatrixError(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		t.Fatalf("%s: want %d %s, got %v", what, status, code, err)
	}
	got := ""
	if httpErr.RespError != nil {
		got = httpErr.RespError.ErrCode
	}
	if httpErr.Response.StatusCode != status || got != code {
		t.Fatalf("%s: want %d %s, got %d %s (%s)", what, status, code, httpErr.Response.StatusCode, got, httpErr.ResponseBody)
	}
}

func mustOK[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
}

func roomStateContent(t *testing.T, cli *mautrix.Client, roomID id.RoomID, evType event.Type, key string) map[string]any {
	t.Helper()
	var c map[string]any
	if err := cli.StateEvent(context.Background(), roomID, evType, key, &c); err != nil {
		t.Fatalf("state %s/%s: %v", evType.Type, key, err)
	}
	return c
}

func pathEsc(s any) string {
	switch v := s.(type) {
	case id.RoomID:
		return url.PathEscape(string(v))
	case id.UserID:
		return url.PathEscape(string(v))
	case id.EventID:
		return url.PathEscape(string(v))
	}
	return url.PathEscape(s.(string))
}

// TestRoomsEndToEnd is the main flow on both databases: create, alias,
// invite, join, send (idempotent), state, members, redaction, kick, ban,
// unban, leave.
func TestRoomsEndToEnd(t *testing.T) {
	for _, dialect := range testdb.Dialects {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			srv := testserver.Start(t, testserver.Options{DB: dialect})
			alice := srv.RegisterUser(t, "alice")
			bob := srv.RegisterUser(t, "bob")
			if err := alice.SetDisplayName(ctx, "Alice"); err != nil {
				t.Fatal(err)
			}

			created := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Preset: "private_chat", Name: "Tea", Topic: "Earl Grey", RoomAliasName: "tea",
				Invite: []id.UserID{bob.UserID}, IsDirect: true,
			}))
			roomID := created.RoomID
			alias := id.RoomAlias("#tea:" + srv.ServerName)
			if !strings.HasPrefix(string(roomID), "!") || !strings.HasSuffix(string(roomID), ":"+srv.ServerName) {
				t.Fatalf("room ID %s", roomID)
			}

			if got := roomStateContent(t, alice, roomID, event.StateRoomName, "")["name"]; got != "Tea" {
				t.Fatalf("name = %v", got)
			}
			if got := roomStateContent(t, alice, roomID, event.StateTopic, "")["topic"]; got != "Earl Grey" {
				t.Fatalf("topic = %v", got)
			}
			if got := roomStateContent(t, alice, roomID, event.StateJoinRules, "")["join_rule"]; got != "invite" {
				t.Fatalf("join_rule = %v", got)
			}
			if got := roomStateContent(t, alice, roomID, event.StateHistoryVisibility, "")["history_visibility"]; got != "shared" {
				t.Fatalf("history_visibility = %v", got)
			}
			if got := roomStateContent(t, alice, roomID, event.StateGuestAccess, "")["guest_access"]; got != "can_join" {
				t.Fatalf("guest_access = %v", got)
			}
			if got := roomStateContent(t, alice, roomID, event.StateCanonicalAlias, "")["alias"]; got != string(alias) {
				t.Fatalf("canonical alias = %v", got)
			}
			create := roomStateContent(t, alice, roomID, event.StateCreate, "")
			if create["room_version"] != "10" || create["creator"] != string(alice.UserID) {
				t.Fatalf("create content = %v", create)
			}
			pl := roomStateContent(t, alice, roomID, event.StatePowerLevels, "")
			if users := pl["users"].(map[string]any); users[string(alice.UserID)] != float64(100) || len(users) != 1 {
				t.Fatalf("power level users = %v", pl["users"])
			}
			if pl["invite"] != float64(0) || pl["state_default"] != float64(50) || pl["redact"] != float64(50) {
				t.Fatalf("power levels = %v", pl)
			}
			creatorJoin := roomStateContent(t, alice, roomID, event.StateMember, string(alice.UserID))
			if creatorJoin["membership"] != "join" || creatorJoin["displayname"] != "Alice" {
				t.Fatalf("creator member content = %v", creatorJoin)
			}
			invite := roomStateContent(t, alice, roomID, event.StateMember, string(bob.UserID))
			if invite["membership"] != "invite" || invite["is_direct"] != true {
				t.Fatalf("invite content = %v", invite)
			}

			resolved := mustOK[*mautrix.RespAliasResolve](t, "resolve")(bob.ResolveAlias(ctx, alias))
			if resolved.RoomID != roomID || !slices.Contains(resolved.Servers, srv.ServerName) {
				t.Fatalf("resolve = %+v", resolved)
			}
			if aliases := mustOK[*mautrix.RespAliasList](t, "aliases")(alice.GetAliases(ctx, roomID)); !slices.Contains(aliases.Aliases, alias) {
				t.Fatalf("aliases = %v", aliases.Aliases)
			}

			// Bob joins by alias.
			joined := mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoom(ctx, string(alias), nil))
			if joined.RoomID != roomID {
				t.Fatalf("join answered %s", joined.RoomID)
			}
			rooms := mustOK[*mautrix.RespJoinedRooms](t, "joined_rooms")(bob.JoinedRooms(ctx))
			if !slices.Contains(rooms.JoinedRooms, roomID) {
				t.Fatalf("joined_rooms = %v", rooms.JoinedRooms)
			}
			jm := mustOK[*mautrix.RespJoinedMembers](t, "joined_members")(bob.JoinedMembers(ctx, roomID))
			if len(jm.Joined) != 2 || jm.Joined[alice.UserID].DisplayName != "Alice" {
				t.Fatalf("joined_members = %+v", jm.Joined)
			}

			// Sending is idempotent per transaction ID.
			first := mustOK[*mautrix.RespSendEvent](t, "send")(alice.SendMessageEvent(ctx, roomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "hello"}, mautrix.ReqSendEvent{TransactionID: "txn1"}))
			again := mustOK[*mautrix.RespSendEvent](t, "resend")(alice.SendMessageEvent(ctx, roomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "hello"}, mautrix.ReqSendEvent{TransactionID: "txn1"}))
			other := mustOK[*mautrix.RespSendEvent](t, "send 2")(alice.SendMessageEvent(ctx, roomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "hello"}, mautrix.ReqSendEvent{TransactionID: "txn2"}))
			if first.EventID != again.EventID || first.EventID == other.EventID {
				t.Fatalf("txn1 → %s then %s; txn2 → %s", first.EventID, again.EventID, other.EventID)
			}
			// The same transaction ID from another user is another event.
			bobs := mustOK[*mautrix.RespSendEvent](t, "bob send")(bob.SendMessageEvent(ctx, roomID, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": "hi"}, mautrix.ReqSendEvent{TransactionID: "txn1"}))
			if bobs.EventID == first.EventID {
				t.Fatal("bob's txn1 returned alice's event")
			}
			got := mustOK[*event.Event](t, "get event")(bob.GetEvent(ctx, roomID, first.EventID))
			if got.Sender != alice.UserID || got.Content.Raw["body"] != "hello" || got.RoomID != roomID || got.Type != event.EventMessage {
				t.Fatalf("event = %+v", got)
			}

			// State put/get, with and without a state key.
			mustOK[*mautrix.RespSendEvent](t, "put state")(alice.SendStateEvent(ctx, roomID, typeCustomState, "k/1", map[string]any{"v": 1}))
			if c := roomStateContent(t, bob, roomID, typeCustomState, "k/1"); c["v"] != float64(1) {
				t.Fatalf("custom state = %v", c)
			}
			mustOK[*mautrix.RespSendEvent](t, "put empty-key state")(alice.SendStateEvent(ctx, roomID, typeCustomState, "", map[string]any{"v": 2}))
			if c := roomStateContent(t, bob, roomID, typeCustomState, ""); c["v"] != float64(2) {
				t.Fatalf("custom state = %v", c)
			}
			full := mustOK[*event.Event](t, "format=event")(bob.FullStateEvent(ctx, roomID, typeCustomState, "k/1"))
			if full.Sender != alice.UserID || full.StateKey == nil || *full.StateKey != "k/1" {
				t.Fatalf("format=event = %+v", full)
			}
			err := bob.StateEvent(ctx, roomID, typeCustomState, "missing", &map[string]any{})
			wantMatrixError(t, "missing state", err, http.StatusNotFound, "M_NOT_FOUND")
			// Bob (power 0) may not set state that needs 50.
			_, err = bob.SendStateEvent(ctx, roomID, event.StateRoomName, "", map[string]any{"name": "mine"})
			wantMatrixError(t, "bob sets name", err, http.StatusForbidden, "M_FORBIDDEN")
			all := mustOK[[]*event.Event](t, "state")(bob.StateAsArray(ctx, roomID))
			if len(all) < 10 {
				t.Fatalf("state has %d events", len(all))
			}

			// Members with filters.
			members := mustOK[*mautrix.RespMembers](t, "members")(bob.Members(ctx, roomID))
			if len(members.Chunk) != 2 {
				t.Fatalf("members = %d", len(members.Chunk))
			}
			onlyJoin := mustOK[*mautrix.RespMembers](t, "members join")(bob.Members(ctx, roomID, mautrix.ReqMembers{Membership: event.MembershipJoin}))
			notJoin := mustOK[*mautrix.RespMembers](t, "members not join")(bob.Members(ctx, roomID, mautrix.ReqMembers{NotMembership: event.MembershipJoin}))
			if len(onlyJoin.Chunk) != 2 || len(notJoin.Chunk) != 0 {
				t.Fatalf("membership=join → %d, not_membership=join → %d", len(onlyJoin.Chunk), len(notJoin.Chunk))
			}

			// Redaction: bob may redact his own event, not alice's.
			_, err = bob.RedactEvent(ctx, roomID, first.EventID)
			wantMatrixError(t, "bob redacts alice", err, http.StatusForbidden, "M_FORBIDDEN")
			mustOK[*mautrix.RespSendEvent](t, "bob redacts own")(bob.RedactEvent(ctx, roomID, bobs.EventID, mautrix.ReqRedact{Reason: "typo"}))
			redacted := mustOK[*event.Event](t, "get redacted")(alice.GetEvent(ctx, roomID, bobs.EventID))
			if len(redacted.Content.Raw) != 0 {
				t.Fatalf("redacted content = %v", redacted.Content.Raw)
			}
			mustOK[*mautrix.RespSendEvent](t, "alice redacts bob")(alice.RedactEvent(ctx, roomID, first.EventID))

			// Kick, ban, unban, invite again, leave.
			mustOK[*mautrix.RespKickUser](t, "kick")(alice.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "bye"}))
			if m := roomStateContent(t, alice, roomID, event.StateMember, string(bob.UserID)); m["membership"] != "leave" || m["reason"] != "bye" {
				t.Fatalf("after kick: %v", m)
			}
			_, err = alice.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: bob.UserID})
			wantMatrixError(t, "kick someone not in the room", err, http.StatusForbidden, "M_FORBIDDEN")
			// The kicked user reads the state as it was when they left.
			mustOK[*mautrix.RespSendEvent](t, "rename")(alice.SendStateEvent(ctx, roomID, event.StateRoomName, "", map[string]any{"name": "Tea 2"}))
			if got := roomStateContent(t, bob, roomID, event.StateRoomName, "")["name"]; got != "Tea" {
				t.Fatalf("kicked user sees name %v", got)
			}
			_, err = bob.JoinRoomByID(ctx, roomID)
			wantMatrixError(t, "join invite-only room uninvited", err, http.StatusForbidden, "M_FORBIDDEN")

			mustOK[*mautrix.RespBanUser](t, "ban")(alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: bob.UserID}))
			_, err = alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID})
			wantMatrixError(t, "invite banned user", err, http.StatusForbidden, "M_FORBIDDEN")
			mustOK[*mautrix.RespUnbanUser](t, "unban")(alice.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}))
			_, err = alice.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID})
			wantMatrixError(t, "unban someone not banned", err, http.StatusForbidden, "M_FORBIDDEN")
			mustOK[*mautrix.RespInviteUser](t, "invite")(alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: bob.UserID, Reason: "come back"}))
			mustOK[*mautrix.RespJoinRoom](t, "rejoin")(bob.JoinRoomByID(ctx, roomID))
			if got := roomStateContent(t, bob, roomID, event.StateRoomName, "")["name"]; got != "Tea 2" {
				t.Fatalf("rejoined user sees name %v", got)
			}
			mustOK[*mautrix.RespLeaveRoom](t, "leave")(bob.LeaveRoom(ctx, roomID))
			mustOK[*mautrix.RespLeaveRoom](t, "leave again")(bob.LeaveRoom(ctx, roomID))
			rooms = mustOK[*mautrix.RespJoinedRooms](t, "joined_rooms")(bob.JoinedRooms(ctx))
			if slices.Contains(rooms.JoinedRooms, roomID) {
				t.Fatalf("joined_rooms after leave = %v", rooms.JoinedRooms)
			}
			_, err = bob.JoinedMembers(ctx, roomID)
			wantMatrixError(t, "joined_members after leave", err, http.StatusForbidden, "M_FORBIDDEN")

			// Aliases: delete, then it no longer resolves.
			mustOK[*mautrix.RespAliasDelete](t, "delete alias")(alice.DeleteAlias(ctx, alias))
			_, err = alice.ResolveAlias(ctx, alias)
			wantMatrixError(t, "resolve deleted alias", err, http.StatusNotFound, "M_NOT_FOUND")
		})
	}
}

// TestCreateRoomOptions checks presets, room versions, initial_state,
// power level overrides and creation_content.
func TestCreateRoomOptions(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.RegisterUser(t, "alice")
	bob := srv.RegisterUser(t, "bob")

	t.Run("public_chat", func(t *testing.T) {
		r := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public"}))
		if got := roomStateContent(t, alice, r.RoomID, event.StateJoinRules, "")["join_rule"]; got != "public" {
			t.Fatalf("join_rule = %v", got)
		}
		if got := roomStateContent(t, alice, r.RoomID, event.StateGuestAccess, "")["guest_access"]; got != "forbidden" {
			t.Fatalf("guest_access = %v", got)
		}
		if got := roomStateContent(t, alice, r.RoomID, event.StatePowerLevels, "")["invite"]; got != float64(50) {
			t.Fatalf("invite level = %v", got)
		}
		// Anyone may join a public room without an invite.
		mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(ctx, r.RoomID))
	})

	t.Run("trusted_private_chat", func(t *testing.T) {
		r := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID},
		}))
		users := roomStateContent(t, alice, r.RoomID, event.StatePowerLevels, "")["users"].(map[string]any)
		if users[string(bob.UserID)] != float64(100) || users[string(alice.UserID)] != float64(100) {
			t.Fatalf("users = %v", users)
		}
		if got := roomStateContent(t, alice, r.RoomID, event.StateJoinRules, "")["join_rule"]; got != "invite" {
			t.Fatalf("join_rule = %v", got)
		}
	})

	t.Run("room versions", func(t *testing.T) {
		for _, v := range []string{"1", "9", "11"} {
			r := mustOK[*mautrix.RespCreateRoom](t, "create v"+v)(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: id.RoomVersion(v)}))
			c := roomStateContent(t, alice, r.RoomID, event.StateCreate, "")
			_, hasCreator := c["creator"]
			if c["room_version"] != v || hasCreator != (v != "11") {
				t.Fatalf("v%s create content = %v", v, c)
			}
			// Redaction works in every version (v11 moved redacts into content).
			sent := mustOK[*mautrix.RespSendEvent](t, "send")(alice.SendText(ctx, r.RoomID, "x"))
			mustOK[*mautrix.RespSendEvent](t, "redact")(alice.RedactEvent(ctx, r.RoomID, sent.EventID))
			ev := mustOK[*event.Event](t, "get")(alice.GetEvent(ctx, r.RoomID, sent.EventID))
			if ev.Content.Raw["body"] != nil {
				t.Fatalf("v%s: redacted event still has body", v)
			}
		}
	})

	t.Run("initial_state, name and creation_content", func(t *testing.T) {
		r := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Name: "from name",
			InitialState: []*event.Event{
				{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}},
				{Type: typeCustomState, StateKey: ptrTo("a"), Content: event.Content{Raw: map[string]any{"x": "y"}}},
				{Type: event.StateRoomName, Content: event.Content{Raw: map[string]any{"name": "from initial_state"}}},
			},
			CreationContent: map[string]any{"m.federate": false, "type": "m.space", "creator": "@mallory:example.org"},
		}))
		if got := roomStateContent(t, alice, r.RoomID, event.StateHistoryVisibility, "")["history_visibility"]; got != "joined" {
			t.Fatalf("history_visibility = %v (initial_state must win over the preset)", got)
		}
		if got := roomStateContent(t, alice, r.RoomID, typeCustomState, "a")["x"]; got != "y" {
			t.Fatalf("custom initial state = %v", got)
		}
		if got := roomStateContent(t, alice, r.RoomID, event.StateRoomName, "")["name"]; got != "from name" {
			t.Fatalf("name = %v (name must win over initial_state)", got)
		}
		c := roomStateContent(t, alice, r.RoomID, event.StateCreate, "")
		if c["m.federate"] != false || c["type"] != "m.space" || c["creator"] != string(alice.UserID) {
			t.Fatalf("create content = %v", c)
		}
	})

	t.Run("power_level_content_override", func(t *testing.T) {
		r := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "public_chat",
			PowerLevelOverride: &event.PowerLevelsEventContent{
				Users:         map[id.UserID]int{alice.UserID: 100, bob.UserID: 10},
				EventsDefault: 20,
			},
		}))
		pl := roomStateContent(t, alice, r.RoomID, event.StatePowerLevels, "")
		if pl["events_default"] != float64(20) || pl["state_default"] != float64(50) {
			t.Fatalf("power levels = %v", pl)
		}
		mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(ctx, r.RoomID))
		_, err := bob.SendText(ctx, r.RoomID, "hi")
		wantMatrixError(t, "bob (10) sends at events_default 20", err, http.StatusForbidden, "M_FORBIDDEN")

		// An override that takes the creator's power makes the rest of the
		// initial state impossible.
		_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Name:               "x",
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{bob.UserID: 100}},
		})
		wantMatrixError(t, "override without the creator", err, http.StatusBadRequest, "M_INVALID_ROOM_STATE")
	})

	t.Run("alias taken", func(t *testing.T) {
		mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "taken"}))
		_, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "taken"})
		wantMatrixError(t, "second room with the alias", err, http.StatusBadRequest, "M_ROOM_IN_USE")
	})
}

func ptrTo[T any](v T) *T { return &v }

// TestHistoryVisibility checks, for each history_visibility, which events
// and which state a user who was invited, joined and left (bob), a user
// who never joined (carol) and a user who joined late (dave) can read.
func TestHistoryVisibility(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.RegisterUser(t, "alice")
	bob := srv.RegisterUser(t, "bob")
	carol := srv.RegisterUser(t, "carol")
	dave := srv.RegisterUser(t, "dave")

	// For each event: before bob's invite, while invited, while joined,
	// after he left.
	type seen [4]bool
	cases := []struct {
		hv                string
		bob, carol, dave  seen
		carolReadsState   bool
		bobSeesLaterState bool
	}{
		{"world_readable", seen{true, true, true, true}, seen{true, true, true, true}, seen{true, true, true, true}, true, true},
		{"shared", seen{true, true, true, false}, seen{}, seen{true, true, true, true}, false, false},
		{"invited", seen{false, true, true, false}, seen{}, seen{false, false, false, false}, false, false},
		{"joined", seen{false, false, true, false}, seen{}, seen{false, false, false, false}, false, false},
	}
	for _, c := range cases {
		t.Run(c.hv, func(t *testing.T) {
			r := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
				Preset: "public_chat", Name: "before",
				InitialState: []*event.Event{{Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": c.hv}}}},
			}))
			room := r.RoomID
			send := func(body string) id.EventID {
				return mustOK[*mautrix.RespSendEvent](t, "send")(alice.SendText(ctx, room, body)).EventID
			}
			var evs [4]id.EventID
			evs[0] = send("before invite")
			mustOK[*mautrix.RespInviteUser](t, "invite")(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
			evs[1] = send("while invited")
			mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(ctx, room))
			evs[2] = send("while joined")
			mustOK[*mautrix.RespLeaveRoom](t, "leave")(bob.LeaveRoom(ctx, room))
			evs[3] = send("after leaving")
			mustOK[*mautrix.RespSendEvent](t, "rename")(alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "after"}))
			mustOK[*mautrix.RespJoinRoom](t, "dave joins")(dave.JoinRoomByID(ctx, room))

			for _, who := range []struct {
				name string
				cli  *mautrix.Client
				want seen
			}{{"bob", bob, c.bob}, {"carol", carol, c.carol}, {"dave", dave, c.dave}} {
				for i, evID := range evs {
					_, err := who.cli.GetEvent(ctx, room, evID)
					if who.want[i] && err != nil {
						t.Errorf("%s cannot see event %d: %v", who.name, i, err)
					}
					if !who.want[i] {
						if err == nil {
							t.Errorf("%s can see event %d", who.name, i)
						} else {
							wantMatrixError(t, who.name+" hidden event", err, http.StatusNotFound, "M_NOT_FOUND")
						}
					}
				}
			}

			// State: bob left and reads the state of when he left (or the
			// current state when the room is world readable); carol only
			// reads a world readable room.
			wantName := "before"
			if c.bobSeesLaterState {
				wantName = "after"
			}
			if got := roomStateContent(t, bob, room, event.StateRoomName, "")["name"]; got != wantName {
				t.Errorf("bob reads name %v, want %v", got, wantName)
			}
			bobMembers := mustOK[*mautrix.RespMembers](t, "bob members")(bob.Members(ctx, room))
			if n := len(bobMembers.Chunk); c.bobSeesLaterState != (n == 3) {
				t.Errorf("bob sees %d members", n)
			}
			_, err := carol.StateAsArray(ctx, room)
			_, membersErr := carol.Members(ctx, room)
			if c.carolReadsState {
				if err != nil || membersErr != nil {
					t.Errorf("carol cannot read a world readable room: %v / %v", err, membersErr)
				}
				if got := mustOK[*mautrix.RespAliasList](t, "aliases")(carol.GetAliases(ctx, room)); got.Aliases == nil {
					t.Error("aliases = nil")
				}
			} else {
				wantMatrixError(t, "carol reads state", err, http.StatusForbidden, "M_FORBIDDEN")
				wantMatrixError(t, "carol reads members", membersErr, http.StatusForbidden, "M_FORBIDDEN")
				_, err = carol.GetAliases(ctx, room)
				wantMatrixError(t, "carol reads aliases", err, http.StatusForbidden, "M_FORBIDDEN")
			}
		})
	}
}

// TestRoomBadInput checks the Matrix error for each kind of bad request.
func TestRoomBadInput(t *testing.T) {
	ctx := context.Background()
	srv := testserver.Start(t, testserver.Options{})
	alice := srv.RegisterUser(t, "alice")
	bob := srv.RegisterUser(t, "bob")
	room := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
	mustOK[*mautrix.RespJoinRoom](t, "join")(bob.JoinRoomByID(ctx, room))
	eve := srv.RegisterUser(t, "eve")
	unknown := "!nosuchroom:" + srv.ServerName
	v3 := "/_matrix/client/v3"
	sendPath := func(roomID string) string {
		return v3 + "/rooms/" + pathEsc(roomID) + "/send/m.room.message/" + pathEsc(alice.TxnID())
	}

	cases := []struct {
		name         string
		cli          *mautrix.Client
		method, path string
		body         any
		status       int
		code         string
	}{
		{"send to unknown room", alice, "PUT", sendPath(unknown), map[string]any{"body": "x"}, 404, "M_NOT_FOUND"},
		{"state of unknown room", alice, "GET", v3 + "/rooms/" + pathEsc(unknown) + "/state", nil, 403, "M_FORBIDDEN"},
		{"members of unknown room", alice, "GET", v3 + "/rooms/" + pathEsc(unknown) + "/members", nil, 403, "M_FORBIDDEN"},
		{"event in unknown room", alice, "GET", v3 + "/rooms/" + pathEsc(unknown) + "/event/" + pathEsc("$nope"), nil, 404, "M_NOT_FOUND"},
		{"join unknown room", alice, "POST", v3 + "/join/" + pathEsc(unknown), map[string]any{}, 404, "M_NOT_FOUND"},
		{"join unknown alias", alice, "POST", v3 + "/join/" + pathEsc("#nope:"+srv.ServerName), map[string]any{}, 404, "M_NOT_FOUND"},
		{"invalid room ID", alice, "GET", v3 + "/rooms/" + pathEsc("notaroom") + "/state", nil, 400, "M_INVALID_PARAM"},
		{"send as non-member", eve, "PUT", sendPath(string(room)), map[string]any{"body": "x"}, 403, "M_FORBIDDEN"},
		{"state as non-member", eve, "GET", v3 + "/rooms/" + pathEsc(room) + "/state", nil, 403, "M_FORBIDDEN"},
		{"joined_members as non-member", eve, "GET", v3 + "/rooms/" + pathEsc(room) + "/joined_members", nil, 403, "M_FORBIDDEN"},
		{"power levels without power", bob, "PUT", v3 + "/rooms/" + pathEsc(room) + "/state/m.room.power_levels/", map[string]any{"users": map[string]int{string(bob.UserID): 100}}, 403, "M_FORBIDDEN"},
		{"kick without power", bob, "POST", v3 + "/rooms/" + pathEsc(room) + "/kick", map[string]any{"user_id": alice.UserID}, 403, "M_FORBIDDEN"},
		{"ban without power", bob, "POST", v3 + "/rooms/" + pathEsc(room) + "/ban", map[string]any{"user_id": alice.UserID}, 403, "M_FORBIDDEN"},
		{"content not an object", alice, "PUT", sendPath(string(room)), []byte(`[1,2]`), 400, "M_BAD_JSON"},
		{"content not JSON", alice, "PUT", sendPath(string(room)), []byte(`{"body":`), 400, "M_NOT_JSON"},
		{"state content not an object", alice, "PUT", v3 + "/rooms/" + pathEsc(room) + "/state/org.x/", []byte(`"x"`), 400, "M_BAD_JSON"},
		{"oversized event", alice, "PUT", sendPath(string(room)), map[string]any{"body": strings.Repeat("x", 70000)}, 413, "M_TOO_LARGE"},
		{"createRoom name of wrong type", alice, "POST", v3 + "/createRoom", []byte(`{"name": 5}`), 400, "M_BAD_JSON"},
		{"createRoom invite not a list", alice, "POST", v3 + "/createRoom", []byte(`{"invite": "@bob:x"}`), 400, "M_BAD_JSON"},
		{"createRoom invalid invitee", alice, "POST", v3 + "/createRoom", map[string]any{"invite": []string{"bob"}}, 400, "M_INVALID_PARAM"},
		{"createRoom initial_state content not object", alice, "POST", v3 + "/createRoom", []byte(`{"initial_state": [{"type": "a", "content": 1}]}`), 400, "M_BAD_JSON"},
		{"createRoom initial_state without type", alice, "POST", v3 + "/createRoom", []byte(`{"initial_state": [{"content": {}}]}`), 400, "M_BAD_JSON"},
		{"createRoom m.federate not bool", alice, "POST", v3 + "/createRoom", []byte(`{"creation_content": {"m.federate": "no"}}`), 400, "M_BAD_JSON"},
		{"createRoom unknown preset", alice, "POST", v3 + "/createRoom", map[string]any{"preset": "party"}, 400, "M_INVALID_PARAM"},
		{"createRoom bad room version", alice, "POST", v3 + "/createRoom", map[string]any{"room_version": "999"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"createRoom invalid alias name", alice, "POST", v3 + "/createRoom", map[string]any{"room_alias_name": "a:b"}, 400, "M_INVALID_PARAM"},
		{"createRoom 3pid invite", alice, "POST", v3 + "/createRoom", map[string]any{"invite_3pid": []map[string]string{{"medium": "email", "address": "a@b.c", "id_server": "x"}}}, 400, "M_INVALID_PARAM"},
		{"invite without user_id", alice, "POST", v3 + "/rooms/" + pathEsc(room) + "/invite", map[string]any{}, 400, "M_MISSING_PARAM"},
		// Federation is on: a user or alias of a server that cannot be
		// reached (.invalid never resolves) is a bad gateway.
		{"invite user of an unreachable server", alice, "POST", v3 + "/rooms/" + pathEsc(room) + "/invite", map[string]any{"user_id": "@bob:nowhere.invalid"}, 502, "M_UNKNOWN"},
		{"leave unknown room", alice, "POST", v3 + "/rooms/" + pathEsc(unknown) + "/leave", map[string]any{}, 404, "M_NOT_FOUND"},
		{"leave a room one was never in", eve, "POST", v3 + "/rooms/" + pathEsc(room) + "/leave", map[string]any{}, 403, "M_FORBIDDEN"},
		{"knock on a public room", eve, "POST", v3 + "/knock/" + pathEsc(room), map[string]any{}, 403, "M_FORBIDDEN"},
		{"join alias of an unreachable server", alice, "POST", v3 + "/join/" + pathEsc("#a:nowhere.invalid"), map[string]any{}, 502, "M_UNKNOWN"},
		{"invite invalid user", alice, "POST", v3 + "/rooms/" + pathEsc(room) + "/invite", map[string]any{"user_id": "bob"}, 400, "M_INVALID_PARAM"},
		{"members bad filter", alice, "GET", v3 + "/rooms/" + pathEsc(room) + "/members?membership=friend", nil, 400, "M_INVALID_PARAM"},
		{"unknown event", alice, "GET", v3 + "/rooms/" + pathEsc(room) + "/event/" + pathEsc("$nope"), nil, 404, "M_NOT_FOUND"},
		{"alias without sigil", alice, "PUT", v3 + "/directory/room/" + pathEsc("bad:"+srv.ServerName), map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
		{"alias with bad server", alice, "GET", v3 + "/directory/room/" + pathEsc("#a:bad_server!"), nil, 400, "M_INVALID_PARAM"},
		{"alias of another server", alice, "PUT", v3 + "/directory/room/" + pathEsc("#a:example.org"), map[string]any{"room_id": room}, 400, "M_INVALID_PARAM"},
		{"alias without room_id", alice, "PUT", v3 + "/directory/room/" + pathEsc("#a:"+srv.ServerName), map[string]any{}, 400, "M_MISSING_PARAM"},
		{"alias for a room one is not in", eve, "PUT", v3 + "/directory/room/" + pathEsc("#a:"+srv.ServerName), map[string]any{"room_id": room}, 403, "M_FORBIDDEN"},
		{"unknown alias", alice, "GET", v3 + "/directory/room/" + pathEsc("#nope:"+srv.ServerName), nil, 404, "M_NOT_FOUND"},
		{"delete unknown alias", alice, "DELETE", v3 + "/directory/room/" + pathEsc("#nope:"+srv.ServerName), nil, 404, "M_NOT_FOUND"},
		{"canonical alias not pointing here", alice, "PUT", v3 + "/rooms/" + pathEsc(room) + "/state/m.room.canonical_alias/", map[string]any{"alias": "#nope:" + srv.ServerName}, 400, "M_BAD_ALIAS"},
		{"canonical alias invalid", alice, "PUT", v3 + "/rooms/" + pathEsc(room) + "/state/m.room.canonical_alias/", map[string]any{"alias": "nope"}, 400, "M_INVALID_PARAM"},
		{"redact with invalid event ID", alice, "PUT", v3 + "/rooms/" + pathEsc(room) + "/redact/nope/t1", map[string]any{}, 400, "M_INVALID_PARAM"},
		{"no access token", srv.Client(t), "POST", v3 + "/createRoom", map[string]any{}, 401, "M_MISSING_TOKEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantMatrixError(t, c.name, roomRequest(t, c.cli, c.method, c.path, c.body, nil), c.status, c.code)
		})
	}

	t.Run("alias in use", func(t *testing.T) {
		alias := id.RoomAlias("#dup:" + srv.ServerName)
		mustOK[*mautrix.RespAliasCreate](t, "create alias")(alice.CreateAlias(ctx, alias, room))
		_, err := bob.CreateAlias(ctx, alias, room)
		wantMatrixError(t, "alias in use", err, http.StatusConflict, "M_ROOM_IN_USE")
		var out json.RawMessage
		if err := roomRequest(t, alice, "PUT", v3+"/rooms/"+pathEsc(room)+"/state/m.room.canonical_alias/", map[string]any{"alias": alias}, &out); err != nil {
			t.Fatalf("canonical alias pointing here: %v", err)
		}
		// Resolving needs no access token.
		resolved := mustOK[*mautrix.RespAliasResolve](t, "anonymous resolve")(srv.Client(t).ResolveAlias(ctx, alias))
		if resolved.RoomID != room {
			t.Fatalf("resolved to %s", resolved.RoomID)
		}
		// Neither bob (a member without the power to set the canonical
		// alias) nor eve (not a member) created the alias or may delete it.
		_, err = bob.DeleteAlias(ctx, alias)
		wantMatrixError(t, "bob deletes alice's alias", err, http.StatusForbidden, "M_FORBIDDEN")
		_, err = eve.DeleteAlias(ctx, alias)
		wantMatrixError(t, "eve deletes alice's alias", err, http.StatusForbidden, "M_FORBIDDEN")
		mustOK[*mautrix.RespAliasDelete](t, "alice deletes")(alice.DeleteAlias(ctx, alias))
	})

	t.Run("knock", func(t *testing.T) {
		knockRoom := mustOK[*mautrix.RespCreateRoom](t, "create")(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			RoomAliasName: "knock",
			InitialState:  []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}},
		})).RoomID
		_, err := eve.JoinRoomByID(ctx, knockRoom)
		wantMatrixError(t, "join a knock room uninvited", err, http.StatusForbidden, "M_FORBIDDEN")
		knocked := mustOK[*mautrix.RespKnockRoom](t, "knock")(eve.KnockRoom(ctx, "#knock:"+srv.ServerName, &mautrix.ReqKnockRoom{Reason: "let me in"}))
		if knocked.RoomID != knockRoom {
			t.Fatalf("knock answered %s", knocked.RoomID)
		}
		if m := roomStateContent(t, alice, knockRoom, event.StateMember, string(eve.UserID)); m["membership"] != "knock" || m["reason"] != "let me in" {
			t.Fatalf("knock member event = %v", m)
		}
		mustOK[*mautrix.RespInviteUser](t, "accept knock")(alice.InviteUser(ctx, knockRoom, &mautrix.ReqInviteUser{UserID: eve.UserID}))
		mustOK[*mautrix.RespJoinRoom](t, "join")(eve.JoinRoomByID(ctx, knockRoom))
	})
}
