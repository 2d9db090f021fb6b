package roomserver

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

// JoinRemoteRoom implements api.FederationMembershipAPI.
func (s *Service) JoinRemoteRoom(ctx context.Context, req *api.JoinRemoteRoomRequest) error {
	if req.JoinEvent == nil {
		return &api.BadEventError{Reason: "no join event"}
	}
	if _, err := spec.NewRoomID(req.RoomID); err != nil {
		return &api.BadEventError{Reason: fmt.Sprintf("invalid room ID %q", req.RoomID)}
	}
	return s.submit(ctx, req.RoomID, &task{kind: taskJoin, join: req, version: req.RoomVersion})
}

// StoreRemoteMembership implements api.FederationMembershipAPI.
func (s *Service) StoreRemoteMembership(ctx context.Context, roomVersion gomatrixserverlib.RoomVersion, event gomatrixserverlib.PDU) error {
	if event == nil || event.Type() != spec.MRoomMember || event.StateKey() == nil {
		return &api.BadEventError{Reason: "not a membership event"}
	}
	t := &task{kind: taskRemoteMembership, events: []gomatrixserverlib.PDU{event}, version: roomVersion}
	return s.submit(ctx, event.RoomID().String(), t)
}

// membershipBatch runs a taskJoin or taskRemoteMembership, creating the
// room (unknown here so far) in the batch if needed.
func (s *Service) membershipBatch(ctx context.Context, rs *roomState, t *task) (*batch, error) {
	var b *batch
	if rs == nil {
		verImpl, err := gomatrixserverlib.GetRoomVersion(t.version)
		if err != nil || t.version == gomatrixserverlib.RoomVersionPseudoIDs {
			return nil, &api.BadEventError{Reason: fmt.Sprintf("unsupported room version %q", t.version)}
		}
		var id string
		if t.join != nil {
			id = t.join.RoomID
		} else {
			id = t.events[0].RoomID().String()
		}
		if b, err = s.newRoomBatch(ctx, id, verImpl); err != nil {
			return nil, err
		}
	} else if rs.verImpl.Version() != t.version {
		return nil, &api.BadEventError{Reason: fmt.Sprintf("room %s has version %s here, not %s", rs.room.RoomID, rs.verImpl.Version(), t.version)}
	} else {
		b = newBatch(s, rs)
	}
	if t.join != nil {
		return b, b.joinRemote(ctx, t.join)
	}
	return b, b.remoteMembership(ctx, t.events[0])
}

// checkEvent checks that ev belongs to the batch's room and version.
func (b *batch) checkEvent(ev gomatrixserverlib.PDU) error {
	if ev.RoomID().String() != b.room.RoomID {
		return &api.BadEventError{Reason: fmt.Sprintf("event %s is not in room %s", ev.EventID(), b.room.RoomID)}
	}
	if ev.Version() != b.rs.verImpl.Version() {
		return &api.BadEventError{Reason: fmt.Sprintf("event %s has room version %s, room has %s", ev.EventID(), ev.Version(), b.rs.verImpl.Version())}
	}
	if len(ev.JSON()) > maxEventBytes {
		return &api.BadEventError{Reason: "event too large", TooLarge: true}
	}
	return nil
}

// storeOutlier stores an event outside the DAG after checking it against
// its own auth events, which must be stored already (server-server spec
// §"Checks performed on receipt of a PDU", step 4; the caller did the
// signature and hash checks). A known event is returned as it is.
func (b *batch) storeOutlier(ctx context.Context, ev gomatrixserverlib.PDU) (*eventMeta, error) {
	if err := b.checkEvent(ev); err != nil {
		return nil, err
	}
	found, err := b.eventsByID(ctx, append([]string{ev.EventID()}, ev.AuthEventIDs()...))
	if err != nil {
		return nil, err
	}
	if k := found[ev.EventID()]; k != nil {
		return k, nil
	}
	rejected := false
	claimed := gomatrixserverlib.NewAuthEvents(nil)
	for _, id := range ev.AuthEventIDs() {
		a := found[id]
		if a == nil {
			return nil, &api.BadEventError{Reason: fmt.Sprintf("auth event %s of %s is not known", id, ev.EventID())}
		}
		if a.rejected || a.pdu.StateKey() == nil || claimed.AddEvent(a.pdu) != nil {
			rejected = true
		}
	}
	if !rejected && gomatrixserverlib.Allowed(ev, &claimed, userIDForSender) != nil {
		rejected = true
	}
	if rejected {
		logrus.WithField("event_id", ev.EventID()).Info("roomserver: outlier failed auth against its auth events")
	}
	meta, err := b.insertOutlier(ctx, ev, rejected, b.room.Snapshot)
	if err != nil {
		return nil, err
	}
	if !rejected {
		b.queueOutput(meta, nil, nil, nil)
	}
	return meta, nil
}

// insertOutlier writes an outlier's row; currentState is the room's
// current snapshot once the outlier is stored.
func (b *batch) insertOutlier(ctx context.Context, ev gomatrixserverlib.PDU, rejected bool, currentState int64) (*eventMeta, error) {
	meta := &eventMeta{roomNID: b.room.NID, id: ev.EventID(), depth: ev.Depth(), rejected: rejected, outlier: true, pdu: ev}
	if !rejected {
		b.room.LastPosition++
		meta.position = b.room.LastPosition
	}
	nid, err := b.s.eventNIDs.take(ctx)
	if err != nil {
		return nil, err
	}
	b.s.db.InsertEvent(b.w, &storage.Event{
		NID: nid, RoomNID: b.room.NID, EventID: meta.id, Type: ev.Type(), StateKey: ev.StateKey(), Sender: string(ev.SenderID()),
		Depth: meta.depth, Position: meta.position, CurrentState: currentState, Rejected: rejected, Outlier: true, JSON: ev.JSON(),
	})
	meta.nid = nid
	b.newByID[meta.id] = meta
	b.newByNID[nid] = meta
	return meta, nil
}

// stateFromIDs stores a state given as event IDs (of events stored in the
// room) as a new checkpoint snapshot.
func (b *batch) stateFromIDs(ctx context.Context, ids []string) (*snapRef, error) {
	evs, err := b.eventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	state := stateMap{}
	for _, id := range ids {
		e := evs[id]
		if e == nil || e.rejected || e.pdu.StateKey() == nil {
			return nil, &api.BadEventError{Reason: fmt.Sprintf("state event %s is not known", id)}
		}
		state[tuple{EventType: e.pdu.Type(), StateKey: *e.pdu.StateKey()}] = e.nid
	}
	r, err := b.writeSnapshot(ctx, b.allocSnapshot(), &snapRef{}, state, nil)
	if err != nil {
		return nil, err
	}
	b.snapshots[r.seq] = r
	return r, nil
}

// promoteOutlier records the state before and after an outlier, so that
// later events can have it as a prev_event. It stays out of the room's
// timeline and current state: it is history that was already reflected in
// the state this server got with it.
func (b *batch) promoteOutlier(ctx context.Context, e *eventMeta, before *snapRef) error {
	after := before.seq
	if sk := e.pdu.StateKey(); sk != nil {
		t := tuple{EventType: e.pdu.Type(), StateKey: *sk}
		r, err := b.writeSnapshot(ctx, b.allocSnapshot(), before, &overlay{base: before.state, changes: stateMap{t: e.nid}},
			[]storage.StateEntry{{Type: t.EventType, StateKey: t.StateKey, EventNID: e.nid}})
		if err != nil {
			return err
		}
		after = r.seq
	}
	b.s.db.UpdateEventState(b.w, e.nid, before.seq, after)
	promoted := *e
	promoted.stateBefore, promoted.stateAfter = before.seq, after
	b.newByID[e.id] = &promoted
	b.newByNID[e.nid] = &promoted
	return nil
}

// joinRemote stores a send_join result: auth chain and state as outliers,
// then the join on that state, replacing the room's extremities.
func (b *batch) joinRemote(ctx context.Context, req *api.JoinRemoteRoomRequest) error {
	join := req.JoinEvent
	if err := b.checkEvent(join); err != nil {
		return err
	}
	if m, err := join.Membership(); err != nil || m != spec.Join || join.Type() != spec.MRoomMember {
		return &api.BadEventError{Reason: "not a join event"}
	}
	byID := map[string]gomatrixserverlib.PDU{}
	for _, ev := range append(append([]gomatrixserverlib.PDU{}, req.AuthChain...), req.StateEvents...) {
		byID[ev.EventID()] = ev
	}
	all := make([]gomatrixserverlib.PDU, 0, len(byID))
	for _, ev := range byID {
		all = append(all, ev)
	}
	for _, ev := range gomatrixserverlib.ReverseTopologicalOrdering(all, gomatrixserverlib.TopologicalOrderByAuthEvents) {
		if _, err := b.storeOutlier(ctx, ev); err != nil {
			if !isClientError(err) {
				return err
			}
			logrus.WithError(err).WithField("event_id", ev.EventID()).Warn("roomserver: state event of a joined room left out")
		}
	}
	var ids []string
	for _, ev := range req.StateEvents {
		ids = append(ids, ev.EventID())
	}
	stored, err := b.eventsByID(ctx, append(ids, join.EventID()))
	if err != nil {
		return err
	}
	if k := stored[join.EventID()]; k != nil && !k.stateless() {
		return nil // a retried join that was stored already
	}
	var usable []string
	for _, id := range ids {
		if e := stored[id]; e != nil && !e.rejected {
			usable = append(usable, id)
		}
	}
	if len(b.ext) > 0 {
		joined, _, err := b.s.db.SelectServerMembership(ctx, b.room.NID, string(b.s.serverName))
		if err != nil {
			return err
		}
		if joined > 0 {
			return b.joinLiveRoom(ctx, join, usable)
		}
	}
	before, err := b.stateFromIDs(ctx, usable)
	if err != nil {
		return err
	}
	authEvents, err := b.authEventsFrom(ctx, before.state, gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{join}))
	if err != nil {
		return err
	}
	if err := gomatrixserverlib.Allowed(join, authEvents, userIDForSender); err != nil {
		return &api.NotAllowedError{Reason: "the join is not allowed by the room's state: " + err.Error()}
	}
	// The join is the room's only tip here: whatever this server knew of
	// the room before (as a stub, or from before it left) is superseded.
	b.ext = nil
	_, err = b.store(ctx, join, before, nil, false, false, nil)
	return err
}

// joinLiveRoom stores a send_join's join in a room this server is in
// already: another local user's join, made at about the same time, got
// here first. The room's state is live, so the join is one more event of
// its DAG, placed as a received PDU is (its state from send_join if its
// prev_events are not known here), not a new start. It may be stored
// already as an outlier, in the state of that other join: it is then
// promoted, not stored again.
func (b *batch) joinLiveRoom(ctx context.Context, join gomatrixserverlib.PDU, stateIDs []string) error {
	var res api.InputEventResult
	if err := b.inputEvent(ctx, join, stateIDs, &res); err != nil {
		return err
	}
	if res.Rejected || res.SoftFailed {
		return &api.NotAllowedError{Reason: "the join is not allowed by the room's state"}
	}
	return nil
}

// remoteMembership records a local user's membership event from another
// server in a room this server has no state for, or inputs it into a room
// it has state for.
func (b *batch) remoteMembership(ctx context.Context, ev gomatrixserverlib.PDU) error {
	if err := b.checkEvent(ev); err != nil {
		return err
	}
	if len(b.ext) > 0 {
		var res api.InputEventResult
		err := b.inputEvent(ctx, ev, nil, &res)
		if len(res.MissingPrevEvents) == 0 {
			return err
		}
		joined, _, err := b.s.db.SelectServerMembership(ctx, b.room.NID, string(b.s.serverName))
		if err != nil {
			return err
		}
		if joined > 0 {
			// This server is in the room: the event will arrive with its
			// history through a transaction.
			return nil
		}
		// The state here is stale (this server left the room); the
		// membership is recorded on top of it, as for a stub room.
	}
	known, err := b.eventsByID(ctx, []string{ev.EventID()})
	if err != nil || known[ev.EventID()] != nil {
		return err
	}
	// The invite's auth events are the inviting server's to check (spec
	// §"Inviting to a room"); this server has none of them.
	seq := b.allocSnapshot()
	meta, err := b.insertOutlier(ctx, ev, false, seq)
	if err != nil {
		return err
	}
	cur, err := b.snapshot(ctx, b.room.Snapshot)
	if err != nil {
		return err
	}
	t := tuple{EventType: ev.Type(), StateKey: *ev.StateKey()}
	delta := []storage.StateEntry{{Type: t.EventType, StateKey: t.StateKey, EventNID: meta.nid}}
	r, err := b.writeSnapshot(ctx, seq, cur, &overlay{base: b.current, changes: stateMap{t: meta.nid}}, delta)
	if err != nil {
		return err
	}
	if err := b.updateCurrentState(ctx, meta, delta, nil); err != nil {
		return err
	}
	b.room.Snapshot = seq
	b.chainLen = r.chainLen
	return nil
}

// readRoom runs fn on the room's committed state: the actor's cache if it
// has one (under its read lock), else freshly loaded. fn must not block.
func (s *Service) readRoom(ctx context.Context, roomID string, fn func(rs *roomState)) error {
	sh := s.shardFor(roomID)
	sh.mu.Lock()
	a := sh.rooms[roomID]
	sh.mu.Unlock()
	if a != nil {
		a.stateMu.RLock()
		if rs := a.state; rs != nil {
			fn(rs)
			a.stateMu.RUnlock()
			return nil
		}
		a.stateMu.RUnlock()
	}
	rs, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return err
	}
	if rs == nil {
		return api.ErrRoomNotFound
	}
	fn(rs)
	return nil
}

// BuildEventTemplate implements api.FederationMembershipAPI.
func (s *Service) BuildEventTemplate(ctx context.Context, proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.RoomVersion, []gomatrixserverlib.PDU, error) {
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
	if err != nil {
		return "", nil, &api.BadEventError{Reason: err.Error()}
	}
	var room storage.Room
	var verImpl gomatrixserverlib.IRoomVersion
	var prevs []*eventMeta
	var nids []int64
	err = s.readRoom(ctx, proto.RoomID, func(rs *roomState) {
		room, verImpl = rs.room, rs.verImpl
		b := &batch{ext: rs.extremities}
		prevs = b.latestExtremities()
		for _, t := range needed.Tuples() {
			if n, ok := rs.current[t]; ok {
				nids = append(nids, n)
			}
		}
	})
	if err != nil {
		return "", nil, err
	}
	if len(prevs) == 0 {
		return "", nil, api.ErrRoomNotFound
	}
	depth := int64(1)
	var prevIDs []string
	for _, p := range prevs {
		prevIDs = append(prevIDs, p.id)
		depth = max(depth, p.depth+1)
	}
	proto.PrevEvents = prevIDs
	proto.Depth = min(depth, maxDepth)
	state, err := s.pdusByNID(ctx, &room, verImpl, nids)
	if err != nil {
		return "", nil, err
	}
	provider := gomatrixserverlib.NewAuthEvents(state)
	refs, err := needed.AuthEventReferences(&provider)
	if err != nil {
		return "", nil, err
	}
	proto.AuthEvents = refs
	return verImpl.Version(), state, nil
}

// QueryStateBeforeEvent implements api.FederationMembershipAPI.
func (s *Service) QueryStateBeforeEvent(ctx context.Context, roomID, eventID string) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.SelectEventsByID(ctx, s.db.DB, []string{eventID})
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 || rows[0].RoomNID != room.NID || rows[0].Rejected || (rows[0].Outlier && rows[0].StateAfter == 0) {
		return nil, api.ErrEventNotFound
	}
	state, _, err := loadSnapshot(ctx, s.db, s.db.DB, room.NID, rows[0].StateBefore)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(state))
	for _, n := range state {
		nids = append(nids, n)
	}
	return s.pdusByNID(ctx, room, verImpl, nids)
}

// QueryAuthChain implements api.FederationMembershipAPI.
func (s *Service) QueryAuthChain(ctx context.Context, roomID string, eventIDs []string) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r := s.reader(room, verImpl)
	found, err := r.eventsByID(ctx, eventIDs)
	if err != nil {
		return nil, err
	}
	var start []gomatrixserverlib.PDU
	for _, id := range eventIDs {
		if e := found[id]; e != nil {
			start = append(start, e.pdu)
		}
	}
	chain, err := r.authChain(ctx, start)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.ReverseTopologicalOrdering(chain, gomatrixserverlib.TopologicalOrderByAuthEvents), nil
}

// walkPrevEvents visits events reachable through prev_events from the
// given IDs, deepest first, until visit says stop or none are left; visit
// also says whether to go on past the event. Events not stored here,
// rejected, or in another room end that branch.
func (s *Service) walkPrevEvents(ctx context.Context, r *batch, from []string, visit func(e *eventMeta) (descend, more bool)) error {
	seen := map[string]bool{}
	var frontier []*eventMeta
	add := func(ids []string) error {
		var want []string
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		found, err := r.eventsByID(ctx, want)
		if err != nil {
			return err
		}
		for _, id := range want {
			if e := found[id]; e != nil && !e.rejected {
				frontier = append(frontier, e)
			}
		}
		sort.Slice(frontier, func(i, j int) bool { return frontier[i].depth > frontier[j].depth })
		return nil
	}
	if err := add(from); err != nil {
		return err
	}
	for len(frontier) > 0 {
		e := frontier[0]
		frontier = frontier[1:]
		descend, more := visit(e)
		if !more {
			return nil
		}
		if !descend {
			continue
		}
		if err := add(e.pdu.PrevEventIDs()); err != nil {
			return err
		}
	}
	return nil
}

// QueryBackfill implements api.FederationMembershipAPI.
func (s *Service) QueryBackfill(ctx context.Context, roomID string, fromEventIDs []string, limit int) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	var out []gomatrixserverlib.PDU
	err = s.walkPrevEvents(ctx, s.reader(room, verImpl), fromEventIDs, func(e *eventMeta) (bool, bool) {
		out = append(out, e.pdu)
		return true, len(out) < limit
	})
	return out, err
}

// QueryMissingEvents implements api.FederationMembershipAPI.
func (s *Service) QueryMissingEvents(ctx context.Context, roomID string, earliest, latest []string, limit int, minDepth int64) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	stop := map[string]bool{}
	for _, id := range earliest {
		stop[id] = true
	}
	isLatest := map[string]bool{}
	for _, id := range latest {
		isLatest[id] = true
	}
	var out []gomatrixserverlib.PDU
	err = s.walkPrevEvents(ctx, s.reader(room, verImpl), latest, func(e *eventMeta) (bool, bool) {
		if stop[e.id] || e.depth < minDepth {
			// Not wanted, nor anything before it on this branch.
			return false, true
		}
		if !isLatest[e.id] {
			out = append(out, e.pdu)
		}
		return true, len(out) < limit
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Depth() < out[j].Depth() })
	return out, nil
}

// QueryServerInRoom implements api.FederationMembershipAPI.
func (s *Service) QueryServerInRoom(ctx context.Context, roomID, serverName string) (*api.ServerInRoom, error) {
	room, _, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	joined, was, err := s.db.SelectServerMembership(ctx, room.NID, serverName)
	if err != nil {
		return nil, err
	}
	return &api.ServerInRoom{JoinedMembers: joined, WasJoined: was}, nil
}

// QueryForwardExtremities implements api.FederationMembershipAPI.
func (s *Service) QueryForwardExtremities(ctx context.Context, roomID string) ([]gomatrixserverlib.PDU, error) {
	var out []gomatrixserverlib.PDU
	err := s.readRoom(ctx, roomID, func(rs *roomState) {
		for _, e := range rs.extremities {
			out = append(out, e.pdu)
		}
	})
	return out, err
}

// QueryServerVisibility implements api.FederationMembershipAPI. The state
// before each event is read once per distinct snapshot; an outlier with no
// state of its own is judged by the room's current state.
func (s *Service) QueryServerVisibility(ctx context.Context, roomID, serverName string, eventIDs []string) (map[string]bool, error) {
	room, verImpl, err := s.room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.SelectEventsByID(ctx, s.db.DB, eventIDs)
	if err != nil {
		return nil, err
	}
	r := s.reader(room, verImpl)
	bySnapshot := map[int64]bool{}
	out := make(map[string]bool, len(rows))
	for _, row := range rows {
		if row.RoomNID != room.NID || row.Rejected {
			continue
		}
		seq := row.StateBefore
		if row.Outlier && row.StateAfter == 0 {
			seq = room.Snapshot
		}
		visible, ok := bySnapshot[seq]
		if !ok {
			if visible, err = s.serverSeesAt(ctx, r, room.NID, seq, serverName); err != nil {
				return nil, err
			}
			bySnapshot[seq] = visible
		}
		out[row.EventID] = visible
	}
	return out, nil
}

// serverSeesAt applies the history visibility of a state to a server.
func (s *Service) serverSeesAt(ctx context.Context, r *batch, roomNID, seq int64, serverName string) (bool, error) {
	state, _, err := loadSnapshot(ctx, s.db, s.db.DB, roomNID, seq)
	if err != nil {
		return false, err
	}
	visibility := gomatrixserverlib.HistoryVisibilityShared
	if nid, ok := state[tuple{EventType: spec.MRoomHistoryVisibility}]; ok {
		evs, err := r.eventsByNID(ctx, []int64{nid})
		if err != nil {
			return false, err
		}
		if e := evs[nid]; e != nil {
			if v, err := e.pdu.HistoryVisibility(); err == nil {
				visibility = v
			}
		}
	}
	if visibility == gomatrixserverlib.HistoryVisibilityShared || visibility == gomatrixserverlib.HistoryVisibilityWorldReadable {
		return true, nil
	}
	suffix := ":" + serverName
	var nids []int64
	for t, nid := range state {
		if t.EventType == spec.MRoomMember && strings.HasSuffix(t.StateKey, suffix) {
			nids = append(nids, nid)
		}
	}
	evs, err := r.eventsByNID(ctx, nids)
	if err != nil {
		return false, err
	}
	for _, e := range evs {
		m, err := e.pdu.Membership()
		if err == nil && (m == spec.Join || (m == spec.Invite && visibility == gomatrixserverlib.HistoryVisibilityInvited)) {
			return true, nil
		}
	}
	return false, nil
}
