package roomserver

import (
	"context"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

// buildOn builds and signs an event with the given prev_events, taking its
// auth events from the room's current state, as another server would.
func (h *harness) buildOn(roomID string, version gomatrixserverlib.RoomVersion, prev []gomatrixserverlib.PDU, sender, evType string, stateKey *string, content any, ts time.Time) gomatrixserverlib.PDU {
	h.t.Helper()
	ctx := context.Background()
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: evType, StateKey: stateKey, Content: spec.RawJSON(mustJSON(content)),
	}
	var prevIDs []string
	for _, p := range prev {
		prevIDs = append(prevIDs, p.EventID())
		proto.Depth = max(proto.Depth, p.Depth()+1)
	}
	proto.PrevEvents = prevIDs
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
	if err != nil {
		h.t.Fatal(err)
	}
	state, err := h.rs.QueryCurrentState(ctx, roomID, needed.Tuples())
	if err != nil {
		h.t.Fatal(err)
	}
	authEvents := gomatrixserverlib.NewAuthEvents(state)
	refs, err := needed.AuthEventReferences(&authEvents)
	if err != nil {
		h.t.Fatal(err)
	}
	proto.AuthEvents = refs
	ev, err := gomatrixserverlib.MustGetRoomVersion(version).NewEventBuilderFromProtoEvent(proto).
		Build(ts, spec.ServerName(testServer), gomatrixserverlib.KeyID(h.keys.Current.ID), h.keys.Current.PrivateKey)
	if err != nil {
		h.t.Fatal(err)
	}
	return ev
}

func (h *harness) currentEvent(roomID, evType, stateKey string) gomatrixserverlib.PDU {
	h.t.Helper()
	evs, err := h.rs.QueryCurrentState(context.Background(), roomID, []gomatrixserverlib.StateKeyTuple{{EventType: evType, StateKey: stateKey}})
	if err != nil || len(evs) != 1 {
		h.t.Fatalf("current %s: %d events, %v", evType, len(evs), err)
	}
	return evs[0]
}

func TestForkedStateIsResolved(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		alice, bob := user("alice"), user("bob")
		roomID := h.createRoom("10", alice, "public", map[string]int{bob: 50})
		h.join(roomID, bob)
		baseID := h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "base"})
		base, err := h.rs.QueryEventsByID(ctx, []string{baseID})
		if err != nil || len(base) != 1 {
			t.Fatal(err)
		}
		now := time.Now()
		// Two branches on the same prev event. Topics: same sender power,
		// so the later origin_server_ts wins. Names: equal timestamps, so
		// the event ID order breaks the tie.
		topicA := h.buildOn(roomID, "10", base, alice, "m.room.topic", strp(""), map[string]any{"topic": "A"}, now.Add(2*time.Second))
		topicB := h.buildOn(roomID, "10", base, bob, "m.room.topic", strp(""), map[string]any{"topic": "B"}, now.Add(3*time.Second))
		nameA := h.buildOn(roomID, "10", []gomatrixserverlib.PDU{topicA}, alice, "m.room.name", strp(""), map[string]any{"name": "A"}, now.Add(4*time.Second))
		nameB := h.buildOn(roomID, "10", []gomatrixserverlib.PDU{topicB}, bob, "m.room.name", strp(""), map[string]any{"name": "B"}, now.Add(4*time.Second))
		res, err := h.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{topicA, nameA, topicB, nameB}})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res.Results {
			if r.Rejected || r.SoftFailed || r.Error != "" {
				t.Fatalf("input result %+v", r)
			}
		}

		// What state resolution v2 says, computed directly.
		stateBefore, err := h.rs.QueryStateAfterEvent(ctx, roomID, baseID, nil)
		if err != nil {
			t.Fatal(err)
		}
		var unconflicted, authChain []gomatrixserverlib.PDU
		for _, e := range stateBefore {
			if e.Type() != "m.room.topic" && e.Type() != "m.room.name" {
				unconflicted = append(unconflicted, e)
			}
		}
		authChain = append(authChain, stateBefore...)
		conflicted := []gomatrixserverlib.PDU{topicA, topicB, nameA, nameB}
		want := map[string]string{}
		for _, e := range gomatrixserverlib.ResolveStateConflictsV2(conflicted, unconflicted, authChain, userIDForSender, func(string) bool { return false }) {
			want[e.Type()] = e.EventID()
		}
		if want["m.room.topic"] != topicB.EventID() {
			t.Fatalf("library resolved topic to %s, expected the later one %s", want["m.room.topic"], topicB.EventID())
		}
		wantName := nameA.EventID()
		if nameB.EventID() > wantName {
			wantName = nameB.EventID()
		}
		if want["m.room.name"] != wantName {
			t.Fatalf("library resolved name to %s, expected the larger event ID %s", want["m.room.name"], wantName)
		}

		// The room's current state is already the resolution of its two tips.
		for _, typ := range []string{"m.room.topic", "m.room.name"} {
			if got := h.currentEvent(roomID, typ, "").EventID(); got != want[typ] {
				t.Errorf("current %s = %s, want %s", typ, got, want[typ])
			}
		}
		// A new local event merges both branches and sees the resolved state.
		mergeID := h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "merge"})
		merge, err := h.rs.QueryEventsByID(ctx, []string{mergeID})
		if err != nil || len(merge) != 1 || len(merge[0].PrevEventIDs()) != 2 {
			t.Fatalf("merge event prev_events: %v %v", merge, err)
		}
		after, err := h.rs.QueryStateAfterEvent(ctx, roomID, mergeID, []gomatrixserverlib.StateKeyTuple{{EventType: "m.room.topic"}, {EventType: "m.room.name"}})
		if err != nil || len(after) != 2 {
			t.Fatalf("state after merge: %v %v", after, err)
		}
		for _, e := range after {
			if e.EventID() != want[e.Type()] {
				t.Errorf("state after merge: %s = %s, want %s", e.Type(), e.EventID(), want[e.Type()])
			}
		}
		// Replaying the same input is harmless.
		if _, err := h.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{topicA}}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFederatedEventRejectedAndSoftFailed(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		alice, bob := user("alice"), user("bob")
		roomID := h.createRoom("10", alice, "public", nil)
		h.join(roomID, bob)
		baseID := h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "base"})
		base, _ := h.rs.QueryEventsByID(ctx, []string{baseID})
		now := time.Now()
		// Bob may not set the name: rejected.
		name := h.buildOn(roomID, "10", base, bob, "m.room.name", strp(""), map[string]any{"name": "x"}, now)
		// Bob's message built before his ban but arriving after it passes
		// auth at its place in the DAG and fails against the current state.
		msg := h.buildOn(roomID, "10", base, bob, "m.room.message", nil, map[string]any{"body": "late"}, now)
		h.mustSend(roomID, alice, "m.room.member", strp(bob), map[string]any{"membership": "ban"})
		res, err := h.rs.InputFederationEvents(ctx, &api.InputFederationEventsRequest{RoomID: roomID, Events: []gomatrixserverlib.PDU{name, msg}})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Results[0].Rejected || res.Results[1].Rejected || !res.Results[1].SoftFailed {
			t.Fatalf("results %+v", res.Results)
		}
		if evs, _ := h.rs.QueryEventsByID(ctx, []string{name.EventID()}); len(evs) != 0 {
			t.Fatalf("rejected event is served")
		}
		// The soft-failed event is not a forward extremity.
		next := h.mustSend(roomID, alice, "m.room.message", nil, map[string]any{"body": "next"})
		evs, _ := h.rs.QueryEventsByID(ctx, []string{next})
		for _, p := range evs[0].PrevEventIDs() {
			if p == msg.EventID() {
				t.Fatal("soft-failed event used as prev_event")
			}
		}
	})
}
