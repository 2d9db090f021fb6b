package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/parley-chat/parley/syncapi/storage"
)

// Response types of GET /sync (client-server spec §"GET /_matrix/client/v3/sync").
type syncResponse struct {
	NextBatch              string         `json:"next_batch"`
	AccountData            eventList      `json:"account_data"`
	Presence               eventList      `json:"presence"`
	Rooms                  syncRooms      `json:"rooms"`
	ToDevice               eventList      `json:"to_device"`
	DeviceLists            deviceLists    `json:"device_lists"`
	DeviceOneTimeKeysCount map[string]int `json:"device_one_time_keys_count"`
	// DeviceUnusedFallbackKeyTypes is set by addEncryptionData.
	DeviceUnusedFallbackKeyTypes []string `json:"device_unused_fallback_key_types,omitempty"`
}

type eventList struct {
	Events []json.RawMessage `json:"events"`
}

type deviceLists struct {
	Changed []string `json:"changed"`
	Left    []string `json:"left"`
}

type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

type joinedRoom struct {
	AccountData         eventList     `json:"account_data"`
	Ephemeral           eventList     `json:"ephemeral"`
	State               eventList     `json:"state"`
	Summary             *roomSummary  `json:"summary,omitempty"`
	Timeline            timeline      `json:"timeline"`
	UnreadNotifications notifications `json:"unread_notifications"`
	// UnreadThreadNotifications is set by addUnreadCounts (push.go).
	UnreadThreadNotifications map[string]notifications `json:"unread_thread_notifications,omitempty"`
}

type roomSummary struct {
	Heroes             []string `json:"m.heroes"`
	JoinedMemberCount  int      `json:"m.joined_member_count"`
	InvitedMemberCount int      `json:"m.invited_member_count"`
}

type notifications struct {
	HighlightCount    int `json:"highlight_count"`
	NotificationCount int `json:"notification_count"`
}

type timeline struct {
	Events    []json.RawMessage `json:"events"`
	Limited   bool              `json:"limited"`
	PrevBatch string            `json:"prev_batch,omitempty"`
}

type invitedRoom struct {
	InviteState eventList `json:"invite_state"`
}

type knockedRoom struct {
	KnockState eventList `json:"knock_state"`
}

type leftRoom struct {
	AccountData eventList `json:"account_data"`
	State       eventList `json:"state"`
	Timeline    timeline  `json:"timeline"`
}

func newSyncResponse() *syncResponse {
	return &syncResponse{
		AccountData:            eventList{Events: []json.RawMessage{}},
		Presence:               eventList{Events: []json.RawMessage{}},
		ToDevice:               eventList{Events: []json.RawMessage{}},
		DeviceLists:            deviceLists{Changed: []string{}, Left: []string{}},
		DeviceOneTimeKeysCount: map[string]int{},
		Rooms: syncRooms{
			Join:   map[string]*joinedRoom{},
			Invite: map[string]*invitedRoom{},
			Leave:  map[string]*leftRoom{},
			Knock:  map[string]*knockedRoom{},
		},
	}
}

// empty says whether an incremental response has nothing for the client,
// so a long-poll should keep waiting.
func (r *syncResponse) empty() bool {
	return len(r.Rooms.Join) == 0 && len(r.Rooms.Invite) == 0 && len(r.Rooms.Leave) == 0 && len(r.Rooms.Knock) == 0 &&
		len(r.AccountData.Events) == 0 && len(r.ToDevice.Events) == 0 && len(r.Presence.Events) == 0 &&
		len(r.DeviceLists.Changed) == 0 && len(r.DeviceLists.Left) == 0
}

// syncRequest is a parsed /sync request.
type syncRequest struct {
	userID, deviceID string
	// since is nil for an initial sync.
	since     *StreamToken
	filter    *Filter
	fullState bool
}

// Bounds on one response's work.
const (
	maxToDevicePerSync = 100
	maxScanRows        = 2000
	heroesLimit        = 5
)

// strippedStateTypes are the state events shared with invitees and
// knockers (client-server spec §"Stripped state", recommended set).
var strippedStateTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.topic", "m.room.canonical_alias", "m.room.encryption"}

// currentToken is the newest position of every stream. The positions are
// kept in memory (storage.LatestPositions), so it never fails; the error
// result keeps the callers' shape from when it was a query.
func (s *Service) currentToken(context.Context) (StreamToken, error) {
	p := s.db.LatestPositions()
	return StreamToken{Events: p.Events, AccountData: p.AccountData, Receipts: p.Receipts, Typing: s.typing.Position(),
		ToDevice: p.ToDevice, DeviceLists: p.DeviceLists, Presence: p.Presence}, nil
}

// buildSync computes the response for req as of the positions in cur.
func (s *Service) buildSync(ctx context.Context, req *syncRequest, cur StreamToken) (*syncResponse, error) {
	initial := req.since == nil
	var since StreamToken
	if !initial {
		since = req.since.clampTo(cur)
	}
	resp := newSyncResponse()
	next := cur
	f := req.filter
	rf := f.room()
	fm := eventFormatter{userID: req.userID, deviceID: req.deviceID, now: time.Now(), federation: f != nil && f.EventFormat == "federation"}

	memberships, err := s.roomsForUser(ctx, req.userID)
	if err != nil {
		return nil, err
	}
	var joinedIDs []string
	for _, m := range memberships {
		if m.Membership == "join" && rf.includesRoom(m.RoomID) {
			joinedIDs = append(joinedIDs, m.RoomID)
		}
	}
	receipts := map[string][]storage.Receipt{}
	if cur.Receipts > since.Receipts {
		all, err := s.db.ReceiptsSince(ctx, joinedIDs, since.Receipts, cur.Receipts)
		if err != nil {
			return nil, err
		}
		for _, r := range all {
			if r.Type == "m.read.private" && r.UserID != req.userID {
				continue
			}
			receipts[r.RoomID] = append(receipts[r.RoomID], r)
		}
	}
	roomAccountData := map[string][]json.RawMessage{}
	if cur.AccountData > since.AccountData {
		ad, err := s.db.AccountDataSince(ctx, req.userID, since.AccountData, cur.AccountData)
		if err != nil {
			return nil, err
		}
		for _, a := range ad {
			ev, _ := json.Marshal(map[string]any{"type": a.Type, "content": json.RawMessage(a.Content)})
			if a.RoomID == "" {
				if f == nil || f.AccountData == nil || matchList(f.AccountData.Types, f.AccountData.NotTypes, a.Type, true) {
					resp.AccountData.Events = append(resp.AccountData.Events, ev)
				}
			} else if rf.AccountData.matchesType(a.RoomID, a.Type) {
				roomAccountData[a.RoomID] = append(roomAccountData[a.RoomID], ev)
			}
		}
	}

	rc := roomContext{req: req, since: since, cur: cur, initial: initial, fm: fm, rf: rf}
	for _, m := range memberships {
		if !rf.includesRoom(m.RoomID) {
			continue
		}
		changed := initial || m.ChangedAt > since.Events
		switch m.Membership {
		case "join":
			jr, err := s.joinedRoom(ctx, &rc, m, s.caches.lastPosition(m.RoomID), receipts[m.RoomID], roomAccountData[m.RoomID])
			if err != nil {
				return nil, fmt.Errorf("room %s: %w", m.RoomID, err)
			}
			if jr != nil {
				resp.Rooms.Join[m.RoomID] = jr
			}
		case "invite":
			if changed {
				st, err := s.strippedState(ctx, m, "invite_room_state")
				if err != nil {
					return nil, err
				}
				resp.Rooms.Invite[m.RoomID] = &invitedRoom{InviteState: st}
			}
		case "knock":
			if changed {
				st, err := s.strippedState(ctx, m, "knock_room_state")
				if err != nil {
					return nil, err
				}
				resp.Rooms.Knock[m.RoomID] = &knockedRoom{KnockState: st}
			}
		case "leave", "ban":
			if (initial || req.fullState) && !rf.IncludeLeave {
				continue
			}
			if changed || req.fullState {
				lr, err := s.leftRoom(ctx, &rc, m, roomAccountData[m.RoomID])
				if err != nil {
					return nil, fmt.Errorf("room %s: %w", m.RoomID, err)
				}
				resp.Rooms.Leave[m.RoomID] = lr
			}
		}
	}

	if req.deviceID != "" {
		msgs, err := s.toDevice(ctx, req.userID, req.deviceID, since.ToDevice, cur.ToDevice)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			ev, _ := json.Marshal(map[string]any{"type": m.Type, "sender": m.Sender, "content": json.RawMessage(m.Content)})
			resp.ToDevice.Events = append(resp.ToDevice.Events, ev)
		}
		if len(msgs) == maxToDevicePerSync {
			next.ToDevice = msgs[len(msgs)-1].Position
		}
	}
	if err := s.addEncryptionData(ctx, req, memberships, since, cur, resp); err != nil {
		return nil, err
	}
	if err := s.addPushData(ctx, req, memberships, since, &next, resp); err != nil {
		return nil, err
	}
	resp.NextBatch = next.String()
	return resp, nil
}

// roomContext is what every room of one sync shares.
type roomContext struct {
	req     *syncRequest
	since   StreamToken
	cur     StreamToken
	initial bool
	fm      eventFormatter
	rf      *RoomFilter
}

func (s *Service) joinedRoom(ctx context.Context, rc *roomContext, m storage.RoomMembership, lastPos int64,
	receipts []storage.Receipt, accountData []json.RawMessage) (*joinedRoom, error) {
	if !rc.rf.Ephemeral.matchesType(m.RoomID, "m.receipt") {
		receipts = nil
	}
	typingUsers, typingChanged := s.typing.Typing(m.RoomID, rc.since.Typing)
	typingChanged = typingChanged && rc.rf.Ephemeral.matchesType(m.RoomID, "m.typing")
	// Most rooms of a long-polling user have nothing new: decide that
	// without touching the database.
	membershipChanged := rc.initial || m.ChangedAt > rc.since.Events
	if !membershipChanged && lastPos <= rc.since.Events && !rc.req.fullState && len(receipts) == 0 && len(accountData) == 0 && !typingChanged {
		return nil, nil
	}
	// The common long-poll wake-up: a user joined since before the token,
	// and only new events that change no state. The room's in-memory tail
	// answers it when it reaches back to the token.
	var tail []tailEvent
	fromTail := false
	if !membershipChanged && !rc.req.fullState && lastPos > rc.since.Events {
		tail, fromTail = s.caches.tailBetween(m.RoomID, rc.since.Events, rc.cur.Events)
		fromTail = fromTail && !slices.ContainsFunc(tail, func(e tailEvent) bool { return e.changesState })
	}
	var vis roomVisibility
	switch {
	case fromTail:
		// The membership that changed at m.ChangedAt (a join, at or before
		// the token) is all the history the visibility rules consult for
		// events after the token.
		vis = newRoomVisibility(rc.req.userID, []storage.MembershipAt{{Position: m.ChangedAt, Membership: m.Membership}})
	case membershipChanged || rc.req.fullState || lastPos > rc.since.Events:
		// (Otherwise only ephemeral events or account data are new, and
		// nothing below looks at visibility.)
		hist, err := s.db.MembershipHistory(ctx, m.RoomID, rc.req.userID)
		if err != nil {
			return nil, err
		}
		vis = newRoomVisibility(rc.req.userID, hist)
	}
	// A room the user was not joined to at the since position is new to
	// the client: it gets the room from scratch.
	fresh := rc.initial || (membershipChanged && vis.membershipAtOrBefore(rc.since.Events) != "join")
	hasEvents := fresh || lastPos > rc.since.Events

	jr := &joinedRoom{
		AccountData: eventList{Events: accountData},
		Ephemeral:   eventList{Events: []json.RawMessage{}},
		State:       eventList{Events: []json.RawMessage{}},
		Timeline:    timeline{Events: []json.RawMessage{}},
	}
	if jr.AccountData.Events == nil {
		jr.AccountData.Events = []json.RawMessage{}
	}
	after := rc.since.Events
	if fresh {
		after = 0
	}
	var tl []storage.Event
	var err error
	switch {
	case fromTail:
		var limited, relations bool
		tl, limited, relations = tailTimeline(tail, m.RoomID, vis, rc.req.filter.timelineLimit(), rc.rf.Timeline)
		if jr.Timeline, err = s.timelineJSON(ctx, rc, m.RoomID, vis, tl, limited, relations); err != nil {
			return nil, err
		}
		// No state changed after the token, so there is no state to send,
		// except the lazy-loaded members of the timeline's senders (from
		// the cached current state).
		var state []storage.Event
		if rc.rf.State != nil && rc.rf.State.LazyLoadMembers {
			if state, err = s.stateFor(ctx, m.RoomID, rc.rf.State, rc.since.Events, rc.cur.Events, tl, rc.req.userID); err != nil {
				return nil, err
			}
			jr.State.Events = rc.fm.formatAll(state)
		}
		if hasMember(tl) || hasMember(state) {
			if jr.Summary, err = s.roomSummary(ctx, m.RoomID, rc.req.userID); err != nil {
				return nil, err
			}
		}
	case hasEvents || rc.req.fullState:
		var limited bool
		tl, limited, err = s.timeline(ctx, m.RoomID, vis, after, rc.cur.Events, rc.req.filter.timelineLimit(), rc.rf.Timeline)
		if err != nil {
			return nil, err
		}
		if jr.Timeline, err = s.timelineJSON(ctx, rc, m.RoomID, vis, tl, limited, true); err != nil {
			return nil, err
		}
		changedAfter := rc.since.Events
		if fresh || rc.req.fullState {
			changedAfter = 0
		}
		state, err := s.stateFor(ctx, m.RoomID, rc.rf.State, changedAfter, rc.cur.Events, tl, rc.req.userID)
		if err != nil {
			return nil, err
		}
		jr.State.Events = rc.fm.formatAll(state)
		if fresh || hasMember(tl) || hasMember(state) {
			if jr.Summary, err = s.roomSummary(ctx, m.RoomID, rc.req.userID); err != nil {
				return nil, err
			}
		}
	}
	if typingChanged {
		if typingUsers == nil {
			typingUsers = []string{}
		}
		ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": typingUsers}})
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, ev)
	}
	if len(receipts) > 0 {
		jr.Ephemeral.Events = append(jr.Ephemeral.Events, receiptEvent(receipts))
	}
	if !fresh && !rc.req.fullState && len(jr.Timeline.Events) == 0 && len(jr.State.Events) == 0 &&
		len(jr.Ephemeral.Events) == 0 && len(jr.AccountData.Events) == 0 {
		// Only hidden events (soft-failed, filtered, not visible) arrived.
		return nil, nil
	}
	return jr, nil
}

func (s *Service) leftRoom(ctx context.Context, rc *roomContext, m storage.RoomMembership, accountData []json.RawMessage) (*leftRoom, error) {
	hist, err := s.db.MembershipHistory(ctx, m.RoomID, rc.req.userID)
	if err != nil {
		return nil, err
	}
	vis := newRoomVisibility(rc.req.userID, hist)
	// The timeline stops at the user's leave: later events are not theirs.
	upto := min(m.ChangedAt, rc.cur.Events)
	after := rc.since.Events
	if rc.initial || rc.req.fullState {
		after = 0
	}
	tl, limited, err := s.timeline(ctx, m.RoomID, vis, after, upto, rc.req.filter.timelineLimit(), rc.rf.Timeline)
	if err != nil {
		return nil, err
	}
	state, err := s.stateFor(ctx, m.RoomID, rc.rf.State, after, upto, tl, rc.req.userID)
	if err != nil {
		return nil, err
	}
	if accountData == nil {
		accountData = []json.RawMessage{}
	}
	tlJSON, err := s.timelineJSON(ctx, rc, m.RoomID, vis, tl, limited, true)
	if err != nil {
		return nil, err
	}
	return &leftRoom{
		AccountData: eventList{Events: accountData},
		State:       eventList{Events: rc.fm.formatAll(state)},
		Timeline:    tlJSON,
	}, nil
}

// timelineJSON formats a timeline with its events' bundled aggregations;
// relations false says the caller knows none of tl has any.
func (s *Service) timelineJSON(ctx context.Context, rc *roomContext, roomID string, vis roomVisibility, tl []storage.Event, limited, relations bool) (timeline, error) {
	fm := rc.fm
	if relations {
		var err error
		if fm, err = s.withRelations(ctx, rc.fm, map[string]roomVisibility{roomID: vis}, tl); err != nil {
			return timeline{}, err
		}
	}
	t := timeline{Events: fm.formatAll(tl), Limited: limited}
	if len(tl) > 0 {
		t.PrevBatch = paginationToken(tl[0].Position - 1)
	} else {
		t.PrevBatch = paginationToken(rc.cur.Events)
	}
	return t, nil
}

// timeline returns the newest limit events in (after, before] that the user
// may see and the filter keeps, oldest first, and whether older ones exist.
func (s *Service) timeline(ctx context.Context, roomID string, vis roomVisibility, after, before int64, limit int, f *RoomEventFilter) ([]storage.Event, bool, error) {
	evs, more, err := s.scan(ctx, roomID, vis, after, before, true, limit, f)
	if err != nil {
		return nil, false, err
	}
	slices.Reverse(evs)
	return evs, more, nil
}

// tailTimeline is timeline over events from a room's tail: the newest
// limit of them that the user may see and the filter keeps, oldest first,
// whether older ones exist, and whether any kept one has relations.
func tailTimeline(tail []tailEvent, roomID string, vis roomVisibility, limit int, f *RoomEventFilter) (tl []storage.Event, limited, relations bool) {
	for i := len(tail) - 1; i >= 0; i-- {
		e := &tail[i]
		if e.softFailed || !vis.canSee(&e.Event) || !f.matchesEvent(roomID, e.Sender, e.Type, e.JSON) {
			continue
		}
		if len(tl) == limit {
			limited = true
			break
		}
		tl = append(tl, e.Event)
		relations = relations || e.hasChildren
	}
	slices.Reverse(tl)
	return tl, limited, relations
}

// scan pages through a room's events in (after, before], newest first when
// backwards, keeping those the user may see and the filter keeps, until it
// has limit of them. more reports that further matching events may exist.
// The rows read are bounded, so a user who may see little of a long room
// costs bounded work.
func (s *Service) scan(ctx context.Context, roomID string, vis roomVisibility, after, before int64, backwards bool, limit int, f *RoomEventFilter) (out []storage.Event, more bool, err error) {
	if f != nil && ((f.Types != nil && len(*f.Types) == 0) || (f.Senders != nil && len(*f.Senders) == 0)) {
		return nil, false, nil
	}
	if f != nil && !matchList(f.Rooms, f.NotRooms, roomID, false) {
		return nil, false, nil
	}
	q := storage.RangeQuery{RoomID: roomID, After: after, Before: before, Backwards: backwards, OpenFrom: vis.openFrom()}
	if f != nil {
		q.Types, q.NotTypes = f.exactTypes()
		if f.Senders != nil {
			q.Senders = *f.Senders
		}
		q.NotSenders = f.NotSenders
	}
	want := limit + 1
	batch := max(2*want, 50)
	scanned := 0
	for {
		q.Limit = batch
		rows, err := s.db.RoomEvents(ctx, q)
		if err != nil {
			return nil, false, err
		}
		for i := range rows {
			ev := &rows[i]
			if vis.canSee(ev) && f.matchesEvent(roomID, ev.Sender, ev.Type, ev.JSON) {
				out = append(out, *ev)
				if len(out) == want {
					return out[:limit], true, nil
				}
			}
		}
		scanned += len(rows)
		if len(rows) < batch {
			return out, false, nil
		}
		if scanned >= maxScanRows {
			return out, true, nil
		}
		if backwards {
			q.Before = rows[len(rows)-1].Position - 1
		} else {
			q.After = rows[len(rows)-1].Position
		}
	}
}

// stateFor returns the room state a client needs alongside a timeline: the
// current state entries changed after changedAfter (all when 0) and
// stored at or before upto, minus those already in the timeline, filtered.
// With lazy-loading, member events are only those of the timeline's
// senders and the user (client-server spec §"Lazy-loading room members").
func (s *Service) stateFor(ctx context.Context, roomID string, f *RoomEventFilter, changedAfter, upto int64, tl []storage.Event, userID string) ([]storage.Event, error) {
	if f != nil && ((f.Types != nil && len(*f.Types) == 0) || !matchList(f.Rooms, f.NotRooms, roomID, false)) {
		return []storage.Event{}, nil
	}
	q := storage.StateQuery{RoomID: roomID, ChangedAfter: changedAfter}
	if f != nil {
		q.Types, q.NotTypes = f.exactTypes()
	}
	var evs []storage.Event
	if f != nil && f.LazyLoadMembers {
		q.MemberKeys = []string{}
		nonMembers, err := s.currentState(ctx, q)
		if err != nil {
			return nil, err
		}
		senders := []string{userID}
		for _, e := range tl {
			if !slices.Contains(senders, e.Sender) {
				senders = append(senders, e.Sender)
			}
		}
		members, err := s.currentState(ctx, storage.StateQuery{RoomID: roomID, OnlyMembers: true, MemberKeys: senders})
		if err != nil {
			return nil, err
		}
		evs = append(nonMembers, members...)
	} else {
		var err error
		if evs, err = s.currentState(ctx, q); err != nil {
			return nil, err
		}
	}
	inTimeline := make(map[string]bool, len(tl))
	for _, e := range tl {
		inTimeline[e.EventID] = true
	}
	out := make([]storage.Event, 0, len(evs))
	for _, e := range evs {
		if inTimeline[e.EventID] || e.Position > upto {
			continue
		}
		if f != nil && !f.matchesEvent(roomID, e.Sender, e.Type, e.JSON) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

func hasMember(evs []storage.Event) bool {
	for _, e := range evs {
		if e.Type == "m.room.member" {
			return true
		}
	}
	return false
}

// strippedState builds invite_state / knock_state: stripped copies of the
// room's key state events and the membership event itself. For a room
// this server does not share, the inviting server's copy (in the event's
// unsigned) is all there is.
func (s *Service) strippedState(ctx context.Context, m storage.RoomMembership, unsignedKey string) (eventList, error) {
	out := eventList{Events: []json.RawMessage{}}
	ev, _, err := s.db.EventByID(ctx, m.EventID)
	if err != nil {
		return out, err
	}
	state, err := s.db.CurrentState(ctx, storage.StateQuery{RoomID: m.RoomID, Types: strippedStateTypes})
	if err != nil {
		return out, err
	}
	seen := map[string]bool{}
	for i := range state {
		out.Events = append(out.Events, stripped(&state[i]))
		seen[state[i].Type] = true
	}
	if ev != nil {
		var u struct {
			Unsigned map[string]json.RawMessage `json:"unsigned"`
		}
		_ = json.Unmarshal(ev.JSON, &u)
		var remote []strippedEvent
		_ = json.Unmarshal(u.Unsigned[unsignedKey], &remote)
		for _, r := range remote {
			if !seen[r.Type] && r.Type != "" && slices.Contains(strippedStateTypes, r.Type) {
				b, _ := json.Marshal(r)
				out.Events = append(out.Events, b)
				seen[r.Type] = true
			}
		}
		out.Events = append(out.Events, stripped(ev))
	}
	return out, nil
}

// receiptEvent renders a room's receipts as one m.receipt event
// (client-server spec §"Receipts").
func receiptEvent(receipts []storage.Receipt) json.RawMessage {
	content := map[string]map[string]map[string]map[string]any{}
	for _, r := range receipts {
		byType := content[r.EventID]
		if byType == nil {
			byType = map[string]map[string]map[string]any{}
			content[r.EventID] = byType
		}
		byUser := byType[r.Type]
		if byUser == nil {
			byUser = map[string]map[string]any{}
			byType[r.Type] = byUser
		}
		info := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			info["thread_id"] = r.ThreadID
		}
		byUser[r.UserID] = info
	}
	b, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
	return b
}

// toDevice acknowledges (deletes) what the since token shows was received
// and returns the next messages for the device.
func (s *Service) toDevice(ctx context.Context, userID, deviceID string, since, upto int64) ([]storage.ToDeviceMessage, error) {
	key := userID + "|" + deviceID
	if since > 0 {
		s.ackMu.Lock()
		done := s.acked[key] >= since
		s.ackMu.Unlock()
		if !done {
			if err := s.db.DeleteToDeviceUpTo(ctx, userID, deviceID, since); err != nil {
				return nil, err
			}
			s.ackMu.Lock()
			s.acked[key] = max(s.acked[key], since)
			s.ackMu.Unlock()
		}
	}
	if upto <= since {
		return nil, nil
	}
	return s.db.ToDeviceInbox(ctx, userID, deviceID, since, upto, maxToDevicePerSync)
}
