package federation_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/parley-chat/parley/internal/testserver"
)

// TestCreateRoomInvitesRemoteUsers: createRoom's invite list may name users
// of other servers; they are invited through their servers and can join.
func TestCreateRoomInvitesRemoteUsers(t *testing.T) {
	ca := testserver.NewCA(t)
	a := testserver.StartFederated(t, ca, testserver.Options{})
	b := testserver.StartFederated(t, ca, testserver.Options{})
	ctx := context.Background()
	alice := a.RegisterUser(t, "alice")
	amy := a.RegisterUser(t, "amy")
	bob := b.RegisterUser(t, "bob")
	bobSync, amySync := newSyncer(t, bob), newSyncer(t, amy)

	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Preset:   "trusted_private_chat",
		IsDirect: true,
		// A user of a server that does not exist cannot be invited; that
		// must not stop the room or the other invites.
		Invite: []id.UserID{bob.UserID, amy.UserID, "@nobody:127.0.0.1:1"},
	})
	if err != nil {
		t.Fatalf("createRoom with a remote invitee: %v", err)
	}
	amySync.waitFor("amy's invite", func() bool { return amySync.invited[room.RoomID] })
	bobSync.waitFor("bob's invite", func() bool { return bobSync.invited[room.RoomID] })

	var member struct {
		Membership string `json:"membership"`
		IsDirect   bool   `json:"is_direct"`
	}
	if err := alice.StateEvent(ctx, room.RoomID, event.StateMember, bob.UserID.String(), &member); err != nil {
		t.Fatal(err)
	}
	if member.Membership != "invite" || !member.IsDirect {
		t.Fatalf("bob's member event on A: %+v", member)
	}
	var pl struct {
		Users map[string]int `json:"users"`
	}
	if err := alice.StateEvent(ctx, room.RoomID, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	if pl.Users[bob.UserID.String()] != 100 {
		t.Fatalf("trusted_private_chat should give the remote invitee the creator's level: %v", pl.Users)
	}

	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("bob accepts: %v", err)
	}
	hi := mustSend(t, alice, room.RoomID, "hello bob")
	bobSync.sees(hi)
}
