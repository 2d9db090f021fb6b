package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

const (
	// maxPrevEvents caps prev_events of a local event.
	maxPrevEvents = 10
	// maxDepth is the largest integer canonical JSON allows
	// (server-server spec §"Canonical JSON").
	maxDepth = 1<<53 - 1
	// maxEventBytes is the spec's size limit of an event's JSON
	// (client-server spec §"Size limits").
	maxEventBytes = 65536
	// maxAuthCacheSenders bounds a room's cached auth event selections.
	maxAuthCacheSenders = 1024
)

// roomState is a room's committed state, cached by its actor.
type roomState struct {
	room        storage.Room
	verImpl     gomatrixserverlib.IRoomVersion
	extremities []*eventMeta
	current     stateMap
	chainLen    int
	// published is the room position up to which output is known to be
	// on the bus (room.PublishedPosition is its lazily stored copy).
	published int64
	// authCache holds, per sender, the auth events of a non-state event
	// on the current state; only the actor uses it.
	authCache map[string]*cachedAuthEvents
}

// cachedAuthEvents are the auth events selected for an event and their IDs.
type cachedAuthEvents struct {
	events *gomatrixserverlib.AuthEvents
	refs   []string
}

func (rs *roomState) size() int { return len(rs.current) }

// loadRoom reads a room's state for its actor; nil if the room is unknown.
func (s *Service) loadRoom(ctx context.Context, roomID string) (*roomState, error) {
	room, err := s.db.SelectRoom(ctx, s.db.DB, roomID)
	if err != nil || room == nil {
		return nil, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, err
	}
	current, chainLen, err := loadSnapshot(ctx, s.db, s.db.DB, room.NID, room.Snapshot)
	if err != nil {
		return nil, fmt.Errorf("load state of %s: %w", roomID, err)
	}
	rs := &roomState{room: *room, verImpl: verImpl, current: current, chainLen: chainLen, published: room.PublishedPosition}
	b := &batch{s: s, q: s.db.DB, rs: rs, room: *room}
	found, err := b.eventsByID(ctx, room.Extremities)
	if err != nil {
		return nil, err
	}
	for _, id := range room.Extremities {
		e := found[id]
		if e == nil {
			return nil, fmt.Errorf("room %s: forward extremity %s is missing", roomID, id)
		}
		rs.extremities = append(rs.extremities, e)
	}
	return rs, nil
}

// batch is the work of one commit on one room: the room's committed state
// plus what this batch changed, applied to the cache only once the batch's
// writes commit. A batch reads committed rows (its room has no other
// writer) and records its writes in w; what it wrote it finds in its own
// maps (newByID, written, pendingRedactions, txns), never in the database.
type batch struct {
	s  *Service
	q  storage.Querier
	w  *storage.Writes
	rs *roomState

	room     storage.Room
	ext      []*eventMeta
	current  *overlay
	chainLen int

	// newByID and newByNID hold the events this batch stored or changed
	// (promoted, redacted).
	newByID   map[string]*eventMeta
	newByNID  map[int64]*eventMeta
	snapshots map[int64]*snapRef
	// written holds the snapshots this batch wrote, by number.
	written map[int64]*storage.Snapshot
	// pendingRedactions maps a target event ID to the redactions this
	// batch stored without applying them (their target was unknown).
	pendingRedactions map[string][]string
	txns              map[storage.TxnKey]string
	// storedTxns holds the transactions of the batch's sends looked up
	// together when the batch started: found ones map to their event ID,
	// the others to "".
	storedTxns map[storage.TxnKey]string
	outputs    []*api.OutputEvent
	// redactedAny says whether the batch redacted a stored event.
	redactedAny bool
}

func newBatch(s *Service, rs *roomState) *batch {
	return &batch{
		s: s, q: s.db.DB, w: &storage.Writes{}, rs: rs,
		room:              rs.room,
		ext:               append([]*eventMeta(nil), rs.extremities...),
		current:           &overlay{base: rs.current, changes: stateMap{}},
		chainLen:          rs.chainLen,
		newByID:           map[string]*eventMeta{},
		newByNID:          map[int64]*eventMeta{},
		snapshots:         map[int64]*snapRef{},
		written:           map[int64]*storage.Snapshot{},
		pendingRedactions: map[string][]string{},
		txns:              map[storage.TxnKey]string{},
	}
}

// isClientError says whether err is about the input itself (reported to
// its caller alone) rather than a failure of the batch.
func isClientError(err error) bool {
	var na *api.NotAllowedError
	var be *api.BadEventError
	return errors.As(err, &na) || errors.As(err, &be) || errors.Is(err, api.ErrRoomExists) || errors.Is(err, api.ErrRoomNotFound)
}

// processBatch prepares tasks of one room as one batch outside any
// transaction (reads, building, signing, auth), then has its writes
// committed, possibly in a transaction shared with other rooms' batches,
// and moves the room's cached state on. It returns the output to publish.
func (s *Service) processBatch(ctx context.Context, a *roomActor, tasks []*task) []*api.OutputEvent {
	if s.testHookBatch != nil {
		s.testHookBatch(a.roomID)
	}
	fail := func(err error) {
		for _, t := range tasks {
			if t.err == nil {
				t.err = err
			}
		}
	}
	if a.state == nil {
		rs, err := s.loadRoom(ctx, a.roomID)
		if err != nil {
			logrus.WithError(err).WithField("room_id", a.roomID).Error("roomserver: load room")
			for _, t := range tasks {
				if t.kind == taskPublish {
					s.markUnpublished(a.roomID)
				}
			}
			fail(fmt.Errorf("load room %s: %w", a.roomID, err))
			return nil
		}
		a.stateMu.Lock()
		a.state = rs
		a.stateMu.Unlock()
	}
	rs := a.state
	if rs != nil {
		// Anything left unpublished goes out before this batch's output.
		s.publish(ctx, rs, nil)
	}
	var work []*task
	for _, t := range tasks {
		switch {
		case t.kind == taskPublish:
		case t.ctx.Err() != nil:
			t.err = t.ctx.Err()
		case t.kind == taskCreate && rs != nil:
			t.err = api.ErrRoomExists
		case t.kind != taskCreate && t.kind != taskJoin && t.kind != taskRemoteMembership && rs == nil:
			t.err = api.ErrRoomNotFound
		default:
			work = append(work, t)
		}
	}
	if len(work) == 0 {
		return nil
	}
	var b *batch
	var err error
	switch work[0].kind {
	case taskCreate:
		b, err = s.createRoom(ctx, work[0])
	case taskJoin, taskRemoteMembership:
		b, err = s.membershipBatch(ctx, rs, work[0])
	default:
		b = newBatch(s, rs)
		err = b.run(ctx, work)
	}
	// A batch that stored nothing (repeated transactions, refused events)
	// has nothing to commit.
	if err == nil && b.w.Len() > 0 {
		b.room.PublishedPosition = b.rs.published
		s.db.UpdateRoom(b.w, &b.room)
		if s.testHookWrites != nil {
			s.testHookWrites(a.roomID, b.w)
		}
		if err = s.commits.commit(a.roomID, b.w); err != nil {
			err = fmt.Errorf("store events in %s: %w", a.roomID, err)
		}
	}
	if err != nil {
		fail(err)
		// The cache may be ahead of what was stored: reload next time.
		a.stateMu.Lock()
		a.state = nil
		a.stateMu.Unlock()
		return nil
	}
	a.stateMu.Lock()
	b.apply()
	a.state = b.rs
	a.stateMu.Unlock()
	for _, e := range b.newByNID {
		s.events.put(e)
	}
	return b.outputs
}

// apply moves the committed batch into the room's cached state.
func (b *batch) apply() {
	if len(b.current.changes) > 0 || b.redactedAny {
		// Auth events were selected from the state, or are events this
		// batch redacted.
		b.rs.authCache = nil
	}
	for t, n := range b.current.changes {
		if n == 0 {
			delete(b.rs.current, t)
		} else {
			b.rs.current[t] = n
		}
	}
	b.rs.room = b.room
	b.rs.extremities = b.ext
	b.rs.chainLen = b.chainLen
}

func (b *batch) run(ctx context.Context, tasks []*task) error {
	var keys []storage.TxnKey
	for _, t := range tasks {
		if t.kind == taskSend && t.send.TransactionID != nil {
			keys = append(keys, txnKey(t.send))
		}
	}
	if len(keys) > 1 {
		found, err := b.s.db.SelectTransactionEvents(ctx, b.q, b.room.NID, keys)
		if err != nil {
			return err
		}
		b.storedTxns = make(map[storage.TxnKey]string, len(keys))
		for _, k := range keys {
			b.storedTxns[k] = found[k]
		}
	}
	for _, t := range tasks {
		var err error
		switch t.kind {
		case taskSend:
			var id string
			id, err = b.sendLocal(ctx, t.send)
			t.eventIDs = []string{id}
		case taskInput:
			t.results, err = b.inputEvents(ctx, t)
		}
		if err != nil {
			if !isClientError(err) {
				return err
			}
			t.err = err
		}
	}
	return nil
}

// createRoom stores a new room's initial events, each on top of the one
// before. The actor checked that the room is not known.
func (s *Service) createRoom(ctx context.Context, t *task) (*batch, error) {
	req := t.create
	verImpl, err := gomatrixserverlib.GetRoomVersion(req.RoomVersion)
	if err != nil {
		return nil, &api.BadEventError{Reason: fmt.Sprintf("unsupported room version %q", req.RoomVersion)}
	}
	b, err := s.newRoomBatch(ctx, req.RoomID, verImpl)
	if err != nil {
		return nil, err
	}
	for i := range req.Events {
		id, err := b.sendLocal(ctx, &api.SendEventRequest{RoomID: req.RoomID, Event: req.Events[i]})
		if err != nil {
			return nil, err
		}
		t.eventIDs = append(t.eventIDs, id)
	}
	return b, nil
}

// newRoomBatch starts the batch that creates a room not known here.
func (s *Service) newRoomBatch(ctx context.Context, roomID string, verImpl gomatrixserverlib.IRoomVersion) (*batch, error) {
	nid, err := s.roomNIDs.take(ctx)
	if err != nil {
		return nil, err
	}
	version := string(verImpl.Version())
	b := newBatch(s, &roomState{
		room:    storage.Room{NID: nid, RoomID: roomID, Version: version},
		verImpl: verImpl,
		current: stateMap{},
	})
	s.db.InsertRoom(b.w, nid, roomID, version)
	return b, nil
}

// latestExtremities returns the prev_events for a new local event: the
// deepest forward extremities, at most maxPrevEvents.
func (b *batch) latestExtremities() []*eventMeta {
	prevs := append([]*eventMeta(nil), b.ext...)
	sort.SliceStable(prevs, func(i, j int) bool { return prevs[i].depth > prevs[j].depth })
	if len(prevs) > maxPrevEvents {
		prevs = prevs[:maxPrevEvents]
	}
	return prevs
}

// sendLocal builds, signs, authorises and stores a local user's event.
func (b *batch) sendLocal(ctx context.Context, req *api.SendEventRequest) (string, error) {
	tmpl := &req.Event
	var key storage.TxnKey
	if txn := req.TransactionID; txn != nil {
		key = txnKey(req)
		if id, ok := b.txns[key]; ok {
			return id, nil
		}
		id, known := b.storedTxns[key]
		if !known {
			var err error
			if id, err = b.s.db.SelectTransactionEvent(ctx, b.q, b.room.NID, tmpl.Sender, txn.DeviceID, txn.TxnID); err != nil {
				return "", err
			}
		}
		if id != "" {
			return id, nil
		}
	}
	prevs := b.latestExtremities()
	var before *snapRef
	var err error
	if len(prevs) == len(b.ext) && len(prevs) > 1 {
		// On all the room's tips the state before is the current state,
		// which already is their resolution.
		before, err = b.snapshot(ctx, b.room.Snapshot)
	} else {
		before, err = b.stateBefore(ctx, prevs)
	}
	if err != nil {
		return "", err
	}
	ev, authEvents, err := b.build(ctx, tmpl, prevs, before)
	if err != nil {
		return "", err
	}
	if err := gomatrixserverlib.Allowed(ev, authEvents, userIDForSender); err != nil {
		return "", &api.NotAllowedError{Reason: err.Error()}
	}
	if ev.Type() == spec.MRoomRedaction {
		if err := b.checkLocalRedaction(ctx, ev, authEvents); err != nil {
			return "", err
		}
	}
	if _, err := b.store(ctx, ev, before, prevs, false, false, req.TransactionID); err != nil {
		return "", err
	}
	if req.TransactionID != nil {
		b.txns[key] = ev.EventID()
	}
	return ev.EventID(), nil
}

func txnKey(req *api.SendEventRequest) storage.TxnKey {
	return storage.TxnKey{Sender: req.Event.Sender, Device: req.TransactionID.DeviceID, TxnID: req.TransactionID.TxnID}
}

// build turns a template into a signed event on top of prevs.
func (b *batch) build(ctx context.Context, tmpl *api.EventTemplate, prevs []*eventMeta, before *snapRef) (gomatrixserverlib.PDU, *gomatrixserverlib.AuthEvents, error) {
	sender, err := spec.NewUserID(tmpl.Sender, true)
	if err != nil {
		return nil, nil, &api.BadEventError{Reason: fmt.Sprintf("invalid sender %q", tmpl.Sender)}
	}
	if sender.Domain() != b.s.serverName {
		return nil, nil, &api.BadEventError{Reason: fmt.Sprintf("sender %s is not a local user", tmpl.Sender)}
	}
	if tmpl.Type == "" {
		return nil, nil, &api.BadEventError{Reason: "missing event type"}
	}
	content := tmpl.Content
	if len(content) == 0 {
		content = json.RawMessage("{}")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(content, &fields); err != nil || fields == nil {
		return nil, nil, &api.BadEventError{Reason: "content must be a JSON object"}
	}
	redacts := tmpl.Redacts
	if tmpl.Type == spec.MRoomRedaction {
		if redacts == "" {
			_ = json.Unmarshal(fields["redacts"], &redacts)
		}
		if redacts == "" {
			return nil, nil, &api.BadEventError{Reason: "a redaction needs the ID of the event it redacts"}
		}
		// Room version 11 moved redacts into content (room versions §v11);
		// older versions read the top-level key, which is set in all.
		if b.rs.verImpl.Version() == gomatrixserverlib.RoomVersionV11 {
			fields["redacts"], _ = json.Marshal(redacts)
			content, _ = json.Marshal(fields)
		}
	} else {
		redacts = ""
	}
	depth := int64(1)
	prevIDs := make([]string, 0, len(prevs))
	for _, p := range prevs {
		prevIDs = append(prevIDs, p.id)
		depth = max(depth, p.depth+1)
	}
	depth = min(depth, maxDepth)
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID:   tmpl.Sender,
		RoomID:     b.room.RoomID,
		Type:       tmpl.Type,
		StateKey:   tmpl.StateKey,
		Content:    spec.RawJSON(content),
		Redacts:    redacts,
		PrevEvents: prevIDs,
		Depth:      depth,
	}
	authEvents, refs, err := b.authEventsFor(ctx, proto, before)
	if err != nil {
		return nil, nil, err
	}
	proto.AuthEvents = refs
	ts := time.Now()
	if tmpl.OriginServerTS > 0 {
		ts = time.UnixMilli(tmpl.OriginServerTS)
	}
	ev, err := signEvent(b.rs.verImpl, proto, ts, b.s.serverName, b.s.keyID, b.s.privateKey)
	if err != nil {
		var ve gomatrixserverlib.EventValidationError
		tooLarge := errors.As(err, &ve) && ve.Code == gomatrixserverlib.EventValidationTooLarge
		return nil, nil, &api.BadEventError{Reason: err.Error(), TooLarge: tooLarge}
	}
	// CheckFields in Build enforces the same limit; this keeps the promise
	// independent of the library.
	if len(ev.JSON()) > maxEventBytes {
		return nil, nil, &api.BadEventError{Reason: fmt.Sprintf("event is %d bytes, more than %d", len(ev.JSON()), maxEventBytes), TooLarge: true}
	}
	return ev, authEvents, nil
}

// authEventsFor selects the auth events of a local event from the state
// before it (auth rules §"Auth events selection"). A non-state event needs
// the create event, the power levels and its sender's membership whatever
// its type, so on the room's committed current state the selection is
// cached per sender until the current state changes.
func (b *batch) authEventsFor(ctx context.Context, proto *gomatrixserverlib.ProtoEvent, before *snapRef) (*gomatrixserverlib.AuthEvents, []string, error) {
	cacheable := proto.StateKey == nil && proto.Type != spec.MRoomMember &&
		before.state == stateReader(b.current) && len(b.current.changes) == 0
	if c := b.rs.authCache[proto.SenderID]; cacheable && c != nil {
		return c.events, c.refs, nil
	}
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
	if err != nil {
		return nil, nil, &api.BadEventError{Reason: err.Error()}
	}
	authEvents, err := b.authEventsFrom(ctx, before.state, needed)
	if err != nil {
		return nil, nil, err
	}
	refs, err := needed.AuthEventReferences(authEvents)
	if err != nil {
		return nil, nil, err
	}
	if cacheable {
		if b.rs.authCache == nil || len(b.rs.authCache) >= maxAuthCacheSenders {
			b.rs.authCache = map[string]*cachedAuthEvents{}
		}
		b.rs.authCache[proto.SenderID] = &cachedAuthEvents{events: authEvents, refs: refs}
	}
	return authEvents, refs, nil
}

// redactsOf returns the event a redaction targets: content.redacts in room
// version 11, the top-level key before.
func redactsOf(ev gomatrixserverlib.PDU) string {
	if ev.Version() == gomatrixserverlib.RoomVersionV11 {
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(ev.Content(), &c) == nil && c.Redacts != "" {
			return c.Redacts
		}
	}
	return ev.Redacts()
}

// checkLocalRedaction applies the client-server rule for redactions
// (client-server spec §"Redactions"): users may redact their own events;
// others' need the power level "redact".
func (b *batch) checkLocalRedaction(ctx context.Context, ev gomatrixserverlib.PDU, authEvents *gomatrixserverlib.AuthEvents) error {
	target := redactsOf(ev)
	found, err := b.eventsByID(ctx, []string{target})
	if err != nil {
		return err
	}
	if t := found[target]; t != nil && t.pdu.SenderID() == ev.SenderID() {
		return nil
	}
	if b.hasRedactPower(ev.SenderID(), authEvents) {
		return nil
	}
	return &api.NotAllowedError{Reason: "you may only redact your own events without the power level to redact others'"}
}

func (b *batch) hasRedactPower(sender spec.SenderID, authEvents gomatrixserverlib.AuthEventProvider) bool {
	create, _ := authEvents.Create()
	creator := ""
	if create != nil {
		creator = string(create.SenderID())
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(authEvents, creator)
	return err == nil && pl.UserLevel(sender) >= pl.Redact
}

// snapshot returns one of the room's snapshots, materialized.
func (b *batch) snapshot(ctx context.Context, seq int64) (*snapRef, error) {
	if seq == b.room.Snapshot {
		return &snapRef{seq: seq, chainLen: b.chainLen, state: b.current}, nil
	}
	if r := b.snapshots[seq]; r != nil {
		return r, nil
	}
	if w := b.written[seq]; w != nil {
		// Written by this batch, so not in the database yet: its parent
		// (if it is a delta) plus its entries.
		m := stateMap{}
		if w.Parent != 0 {
			parent, err := b.snapshot(ctx, w.Parent)
			if err != nil {
				return nil, err
			}
			m = make(stateMap, parent.state.size())
			parent.state.each(func(t tuple, n int64) { m[t] = n })
		}
		for _, e := range w.Entries {
			t := tuple{EventType: e.Type, StateKey: e.StateKey}
			if e.EventNID == 0 {
				delete(m, t)
			} else {
				m[t] = e.EventNID
			}
		}
		r := &snapRef{seq: seq, chainLen: w.ChainLen, state: m}
		b.snapshots[seq] = r
		return r, nil
	}
	m, chainLen, err := loadSnapshot(ctx, b.s.db, b.q, b.room.NID, seq)
	if err != nil {
		return nil, err
	}
	r := &snapRef{seq: seq, chainLen: chainLen, state: m}
	b.snapshots[seq] = r
	return r, nil
}

// stateBefore returns the state before an event with prev_events prevs:
// the state after the one prev, or the resolution of the states after
// several, stored as a new snapshot.
func (b *batch) stateBefore(ctx context.Context, prevs []*eventMeta) (*snapRef, error) {
	var seqs []int64
	seen := map[int64]bool{}
	for _, p := range prevs {
		if !seen[p.stateAfter] {
			seen[p.stateAfter] = true
			seqs = append(seqs, p.stateAfter)
		}
	}
	switch len(seqs) {
	case 0:
		return &snapRef{state: stateMap{}}, nil
	case 1:
		return b.snapshot(ctx, seqs[0])
	}
	var refs []*snapRef
	var states []stateReader
	for _, seq := range seqs {
		r, err := b.snapshot(ctx, seq)
		if err != nil {
			return nil, err
		}
		refs = append(refs, r)
		states = append(states, r.state)
	}
	resolved, err := b.resolveStates(ctx, states)
	if err != nil {
		return nil, err
	}
	seq := b.allocSnapshot()
	r, err := b.writeSnapshot(ctx, seq, refs[0], resolved, nil)
	if err != nil {
		return nil, err
	}
	b.snapshots[seq] = r
	return r, nil
}

func (b *batch) allocSnapshot() int64 {
	b.room.LastSnapshot++
	return b.room.LastSnapshot
}

// writeSnapshot stores state as snapshot seq: a delta on parent, or a
// checkpoint when the parent's chain is long enough.
// delta, when known, is what state changes in parent (nil: compute it).
func (b *batch) writeSnapshot(ctx context.Context, seq int64, parent *snapRef, state stateReader, delta []storage.StateEntry) (*snapRef, error) {
	snap := &storage.Snapshot{Snapshot: seq, Size: state.size()}
	if parent.seq == 0 || parent.chainLen+1 >= checkpointInterval(snap.Size) {
		snap.Entries = diffStates(stateMap{}, state)
	} else {
		snap.Parent = parent.seq
		snap.ChainLen = parent.chainLen + 1
		snap.Entries = delta
		if delta == nil {
			snap.Entries = diffStates(parent.state, state)
		}
	}
	b.s.db.InsertSnapshot(b.w, b.room.NID, snap)
	b.written[seq] = snap
	return &snapRef{seq: seq, chainLen: snap.ChainLen, state: state}, nil
}

// store persists an event that passed (or, when rejected, failed) auth
// and moves the room's extremities and current state on.
func (b *batch) store(ctx context.Context, ev gomatrixserverlib.PDU, before *snapRef, prevs []*eventMeta, rejected, softFailed bool, txn *api.TransactionID) (*eventMeta, error) {
	meta := &eventMeta{
		roomNID: b.room.NID, id: ev.EventID(), depth: ev.Depth(), stateBefore: before.seq, stateAfter: before.seq,
		rejected: rejected, softFailed: softFailed, pdu: ev,
	}
	accepted := !rejected && !softFailed
	isState := ev.StateKey() != nil && !rejected
	if !rejected {
		b.room.LastPosition++
		meta.position = b.room.LastPosition
	}
	if isState {
		meta.stateAfter = b.allocSnapshot()
	}
	// The new forward extremities: the event replaces its prev_events.
	newExt := b.ext
	if accepted {
		isPrev := map[string]bool{}
		for _, p := range prevs {
			isPrev[p.id] = true
		}
		newExt = []*eventMeta{meta}
		for _, e := range b.ext {
			if !isPrev[e.id] {
				newExt = append(newExt, e)
			}
		}
	}
	// The room's current state afterwards: unchanged, the state after this
	// event, or (when the DAG has several tips) their resolution.
	oldCurrent := b.room.Snapshot
	newCurrent := oldCurrent
	resolve := false
	if accepted {
		tips := map[int64]bool{}
		for _, e := range newExt {
			tips[e.stateAfter] = true
		}
		if len(tips) == 1 {
			newCurrent = meta.stateAfter
		} else {
			newCurrent = b.allocSnapshot()
			resolve = true
		}
	}
	row := &storage.Event{
		RoomNID: b.room.NID, EventID: meta.id, Type: ev.Type(), StateKey: ev.StateKey(), Sender: string(ev.SenderID()),
		Depth: meta.depth, Position: meta.position, StateBefore: meta.stateBefore, StateAfter: meta.stateAfter,
		CurrentState: newCurrent, Rejected: rejected, SoftFailed: softFailed, JSON: ev.JSON(),
	}
	if txn != nil {
		row.TxnDevice, row.TxnID = txn.DeviceID, txn.TxnID
	}
	nid, err := b.s.eventNIDs.take(ctx)
	if err != nil {
		return nil, err
	}
	row.NID = nid
	b.s.db.InsertEvent(b.w, row)
	meta.nid = nid
	b.newByID[meta.id] = meta
	b.newByNID[nid] = meta

	// after is not kept in b.snapshots: its state is a view over before,
	// which may be the batch's live current state.
	after := before
	var delta []storage.StateEntry
	if isState {
		t := tuple{EventType: ev.Type(), StateKey: *ev.StateKey()}
		delta = []storage.StateEntry{{Type: t.EventType, StateKey: t.StateKey, EventNID: nid}}
		afterState := &overlay{base: before.state, changes: stateMap{t: nid}}
		if after, err = b.writeSnapshot(ctx, meta.stateAfter, before, afterState, delta); err != nil {
			return nil, err
		}
	}

	var currentDiff []storage.StateEntry
	switch {
	case newCurrent == oldCurrent:
	case !resolve && before.seq == oldCurrent:
		// The common case: the event extends the room's only tip.
		currentDiff = delta
		b.chainLen = after.chainLen
	default:
		var target *snapRef
		if resolve {
			var states []stateReader
			for _, e := range newExt {
				r, err := b.snapshot(ctx, e.stateAfter)
				if err != nil {
					return nil, err
				}
				states = append(states, r.state)
			}
			resolved, err := b.resolveStates(ctx, states)
			if err != nil {
				return nil, err
			}
			cur, _ := b.snapshot(ctx, oldCurrent)
			if target, err = b.writeSnapshot(ctx, newCurrent, cur, resolved, nil); err != nil {
				return nil, err
			}
		} else {
			target = after
		}
		currentDiff = diffStates(b.current, target.state)
		b.chainLen = target.chainLen
	}
	if err := b.updateCurrentState(ctx, meta, currentDiff, txn); err != nil {
		return nil, err
	}
	b.room.Snapshot = newCurrent
	b.ext = newExt
	b.room.Extremities = make([]string, len(newExt))
	for i, e := range newExt {
		b.room.Extremities[i] = e.id
	}

	if accepted && ev.Type() == spec.MRoomRedaction {
		if err := b.recordRedaction(ctx, meta, before); err != nil {
			return nil, err
		}
	}
	return meta, nil
}

// updateCurrentState applies a change of the room's current state to the
// batch's view and the memberships table, and queues the event's output.
func (b *batch) updateCurrentState(ctx context.Context, meta *eventMeta, diff []storage.StateEntry, txn *api.TransactionID) error {
	var nids []int64
	for _, d := range diff {
		t := tuple{EventType: d.Type, StateKey: d.StateKey}
		if old, ok := b.current.get(t); ok {
			nids = append(nids, old)
		}
		if d.EventNID != 0 {
			nids = append(nids, d.EventNID)
		}
	}
	evs, err := b.eventsByNID(ctx, nids)
	if err != nil {
		return err
	}
	var adds, removes []string
	for _, d := range diff {
		t := tuple{EventType: d.Type, StateKey: d.StateKey}
		if old, ok := b.current.get(t); ok && evs[old] != nil {
			removes = append(removes, evs[old].id)
		}
		b.current.changes[t] = d.EventNID
		if d.EventNID == 0 {
			continue
		}
		e := evs[d.EventNID]
		if e == nil {
			return fmt.Errorf("state event %d is missing", d.EventNID)
		}
		adds = append(adds, e.id)
		if d.Type == spec.MRoomMember {
			membership, err := e.pdu.Membership()
			if err != nil {
				return fmt.Errorf("membership of %s: %w", e.id, err)
			}
			b.s.db.UpsertMembership(b.w, b.room.NID, d.StateKey, membership, e.nid)
		}
	}
	if meta.rejected {
		return nil
	}
	b.queueOutput(meta, adds, removes, txn)
	return nil
}

// queueOutput adds a stored event's output message to the batch's.
func (b *batch) queueOutput(meta *eventMeta, adds, removes []string, txn *api.TransactionID) {
	b.outputs = append(b.outputs, &api.OutputEvent{
		RoomID:               b.room.RoomID,
		RoomVersion:          b.rs.verImpl.Version(),
		Event:                meta.pdu.JSON(),
		EventID:              meta.id,
		RoomPosition:         meta.position,
		AddsStateEventIDs:    adds,
		RemovesStateEventIDs: removes,
		SoftFailed:           meta.softFailed || meta.outlier,
		Outlier:              meta.outlier,
		TransactionID:        txn,
		Sender:               string(meta.pdu.SenderID()),
	})
}

// recordRedaction stores a redaction and applies it to its target if the
// target is known. Room versions §"Redactions": a redaction takes effect
// when its sender sent the target, is on the target sender's server, or
// has the "redact" power level.
func (b *batch) recordRedaction(ctx context.Context, redaction *eventMeta, before *snapRef) error {
	targetID := redactsOf(redaction.pdu)
	applied, err := b.applyRedaction(ctx, redaction, targetID, before)
	if err != nil {
		return err
	}
	b.s.db.InsertRedaction(b.w, redaction.id, targetID, applied)
	if !applied {
		b.pendingRedactions[targetID] = append(b.pendingRedactions[targetID], redaction.id)
	}
	return nil
}

func (b *batch) applyRedaction(ctx context.Context, redaction *eventMeta, targetID string, before *snapRef) (bool, error) {
	found, err := b.eventsByID(ctx, []string{targetID})
	if err != nil {
		return false, err
	}
	target := found[targetID]
	if target == nil || target.pdu.Redacted() {
		return false, nil
	}
	allowed := target.pdu.SenderID() == redaction.pdu.SenderID()
	if !allowed {
		rs, err1 := spec.NewUserID(string(redaction.pdu.SenderID()), true)
		ts, err2 := spec.NewUserID(string(target.pdu.SenderID()), true)
		allowed = err1 == nil && err2 == nil && rs.Domain() == ts.Domain()
	}
	if !allowed {
		authEvents, err := b.authEventsFrom(ctx, before.state, gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{redaction.pdu}))
		if err != nil {
			return false, err
		}
		allowed = b.hasRedactPower(redaction.pdu.SenderID(), authEvents)
	}
	if !allowed {
		return false, nil
	}
	redactedJSON, err := b.rs.verImpl.RedactEventJSON(target.pdu.JSON())
	if err != nil {
		return false, fmt.Errorf("redact %s: %w", targetID, err)
	}
	pdu, err := b.rs.verImpl.NewEventFromTrustedJSONWithEventID(targetID, redactedJSON, true)
	if err != nil {
		return false, fmt.Errorf("parse redacted %s: %w", targetID, err)
	}
	b.s.db.UpdateEventRedacted(b.w, target.nid, redactedJSON)
	b.redactedAny = true
	redactedMeta := *target
	redactedMeta.pdu = pdu
	b.newByNID[target.nid] = &redactedMeta
	b.newByID[targetID] = &redactedMeta
	return true, nil
}

// inputEvents stores events built elsewhere (received over federation,
// signatures and hashes already checked), in order. Server-server spec
// §"Checks performed on receipt of a PDU": an event failing auth against
// its auth events or the state before it is rejected; one failing only
// against the current state is soft-failed. A returned error fails the
// whole batch; a problem with one event is reported in its result.
func (b *batch) inputEvents(ctx context.Context, t *task) ([]api.InputEventResult, error) {
	for _, o := range t.outliers {
		if _, err := b.storeOutlier(ctx, o); err != nil {
			if !isClientError(err) {
				return nil, err
			}
			logrus.WithError(err).WithField("event_id", o.EventID()).Info("roomserver: outlier not stored")
		}
	}
	results := make([]api.InputEventResult, 0, len(t.events))
	for _, ev := range t.events {
		res := api.InputEventResult{EventID: ev.EventID()}
		err := b.inputEvent(ctx, ev, t.stateBefore[ev.EventID()], &res)
		if err != nil {
			if !isClientError(err) {
				return nil, err
			}
			res.Error = err.Error()
		}
		results = append(results, res)
	}
	return results, nil
}

// inputEvent places one event in the DAG. stateIDs, when set, is the state
// before the event, used if its prev_events are not all known here.
func (b *batch) inputEvent(ctx context.Context, ev gomatrixserverlib.PDU, stateIDs []string, res *api.InputEventResult) error {
	if ev.RoomID().String() != b.room.RoomID {
		return &api.BadEventError{Reason: fmt.Sprintf("event %s is not in room %s", ev.EventID(), b.room.RoomID)}
	}
	if ev.Version() != b.rs.verImpl.Version() {
		return &api.BadEventError{Reason: fmt.Sprintf("event %s has room version %s, room has %s", ev.EventID(), ev.Version(), b.rs.verImpl.Version())}
	}
	if len(ev.JSON()) > maxEventBytes {
		return &api.BadEventError{Reason: "event too large", TooLarge: true}
	}
	known, err := b.eventsByID(ctx, []string{ev.EventID()})
	if err != nil {
		return err
	}
	// An outlier with no state yet is given its state (promoted) now that
	// the state before it is known; anything else is done already.
	promote := known[ev.EventID()]
	if promote != nil && !promote.stateless() {
		res.Rejected, res.SoftFailed = promote.rejected, promote.softFailed
		return nil
	}
	found, err := b.eventsByID(ctx, append(append([]string{}, ev.PrevEventIDs()...), ev.AuthEventIDs()...))
	if err != nil {
		return err
	}
	var prevs []*eventMeta
	var missing []string
	for _, id := range ev.PrevEventIDs() {
		if p := found[id]; p != nil && !p.stateless() {
			prevs = append(prevs, p)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 && stateIDs == nil {
		res.MissingPrevEvents = missing
		return &api.BadEventError{Reason: fmt.Sprintf("event %s: prev_events %v are not known", ev.EventID(), missing)}
	}
	if ev.Type() == spec.MRoomCreate && promote == nil {
		return &api.BadEventError{Reason: "a room's m.room.create event cannot be input into an existing room"}
	}
	var before *snapRef
	if len(missing) > 0 {
		before, err = b.stateFromIDs(ctx, stateIDs)
	} else {
		before, err = b.stateBefore(ctx, prevs)
	}
	if err != nil {
		return err
	}
	rejected := false
	// Auth against the event's own auth_events.
	claimed := gomatrixserverlib.NewAuthEvents(nil)
	for _, id := range ev.AuthEventIDs() {
		a := found[id]
		if a == nil || a.rejected || a.pdu.StateKey() == nil {
			rejected = true
			break
		}
		if err := claimed.AddEvent(a.pdu); err != nil {
			rejected = true
			break
		}
	}
	if !rejected && gomatrixserverlib.Allowed(ev, &claimed, userIDForSender) != nil {
		rejected = true
	}
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev})
	if !rejected {
		authEvents, err := b.authEventsFrom(ctx, before.state, needed)
		if err != nil {
			return err
		}
		rejected = gomatrixserverlib.Allowed(ev, authEvents, userIDForSender) != nil
	}
	if promote != nil {
		res.Rejected = rejected
		if rejected {
			// It stays an outlier: a valid event, but not at that state.
			return nil
		}
		return b.promoteOutlier(ctx, promote, before)
	}
	softFailed := false
	if !rejected && before.seq != b.room.Snapshot {
		authEvents, err := b.authEventsFrom(ctx, b.current, needed)
		if err != nil {
			return err
		}
		softFailed = gomatrixserverlib.Allowed(ev, authEvents, userIDForSender) != nil
	}
	if rejected || softFailed {
		logrus.WithFields(logrus.Fields{"event_id": ev.EventID(), "rejected": rejected, "soft_failed": softFailed}).Info("roomserver: event failed auth")
	}
	res.Rejected, res.SoftFailed = rejected, softFailed
	meta, err := b.store(ctx, ev, before, prevs, rejected, softFailed, nil)
	if err != nil {
		return err
	}
	if rejected {
		return nil
	}
	// A redaction may have arrived before the event it redacts, in an
	// earlier batch or in this one.
	pending, err := b.s.db.SelectPendingRedactions(ctx, b.q, meta.id)
	if err != nil {
		return err
	}
	pending = append(pending, b.pendingRedactions[meta.id]...)
	delete(b.pendingRedactions, meta.id)
	for _, rid := range pending {
		found, err := b.eventsByID(ctx, []string{rid})
		if err != nil {
			return err
		}
		r := found[rid]
		if r == nil {
			continue
		}
		rBefore, err := b.snapshot(ctx, r.stateBefore)
		if err != nil {
			return err
		}
		applied, err := b.applyRedaction(ctx, r, meta.id, rBefore)
		if err != nil {
			return err
		}
		if applied {
			b.s.db.MarkRedactionApplied(b.w, rid)
		}
	}
	return nil
}
