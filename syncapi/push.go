package syncapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/syncapi/storage"
)

// Push evaluation: every new room event is run through the push rules of
// each local user it reaches (client-server spec §"Push Notifications",
// server behaviour). The event is flattened once; each user's rules are
// compiled once and cached; what a room contributes (member count, display
// names, power levels) is kept in memory per room and updated from the
// stream, so evaluating a message costs map lookups per member and no
// query per member.

// pushRulesTTL bounds how long a cached compiled ruleset is trusted. This
// instance invalidates its cache on every change it makes; the TTL covers
// changes made through another instance in a split deployment.
const pushRulesTTL = time.Minute

// maxPushRooms bounds the per-room state cache.
const maxPushRooms = 2000

// pusher is the sync API's push machinery.
type pusher struct {
	s *Service

	rulesMu sync.Mutex
	rules   map[string]cachedRules

	roomsMu sync.Mutex
	rooms   map[string]*pushRoom

	gateway *pushGateway
	// queued says the event being stored queued pushes, and counts how it
	// changes unread counts (consumer goroutine only).
	queued bool
	counts countsChange

	stopOnce sync.Once
}

type cachedRules struct {
	compiled *compiledRules
	loaded   time.Time
}

// pushRoom is the state of a room that push evaluation needs.
type pushRoom struct {
	// members maps each joined member to their display name in the room.
	members        map[string]memberName
	name           string
	creator        string
	hasPL          bool
	plUsers        map[string]int64
	plUsersDefault int64
	plNotif        map[string]int64
}

type memberName struct {
	display string
	lower   string
}

func newPusher(s *Service) *pusher {
	return &pusher{s: s, rules: map[string]cachedRules{}, rooms: map[string]*pushRoom{}}
}

func (s *Service) isLocal(userID string) bool {
	i := strings.IndexByte(userID, ':')
	return i > 0 && s.cfg != nil && userID[i+1:] == s.cfg.ServerName
}

// prepare evaluates a new event before it is stored and returns what must
// be written in the event's transaction (storage.NewEvent.AfterStore):
// notifications, counts, pushes, and the user directory's view of member
// and join-rule events. It returns nil when there is nothing to write.
func (p *pusher) prepare(ctx context.Context, ne *storage.NewEvent) (func(ctx context.Context, tx *sql.Tx, position int64) error, error) {
	p.queued = false
	p.counts = countsChange{}
	if ne.SoftFailed {
		return nil, nil
	}
	var notifs []storage.Notification
	room, err := p.room(ctx, ne.RoomID)
	if err != nil {
		return nil, err
	}
	fe, err := flattenEvent(ne.JSON)
	if err != nil {
		return nil, nil // unparseable content notifies nobody
	}
	targets := p.targets(room, ne)
	if len(targets) > 0 {
		notifs, err = p.evaluate(ctx, room, fe, ne, targets)
		if err != nil {
			return nil, err
		}
	}
	p.queued = len(notifs) > 0
	senderLocal := p.s.isLocal(ne.Sender)
	p.counts = countsChange{roomID: ne.RoomID, notifs: notifs}
	if senderLocal {
		p.counts.cleared = ne.Sender
	}
	dir := directoryChange(ne)
	if len(notifs) == 0 && !senderLocal && dir == nil {
		return nil, nil
	}
	now := time.Now().UnixMilli()
	return func(ctx context.Context, tx *sql.Tx, position int64) error {
		if senderLocal {
			if err := storage.ClearCounts(ctx, tx, ne.Sender, ne.RoomID); err != nil {
				return err
			}
		}
		if err := storage.InsertNotifications(ctx, tx, position, notifs, now); err != nil {
			return err
		}
		if dir != nil {
			return dir(ctx, tx)
		}
		return nil
	}, nil
}

// targets are the local users whose rules see the event: joined members
// other than the sender, and a local invitee.
func (p *pusher) targets(room *pushRoom, ne *storage.NewEvent) []string {
	var out []string
	for u := range room.members {
		if u != ne.Sender && p.s.isLocal(u) {
			out = append(out, u)
		}
	}
	if ne.Type == "m.room.member" && ne.Membership == "invite" && ne.StateKey != nil {
		if u := *ne.StateKey; u != ne.Sender && p.s.isLocal(u) {
			if _, joined := room.members[u]; !joined {
				out = append(out, u)
			}
		}
	}
	return out
}

func (p *pusher) evaluate(ctx context.Context, room *pushRoom, fe *flatEvent, ne *storage.NewEvent, targets []string) ([]storage.Notification, error) {
	rules, err := p.rulesFor(ctx, targets)
	if err != nil {
		return nil, err
	}
	er := room.evalRoom(ne.Sender)
	var out []storage.Notification
	threadID := ""
	for _, u := range targets {
		o := rules[u].evaluate(fe, &er, room.members[u].lower)
		if o == nil || !o.notify {
			continue
		}
		if threadID == "" {
			if threadID, err = p.threadOf(ctx, fe, ne); err != nil {
				return nil, err
			}
		}
		out = append(out, storage.Notification{UserID: u, RoomID: ne.RoomID, EventID: ne.EventID, ThreadID: threadID,
			Highlight: o.highlight, Actions: o.actions, TS: ne.OriginServerTS})
	}
	return out, nil
}

// maxThreadHops is how far relations are followed to find an event's
// thread (spec §"Receiving notifications" recommends at most 3).
const maxThreadHops = 3

// threadOf returns the thread root of an event, or "main": an m.thread
// relation names it; other relations inherit their target's thread.
func (p *pusher) threadOf(ctx context.Context, fe *flatEvent, ne *storage.NewEvent) (string, error) {
	relType, _ := fe.props[`content.m\.relates_to.rel_type`].(string)
	target, _ := fe.props[`content.m\.relates_to.event_id`].(string)
	for hop := 0; hop < maxThreadHops && target != ""; hop++ {
		if relType == "m.thread" {
			return target, nil
		}
		ev, _, err := p.s.db.EventByID(ctx, target)
		if err != nil {
			return "", err
		}
		if ev == nil || ev.RoomID != ne.RoomID {
			break
		}
		var c struct {
			Content struct {
				RelatesTo struct {
					RelType string `json:"rel_type"`
					EventID string `json:"event_id"`
				} `json:"m.relates_to"`
			} `json:"content"`
		}
		_ = json.Unmarshal(ev.JSON, &c)
		relType, target = c.Content.RelatesTo.RelType, c.Content.RelatesTo.EventID
	}
	return "main", nil
}

// rulesFor returns compiled rules for each user, loading the missing ones
// in one query.
func (p *pusher) rulesFor(ctx context.Context, users []string) (map[string]*compiledRules, error) {
	out := make(map[string]*compiledRules, len(users))
	var missing []string
	now := time.Now()
	p.rulesMu.Lock()
	for _, u := range users {
		if c, ok := p.rules[u]; ok && now.Sub(c.loaded) < pushRulesTTL {
			out[u] = c.compiled
		} else {
			missing = append(missing, u)
		}
	}
	p.rulesMu.Unlock()
	if len(missing) == 0 {
		return out, nil
	}
	stored, err := p.s.db.PushRulesFor(ctx, missing)
	if err != nil {
		return nil, err
	}
	p.rulesMu.Lock()
	defer p.rulesMu.Unlock()
	for _, u := range missing {
		var ur userPushRules
		if raw := stored[u]; raw != nil {
			if err := json.Unmarshal(raw, &ur); err != nil {
				logrus.WithError(err).WithField("user_id", u).Error("syncapi: stored push rules do not parse; using defaults")
				ur = userPushRules{}
			}
		}
		c := compileRules(u, ur.merged(u))
		p.rules[u] = cachedRules{compiled: c, loaded: now}
		out[u] = c
	}
	return out, nil
}

func (p *pusher) invalidateRules(userID string) {
	p.rulesMu.Lock()
	delete(p.rules, userID)
	p.rulesMu.Unlock()
}

// pushStateTypes are the state events pushRoom is built from.
var pushStateTypes = []string{"m.room.member", "m.room.power_levels", "m.room.create", "m.room.name"}

// room returns the cached state of a room, loading it on first use.
func (p *pusher) room(ctx context.Context, roomID string) (*pushRoom, error) {
	p.roomsMu.Lock()
	r := p.rooms[roomID]
	p.roomsMu.Unlock()
	if r != nil {
		return r, nil
	}
	state, err := p.s.db.CurrentState(ctx, storage.StateQuery{RoomID: roomID, Types: pushStateTypes})
	if err != nil {
		return nil, fmt.Errorf("push state of %s: %w", roomID, err)
	}
	r = &pushRoom{members: map[string]memberName{}}
	for i := range state {
		r.apply(&state[i])
	}
	p.roomsMu.Lock()
	if len(p.rooms) >= maxPushRooms {
		for k := range p.rooms { // evict an arbitrary room; it reloads on use
			delete(p.rooms, k)
			break
		}
	}
	p.rooms[roomID] = r
	p.roomsMu.Unlock()
	return r, nil
}

// stored updates the room cache once an event is stored (in its
// transaction: the next event of a batch is evaluated against it). Only
// the consumer goroutine calls prepare and stored, so a room is never
// updated while it is being evaluated.
func (p *pusher) stored(ne *storage.NewEvent) {
	if ne.SoftFailed || (len(ne.AddsState) == 0 && len(ne.RemovesState) == 0) {
		return
	}
	p.roomsMu.Lock()
	defer p.roomsMu.Unlock()
	r := p.rooms[ne.RoomID]
	if r == nil {
		return
	}
	simple := len(ne.AddsState) == 1 && ne.AddsState[0] == ne.EventID && len(ne.RemovesState) <= 1 && ne.StateKey != nil
	if !simple {
		// State resolution replaced state we cannot see from here:
		// reload on next use.
		delete(p.rooms, ne.RoomID)
		return
	}
	sk := *ne.StateKey
	r.apply(&storage.Event{Type: ne.Type, StateKey: &sk, Sender: ne.Sender, JSON: ne.JSON})
}

// apply folds one current-state event into the room.
func (r *pushRoom) apply(ev *storage.Event) {
	if ev.StateKey == nil {
		return
	}
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(ev.JSON, &e)
	switch ev.Type {
	case "m.room.member":
		var c struct {
			Membership  string `json:"membership"`
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(e.Content, &c)
		if c.Membership == "join" {
			r.members[*ev.StateKey] = memberName{display: c.DisplayName, lower: strings.ToLower(c.DisplayName)}
		} else {
			delete(r.members, *ev.StateKey)
		}
	case "m.room.name":
		if *ev.StateKey == "" {
			var c struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(e.Content, &c)
			r.name = c.Name
		}
	case "m.room.create":
		if *ev.StateKey == "" {
			var c struct {
				Creator string `json:"creator"`
			}
			_ = json.Unmarshal(e.Content, &c)
			r.creator = c.Creator
			if r.creator == "" { // room version 11 and later: the sender
				r.creator = ev.Sender
			}
		}
	case "m.room.power_levels":
		if *ev.StateKey == "" {
			var c struct {
				Users         map[string]json.RawMessage `json:"users"`
				UsersDefault  json.RawMessage            `json:"users_default"`
				Notifications map[string]json.RawMessage `json:"notifications"`
			}
			_ = json.Unmarshal(e.Content, &c)
			r.hasPL = true
			r.plUsers = map[string]int64{}
			for u, v := range c.Users {
				if n, ok := powerLevel(v); ok {
					r.plUsers[u] = n
				}
			}
			r.plUsersDefault, _ = powerLevel(c.UsersDefault)
			r.plNotif = map[string]int64{}
			for k, v := range c.Notifications {
				if n, ok := powerLevel(v); ok {
					r.plNotif[k] = n
				}
			}
		}
	}
}

// forgetRooms drops the cached state of rooms whose events were applied
// to it by stored but then not committed.
func (p *pusher) forgetRooms(evs []*storage.NewEvent) {
	p.roomsMu.Lock()
	defer p.roomsMu.Unlock()
	for _, ne := range evs {
		delete(p.rooms, ne.RoomID)
	}
}

// powerLevel reads a power level, which older rooms may give as a string.
func powerLevel(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

// evalRoom is the room's part of evaluating one event by sender. Without
// a power levels event the creator has 100 and everyone else 0 (spec
// §"m.room.power_levels").
func (r *pushRoom) evalRoom(sender string) evalRoom {
	er := evalRoom{memberCount: int64(len(r.members)), notifLevels: r.plNotif}
	switch {
	case !r.hasPL:
		if sender == r.creator {
			er.senderPower = 100
		}
	default:
		if n, ok := r.plUsers[sender]; ok {
			er.senderPower = n
		} else {
			er.senderPower = r.plUsersDefault
		}
	}
	return er
}

// names returns the room's name and a member's display name, for pushes.
func (p *pusher) names(ctx context.Context, roomID, userID string) (roomName, displayName string) {
	r, err := p.room(ctx, roomID)
	if err != nil {
		return "", ""
	}
	p.roomsMu.Lock()
	defer p.roomsMu.Unlock()
	return r.name, r.members[userID].display
}

// directoryChange returns the user directory write an event implies: a
// join records the member's display name and avatar; a join rule change
// records whether the room is public.
func directoryChange(ne *storage.NewEvent) func(ctx context.Context, tx *sql.Tx) error {
	if ne.StateKey == nil {
		return nil
	}
	switch {
	case ne.Type == "m.room.member" && ne.Membership == "join":
		var e struct {
			Content struct {
				DisplayName string `json:"displayname"`
				AvatarURL   string `json:"avatar_url"`
			} `json:"content"`
		}
		_ = json.Unmarshal(ne.JSON, &e)
		user := *ne.StateKey
		return func(ctx context.Context, tx *sql.Tx) error {
			return storage.SetDirectoryEntry(ctx, tx, user, e.Content.DisplayName, e.Content.AvatarURL)
		}
	case ne.Type == "m.room.join_rules" && *ne.StateKey == "":
		var e struct {
			Content struct {
				JoinRule string `json:"join_rule"`
			} `json:"content"`
		}
		_ = json.Unmarshal(ne.JSON, &e)
		public := e.Content.JoinRule == "public"
		return func(ctx context.Context, tx *sql.Tx) error {
			return storage.SetRoomPublic(ctx, tx, ne.RoomID, public)
		}
	}
	return nil
}

// recountAfterReceipt brings a user's counts in line with a moved read
// receipt (client-server spec §"Marking notifications as read").
func (s *Service) recountAfterReceipt(ctx context.Context, rc storage.Receipt) error {
	if rc.Type != "m.read" && rc.Type != "m.read.private" {
		return nil
	}
	if err := s.db.RecountRoom(ctx, rc.UserID, rc.RoomID); err != nil {
		return err
	}
	s.caches.counts.invalidate(rc.UserID)
	return nil
}

// addUnreadCounts fills unread_notifications (and, when the timeline
// filter asks, unread_thread_notifications) of the joined rooms in resp.
// Spec: client-server §"Receiving notifications" and §"Threaded read
// receipts": with per-thread counts, unread_notifications covers the main
// timeline only.
func (s *Service) addUnreadCounts(ctx context.Context, req *syncRequest, resp *syncResponse) error {
	if len(resp.Rooms.Join) == 0 {
		return nil
	}
	ids := make([]string, 0, len(resp.Rooms.Join))
	for id := range resp.Rooms.Join {
		ids = append(ids, id)
	}
	counts, err := s.unreadCounts(ctx, req.userID, ids)
	if err != nil {
		return err
	}
	perThread := false
	if tl := req.filter.room().Timeline; tl != nil {
		perThread = tl.UnreadThreadNotifications
	}
	for _, c := range counts {
		jr := resp.Rooms.Join[c.RoomID]
		if jr == nil {
			continue
		}
		if !perThread || c.ThreadID == "main" {
			jr.UnreadNotifications.NotificationCount += int(c.Notifications)
			jr.UnreadNotifications.HighlightCount += int(c.Highlights)
			continue
		}
		if jr.UnreadThreadNotifications == nil {
			jr.UnreadThreadNotifications = map[string]notifications{}
		}
		jr.UnreadThreadNotifications[c.ThreadID] = notifications{NotificationCount: int(c.Notifications), HighlightCount: int(c.Highlights)}
	}
	return nil
}

// startPush creates and starts the push gateway worker and the presence
// flusher; stopPush stops them.
func (s *Service) startPush() {
	s.push = newPusher(s)
	s.push.gateway = newPushGateway(s)
	s.push.gateway.start()
	s.presence = newPresenceTracker(s)
	s.presence.start()
}

func (s *Service) stopPush() {
	if s.push == nil {
		return
	}
	s.push.stopOnce.Do(func() {
		s.push.gateway.close()
		s.presence.close()
	})
}

// addPushData adds what this file's features contribute to a sync
// response: unread counts, presence, and on an initial sync the
// m.push_rules account data of a user who never changed their rules (the
// client needs the server defaults to show its notification settings).
func (s *Service) addPushData(ctx context.Context, req *syncRequest, memberships []storage.RoomMembership, since StreamToken, next *StreamToken, resp *syncResponse) error {
	if err := s.addUnreadCounts(ctx, req, resp); err != nil {
		return err
	}
	if err := s.addPresence(ctx, req, memberships, since, next, resp); err != nil {
		return err
	}
	if req.since != nil {
		return nil
	}
	f := req.filter
	if f != nil && f.AccountData != nil && !matchList(f.AccountData.Types, f.AccountData.NotTypes, "m.push_rules", true) {
		return nil
	}
	for _, ev := range resp.AccountData.Events {
		var e struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(ev, &e) == nil && e.Type == "m.push_rules" {
			return nil
		}
	}
	ev, _ := json.Marshal(map[string]any{"type": "m.push_rules", "content": json.RawMessage(pushRulesContent(defaultRules(req.userID)))})
	resp.AccountData.Events = append(resp.AccountData.Events, ev)
	return nil
}
