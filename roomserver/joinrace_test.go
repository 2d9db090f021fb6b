package roomserver

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

// remoteJoins is remoteJoin for several users. With concurrent set, every
// join is built before the remote accepts any (as with concurrent
// make_joins): they share prev_events and none is in another's state.
// Otherwise each is accepted before the next is built, so a later join's
// state holds the earlier joins.
func remoteJoins(t *testing.T, remote, local *harness, roomID string, concurrent bool, userIDs ...string) []*api.JoinRemoteRoomRequest {
	t.Helper()
	ctx := context.Background()
	var joins []gomatrixserverlib.PDU
	accept := func(join gomatrixserverlib.PDU) {
		res, err := remote.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{join}})
		if err != nil || res.Results[0].Rejected || res.Results[0].SoftFailed || res.Results[0].Error != "" {
			t.Fatalf("remote input of %s: %+v %v", join.EventID(), res, err)
		}
	}
	var ver gomatrixserverlib.RoomVersion
	for _, userID := range userIDs {
		proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID}
		if err := proto.SetContent(map[string]string{"membership": "join"}); err != nil {
			t.Fatal(err)
		}
		var err error
		if ver, _, err = remote.rs.BuildEventTemplate(ctx, &proto); err != nil {
			t.Fatal(err)
		}
		join, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventBuilderFromProtoEvent(&proto).
			Build(time.Now(), testServer, gomatrixserverlib.KeyID(local.keys.Current.ID), local.keys.Current.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if !concurrent {
			accept(join)
		}
		joins = append(joins, join)
	}
	if concurrent {
		for _, j := range joins {
			accept(j)
		}
	}
	var reqs []*api.JoinRemoteRoomRequest
	for _, join := range joins {
		state, err := remote.rs.QueryStateBeforeEvent(ctx, roomID, join.EventID())
		if err != nil {
			t.Fatal(err)
		}
		ids := []string{join.EventID()}
		for _, e := range state {
			ids = append(ids, e.EventID())
		}
		chain, err := remote.rs.QueryAuthChain(ctx, roomID, ids)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, &api.JoinRemoteRoomRequest{RoomID: roomID, RoomVersion: ver, JoinEvent: join, StateEvents: state, AuthChain: chain})
	}
	return reqs
}

// TestConcurrentRemoteJoins has several local users join a room this
// server does not know yet at about the same time, each join submitted
// more than once (as retried /join requests are), in orders that differ
// from the remote's. Each join must succeed, once, and the room's state
// here must end up with all of them, as it is on the remote.
func TestConcurrentRemoteJoins(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		remote := newRemote(t)
		local := newHarness(t, dbURL)
		alice := "@alice:" + remoteServer
		users := []string{user("bob"), user("carol"), user("dan")}
		for _, concurrent := range []bool{false, true} {
			roomID := remote.createRoom(gomatrixserverlib.RoomVersionV10, alice, "public", nil)
			reqs := remoteJoins(t, remote, local, roomID, concurrent, users...)

			// Newest first, so that (when the joins were sequential on
			// the remote) the earlier joins arrive here first as state of
			// a later one.
			var wg sync.WaitGroup
			errs := make(chan error, 3*len(reqs))
			for i := len(reqs) - 1; i >= 0; i-- {
				if err := local.rs.JoinRemoteRoom(ctx, reqs[i]); err != nil {
					t.Fatalf("concurrent=%v: join of %s: %v", concurrent, users[i], err)
				}
				for range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- local.rs.JoinRemoteRoom(ctx, reqs[i])
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("concurrent=%v: repeated join: %v", concurrent, err)
				}
			}
			for _, u := range users {
				if m, err := local.rs.QueryMembership(ctx, roomID, u); err != nil || m.Membership != spec.Join {
					t.Fatalf("concurrent=%v: membership of %s: %+v %v", concurrent, u, m, err)
				}
			}
			if got, want := stateIDSet(t, local, roomID), stateIDSet(t, remote, roomID); !equalIDs(got, want) {
				t.Fatalf("concurrent=%v: state here:\n%v\nremote has\n%v", concurrent, got, want)
			}
		}
	})
}
