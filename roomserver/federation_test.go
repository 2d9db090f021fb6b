package roomserver

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

const remoteServer = "remote.local"

// newRemote is a second roomserver, named remoteServer, on its own SQLite
// database: the "other server" whose room the harness's server joins.
func newRemote(t *testing.T) *harness {
	t.Helper()
	ctx := context.Background()
	db, err := sqlutil.Open(testdb.URL(t, "sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b, err := bus.Open(ctx, bus.Options{StoreDir: t.TempDir(), Prefix: "remote"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	key, err := signingkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ServerName = remoteServer
	h := &harness{t: t, db: db, bus: b, cfg: cfg, keys: &signingkey.Set{Current: key}}
	h.open()
	return h
}

func pdusByID(t *testing.T, h *harness, ids ...string) []gomatrixserverlib.PDU {
	t.Helper()
	evs, err := h.rs.QueryEventsByID(context.Background(), ids)
	if err != nil || len(evs) != len(ids) {
		t.Fatalf("events %v: %d found, %v", ids, len(evs), err)
	}
	return evs
}

func stateIDSet(t *testing.T, h *harness, roomID string) []string {
	t.Helper()
	evs, err := h.rs.QueryCurrentState(context.Background(), roomID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.EventID())
	}
	sort.Strings(ids)
	return ids
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// remoteJoin has the remote server accept a join of userID (signed by the
// local server's key, as send_join would) and returns the join with the
// state before it and that state's auth chain.
func remoteJoin(t *testing.T, remote, local *harness, roomID, userID string) *api.JoinRemoteRoomRequest {
	t.Helper()
	ctx := context.Background()
	proto := gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &userID}
	if err := proto.SetContent(map[string]string{"membership": "join"}); err != nil {
		t.Fatal(err)
	}
	ver, _, err := remote.rs.BuildEventTemplate(ctx, &proto)
	if err != nil {
		t.Fatal(err)
	}
	join, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventBuilderFromProtoEvent(&proto).
		Build(time.Now(), testServer, gomatrixserverlib.KeyID(local.keys.Current.ID), local.keys.Current.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	res, err := remote.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{join}})
	if err != nil || res.Results[0].Rejected || res.Results[0].Error != "" {
		t.Fatalf("remote input of the join: %+v %v", res, err)
	}
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
	return &api.JoinRemoteRoomRequest{RoomID: roomID, RoomVersion: ver, JoinEvent: join, StateEvents: state, AuthChain: chain}
}

// waitForOutput waits until the collector has an event's output.
func waitForOutput(t *testing.T, c *outputCollector, eventID string) api.OutputEvent {
	t.Helper()
	for n := 1; ; n++ {
		outs := c.waitFor(t, n)
		if o := outs[n-1]; o.EventID == eventID {
			return o
		}
	}
}

func TestJoinRemoteRoomAndFillGaps(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		remote := newRemote(t)
		local := newHarness(t, dbURL)
		out := local.collect("test")
		alice, bob := "@alice:"+remoteServer, user("bob")
		v := gomatrixserverlib.RoomVersionV10
		roomID := remote.createRoom(v, alice, "public", nil)
		remote.mustSend(roomID, alice, "m.room.topic", strp(""), map[string]any{"topic": "before bob"})
		remote.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "history"})

		// The join: state and auth chain stored as outliers, published
		// first, then the join with the whole state.
		req := remoteJoin(t, remote, local, roomID, bob)
		if err := local.rs.JoinRemoteRoom(ctx, req); err != nil {
			t.Fatalf("JoinRemoteRoom: %v", err)
		}
		if got, want := stateIDSet(t, local, roomID), stateIDSet(t, remote, roomID); !equalIDs(got, want) {
			t.Fatalf("state after the join:\n%v\nremote has\n%v", got, want)
		}
		if m, err := local.rs.QueryMembership(ctx, roomID, bob); err != nil || m.Membership != "join" {
			t.Fatalf("bob's membership: %+v %v", m, err)
		}
		if info, err := local.rs.QueryRoomInfo(ctx, roomID); err != nil || info.Stub || info.RoomVersion != v {
			t.Fatalf("room info: %+v %v", info, err)
		}
		outs := out.waitFor(t, len(req.StateEvents)+1)
		last := outs[len(outs)-1]
		if last.EventID != req.JoinEvent.EventID() || last.Outlier || len(last.AddsStateEventIDs) != len(req.StateEvents)+1 {
			t.Fatalf("join output: %+v", last)
		}
		published := map[string]bool{}
		for _, o := range outs[:len(outs)-1] {
			if !o.Outlier || !o.SoftFailed || len(o.AddsStateEventIDs) != 0 {
				t.Fatalf("outlier output: %+v", o)
			}
			published[o.EventID] = true
		}
		for _, id := range last.AddsStateEventIDs {
			if id != last.EventID && !published[id] {
				t.Fatalf("state event %s added by the join was not published before it", id)
			}
		}
		in, err := local.rs.QueryServerInRoom(ctx, roomID, remoteServer)
		if err != nil || in.JoinedMembers != 1 {
			t.Fatalf("remote server in room: %+v %v", in, err)
		}

		// A gap: m3 arrives without m2; its prev is reported missing.
		remote.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "m2"})
		m3 := remote.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "m3"})
		ev3 := pdusByID(t, remote, m3)[0]
		res, err := local.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{ev3}})
		if err != nil || len(res.Results[0].MissingPrevEvents) != 1 {
			t.Fatalf("m3 without m2: %+v %v", res, err)
		}
		// With the state before it, m3 is placed.
		before, err := remote.rs.QueryStateBeforeEvent(ctx, roomID, m3)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range before {
			ids = append(ids, e.EventID())
		}
		res, err = local.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{
			RoomID: roomID, Events: []gomatrixserverlib.PDU{ev3}, StateBefore: map[string][]string{m3: ids},
		})
		if err != nil || res.Results[0].Error != "" || res.Results[0].Rejected {
			t.Fatalf("m3 with its state: %+v %v", res, err)
		}

		// An outlier becomes usable as a prev_event once its state is given.
		topic := remote.mustSend(roomID, alice, "m.room.topic", strp(""), map[string]any{"topic": "new"})
		after := remote.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "after the topic"})
		topicEv, afterEv := pdusByID(t, remote, topic)[0], pdusByID(t, remote, after)[0]
		res, err = local.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{
			RoomID: roomID, Outliers: []gomatrixserverlib.PDU{topicEv}, Events: []gomatrixserverlib.PDU{afterEv},
		})
		if err != nil || len(res.Results[0].MissingPrevEvents) != 1 || res.Results[0].MissingPrevEvents[0] != topic {
			t.Fatalf("after an outlier prev: %+v %v", res, err)
		}
		before, err = remote.rs.QueryStateBeforeEvent(ctx, roomID, topic)
		if err != nil {
			t.Fatal(err)
		}
		ids = ids[:0]
		for _, e := range before {
			ids = append(ids, e.EventID())
		}
		res, err = local.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{
			RoomID: roomID, Events: []gomatrixserverlib.PDU{topicEv, afterEv}, StateBefore: map[string][]string{topic: ids},
		})
		if err != nil || res.Results[0].Error != "" || res.Results[1].Error != "" || res.Results[1].Rejected {
			t.Fatalf("promoted outlier and its child: %+v %v", res, err)
		}
		if _, err := local.rs.QueryStateBeforeEvent(ctx, roomID, after); err != nil {
			t.Fatalf("state before the child: %v", err)
		}

		// History queries walk the DAG.
		missing, err := remote.rs.QueryMissingEvents(ctx, roomID, []string{req.JoinEvent.EventID()}, []string{after}, 10, 0)
		if err != nil || len(missing) != 3 || missing[len(missing)-1].EventID() != topic {
			t.Fatalf("missing events between the join and %s: %d %v", after, len(missing), err)
		}
		back, err := remote.rs.QueryBackfill(ctx, roomID, []string{after}, 4)
		if err != nil || len(back) != 4 || back[0].EventID() != after || back[1].EventID() != topic {
			t.Fatalf("backfill: %d %v", len(back), err)
		}
	})
}

func TestRemoteInviteMakesStubRoom(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		remote := newRemote(t)
		local := newHarness(t, dbURL)
		out := local.collect("test")
		alice, carol := "@alice:"+remoteServer, user("carol")
		roomID := remote.createRoom(gomatrixserverlib.RoomVersionV10, alice, "invite", nil)
		inviteID := remote.mustSend(roomID, alice, "m.room.member", strp(carol), map[string]any{"membership": "invite"})
		invite := pdusByID(t, remote, inviteID)[0]

		if err := local.rs.StoreRemoteMembership(ctx, gomatrixserverlib.RoomVersionV10, invite); err != nil {
			t.Fatalf("StoreRemoteMembership: %v", err)
		}
		info, err := local.rs.QueryRoomInfo(ctx, roomID)
		if err != nil || !info.Stub {
			t.Fatalf("room info: %+v %v", info, err)
		}
		if m, err := local.rs.QueryMembership(ctx, roomID, carol); err != nil || m.Membership != "invite" || m.EventID != inviteID {
			t.Fatalf("carol: %+v %v", m, err)
		}
		if rooms, err := local.rs.QueryRoomsForUser(ctx, carol, []string{"invite"}); err != nil || len(rooms) != 1 {
			t.Fatalf("carol's invites: %v %v", rooms, err)
		}
		o := out.waitFor(t, 1)[0]
		if o.EventID != inviteID || !o.Outlier || len(o.AddsStateEventIDs) != 1 || o.AddsStateEventIDs[0] != inviteID {
			t.Fatalf("invite output: %+v", o)
		}
		// Nothing can be built on a stub room.
		if _, err := local.rs.QueryForwardExtremities(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		proto := gomatrixserverlib.ProtoEvent{SenderID: carol, RoomID: roomID, Type: spec.MRoomMember, StateKey: &carol}
		_ = proto.SetContent(map[string]string{"membership": "join"})
		if _, _, err := local.rs.BuildEventTemplate(ctx, &proto); err != api.ErrRoomNotFound {
			t.Fatalf("template in a stub room: %v", err)
		}

		// Joining after the invite replaces the stub with the room.
		req := remoteJoin(t, remote, local, roomID, carol)
		if err := local.rs.JoinRemoteRoom(ctx, req); err != nil {
			t.Fatalf("JoinRemoteRoom: %v", err)
		}
		if info, err := local.rs.QueryRoomInfo(ctx, roomID); err != nil || info.Stub {
			t.Fatalf("room info after the join: %+v %v", info, err)
		}
		if got, want := stateIDSet(t, local, roomID), stateIDSet(t, remote, roomID); !equalIDs(got, want) {
			t.Fatalf("state after the join:\n%v\nremote has\n%v", got, want)
		}
		last := waitForOutput(t, out, req.JoinEvent.EventID())
		if last.EventID != req.JoinEvent.EventID() || len(last.RemovesStateEventIDs) != 1 || last.RemovesStateEventIDs[0] != inviteID {
			t.Fatalf("join output after the invite: %+v", last)
		}
	})
}

func TestServerVisibility(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		remote := newRemote(t)
		local := newHarness(t, dbURL)
		alice := "@alice:" + remoteServer
		roomID := remote.createRoom(gomatrixserverlib.RoomVersionV10, alice, "public", nil)
		remote.mustSend(roomID, alice, "m.room.history_visibility", strp(""), map[string]any{"history_visibility": "joined"})
		before := remote.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "before"})
		remoteJoin(t, remote, local, roomID, user("bob"))
		after := remote.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "after"})

		seen, err := remote.rs.QueryServerVisibility(ctx, roomID, testServer, []string{before, after, "$unknown"})
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != 2 || seen[before] || !seen[after] {
			t.Fatalf("visibility for the joining server: %v", seen)
		}
		seen, err = remote.rs.QueryServerVisibility(ctx, roomID, remoteServer, []string{before, after})
		if err != nil || !seen[before] || !seen[after] {
			t.Fatalf("visibility for the room's own server: %v %v", seen, err)
		}
	})
}
