package syncapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Presence (client-server spec §"Presence").
//
// Syncing marks a user online (or unavailable, per set_presence). Those
// implicit updates are only recorded in memory and written in one batch
// per presenceFlushInterval, coalesced per user, so thousands of clients
// reconnecting at once cost one transaction a second rather than one per
// request. An explicit PUT /presence is written before it is answered.
// A user who stops syncing (no sync in flight for presenceIdle) goes
// offline. Refreshing last_active_ts alone takes no stream position and
// wakes nobody.
const (
	presenceFlushInterval = time.Second
	presenceIdle          = 90 * time.Second
	// lastActiveGranularity: activity refreshes last_active_ts at most
	// this often per user.
	lastActiveGranularity = time.Minute
	// currentlyActiveWindow: a user active this recently is
	// currently_active.
	currentlyActiveWindow = 5 * time.Minute
	maxStatusMsgLength    = 1024
	maxPresencePerSync    = 1000
)

type presenceTracker struct {
	s       *Service
	enabled bool

	mu      sync.Mutex
	entries map[string]*presenceEntry
	dirty   map[string]bool

	stop chan struct{}
	done chan struct{}
}

// presenceEntry is what this instance knows of a user it has seen sync.
type presenceEntry struct {
	// stored is the presence as last read or written; nil until known.
	stored *storage.Presence
	// want is the state the user's syncs ask for ("" for no change).
	want     string
	syncing  int
	lastSeen time.Time
}

func newPresenceTracker(s *Service) *presenceTracker {
	enabled := s.cfg == nil || s.cfg.Presence.Enabled
	return &presenceTracker{s: s, enabled: enabled, entries: map[string]*presenceEntry{}, dirty: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{})}
}

func (t *presenceTracker) start() {
	go func() {
		defer close(t.done)
		tick := time.NewTicker(presenceFlushInterval)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				t.flush(context.Background())
				return
			case <-tick.C:
				t.flush(context.Background())
			}
		}
	}()
}

func (t *presenceTracker) close() {
	close(t.stop)
	<-t.done
}

// syncing records that a /sync began, with its set_presence parameter, and
// returns the function to call when it ends. Spec §"GET /sync",
// set_presence: omitted means online; offline means "do not mark online".
func (t *presenceTracker) syncing(userID, setPresence string) func() {
	if !t.enabled {
		return func() {}
	}
	now := time.Now()
	t.mu.Lock()
	e := t.entries[userID]
	if e == nil {
		e = &presenceEntry{}
		t.entries[userID] = e
	}
	e.syncing++
	e.lastSeen = now
	switch setPresence {
	case "", "online":
		e.want = "online"
	case "unavailable":
		e.want = "unavailable"
	}
	if e.want != "" && (e.stored == nil || e.stored.Presence != e.want ||
		now.Sub(time.UnixMilli(e.stored.LastActiveTS)) > lastActiveGranularity) {
		t.dirty[userID] = true
	}
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		e.syncing--
		e.lastSeen = time.Now()
		t.mu.Unlock()
	}
}

// flush writes the coalesced changes of the last interval and sends users
// who stopped syncing offline.
func (t *presenceTracker) flush(ctx context.Context) {
	now := time.Now()
	t.mu.Lock()
	for u, e := range t.entries {
		if e.syncing == 0 && now.Sub(e.lastSeen) > presenceIdle {
			if e.stored != nil && e.stored.Presence == "offline" {
				delete(t.entries, u)
				continue
			}
			e.want = "offline"
			t.dirty[u] = true
		}
	}
	if len(t.dirty) == 0 {
		t.mu.Unlock()
		return
	}
	users := make([]string, 0, len(t.dirty))
	var unknown []string
	for u := range t.dirty {
		users = append(users, u)
		if e := t.entries[u]; e != nil && e.stored == nil {
			unknown = append(unknown, u)
		}
	}
	t.dirty = map[string]bool{}
	t.mu.Unlock()

	loaded := map[string]*storage.Presence{}
	if len(unknown) > 0 {
		ps, err := t.s.db.PresencesFor(ctx, unknown)
		if err != nil {
			logrus.WithError(err).Error("syncapi: load presence")
			t.redo(users)
			return
		}
		for i := range ps {
			loaded[ps[i].UserID] = &ps[i]
		}
	}

	var changes []storage.Presence
	var touch []string
	t.mu.Lock()
	for _, u := range users {
		e := t.entries[u]
		if e == nil || e.want == "" {
			continue
		}
		if e.stored == nil {
			e.stored = loaded[u]
		}
		cur := e.stored
		switch {
		case cur == nil || cur.Presence != e.want:
			p := storage.Presence{UserID: u, Presence: e.want, LastActiveTS: now.UnixMilli(), CurrentlyActive: e.want == "online"}
			if cur != nil {
				p.StatusMsg = cur.StatusMsg
				if e.want == "offline" {
					p.LastActiveTS = cur.LastActiveTS
				}
			}
			changes = append(changes, p)
			e.stored = &p
		case e.want != "offline" && now.Sub(time.UnixMilli(cur.LastActiveTS)) > lastActiveGranularity:
			touch = append(touch, u)
			cur.LastActiveTS = now.UnixMilli()
		}
		if e.want == "offline" {
			delete(t.entries, u)
		}
	}
	t.mu.Unlock()

	if len(touch) > 0 {
		if err := t.s.db.TouchPresence(ctx, touch, now.UnixMilli()); err != nil {
			logrus.WithError(err).Error("syncapi: refresh presence")
		}
	}
	if len(changes) == 0 {
		return
	}
	for start := 0; start < len(changes); start += 500 {
		if _, err := t.s.db.PutPresences(ctx, changes[start:min(start+500, len(changes))]); err != nil {
			logrus.WithError(err).Error("syncapi: store presence")
			t.forget(changes)
			return
		}
	}
	changed := make([]string, len(changes))
	for i, c := range changes {
		changed[i] = c.UserID
	}
	t.s.publishPresence(ctx, changes)
	t.wake(ctx, changed)
}

// redo marks users dirty again after a failed flush.
func (t *presenceTracker) redo(users []string) {
	t.mu.Lock()
	for _, u := range users {
		t.dirty[u] = true
	}
	t.mu.Unlock()
}

// forget drops what a failed write claimed was stored, so the next
// flush reloads and retries.
func (t *presenceTracker) forget(changes []storage.Presence) {
	t.mu.Lock()
	for _, c := range changes {
		if e := t.entries[c.UserID]; e != nil {
			e.stored = nil
			t.dirty[c.UserID] = true
		}
	}
	t.mu.Unlock()
}

// wake wakes the changed users and everyone sharing a room with them.
func (t *presenceTracker) wake(ctx context.Context, users []string) {
	rooms, err := t.s.db.JoinedRoomsOfAny(ctx, users)
	if err != nil {
		logrus.WithError(err).Error("syncapi: rooms for presence wake-up")
	}
	t.s.notifier.WakeUsers(users...)
	for _, r := range rooms {
		t.s.notifier.WakeRoom(r)
	}
}

// set stores an explicit presence change at once.
func (t *presenceTracker) set(ctx context.Context, userID, presence string, statusMsg *string) error {
	now := time.Now()
	p := storage.Presence{UserID: userID, Presence: presence, StatusMsg: statusMsg, LastActiveTS: now.UnixMilli(), CurrentlyActive: presence == "online"}
	if _, err := t.s.db.PutPresences(ctx, []storage.Presence{p}); err != nil {
		return err
	}
	t.mu.Lock()
	if e := t.entries[userID]; e != nil {
		e.stored = &p
		e.want = ""
		if presence != "offline" {
			e.want = presence
		}
	}
	t.mu.Unlock()
	t.s.publishPresence(ctx, []storage.Presence{p})
	t.wake(ctx, []string{userID})
	return nil
}

// presenceContent is the content of an m.presence event and the answer of
// GET /presence/{userId}/status.
type presenceContent struct {
	Presence        string  `json:"presence"`
	LastActiveAgo   *int64  `json:"last_active_ago,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// presenceEvent is an m.presence event in /sync (a struct, not a map: a
// burst of presence changes puts thousands of them in responses).
type presenceEvent struct {
	Type    string          `json:"type"`
	Sender  string          `json:"sender"`
	Content presenceContent `json:"content"`
}

func presenceContentOf(p *storage.Presence, now time.Time) presenceContent {
	ago := max(now.UnixMilli()-p.LastActiveTS, 0)
	c := presenceContent{Presence: p.Presence, LastActiveAgo: &ago, StatusMsg: p.StatusMsg}
	if p.Presence == "online" {
		active := p.CurrentlyActive && time.Duration(ago)*time.Millisecond < currentlyActiveWindow
		c.CurrentlyActive = &active
	}
	return c
}

// addPresence adds to resp the presence changes in (since, cur] of users
// who share a room with the requester (and the requester's own).
func (s *Service) addPresence(ctx context.Context, req *syncRequest, memberships []storage.RoomMembership, since StreamToken, next *StreamToken, resp *syncResponse) error {
	if !s.presence.enabled || next.Presence <= since.Presence {
		return nil
	}
	var pf *EventFilter
	if req.filter != nil {
		pf = req.filter.Presence
	}
	if pf != nil && pf.Types != nil && len(*pf.Types) == 0 {
		return nil
	}
	var joined []string
	for _, m := range memberships {
		if m.Membership == "join" {
			joined = append(joined, m.RoomID)
		}
	}
	// The users sharing a room with the requester are known in memory, and
	// so is the newest presence of each user: looking up the room-mates
	// costs a lookup each, not a scan of everyone's changes.
	changes, ok := s.db.PresenceOf(s.notifier.usersSharing(joined, req.userID), since.Presence, next.Presence, req.since == nil)
	if !ok {
		var err error
		if changes, err = s.db.PresenceSince(ctx, since.Presence, next.Presence, req.since == nil, maxPresencePerSync); err != nil {
			return err
		}
	}
	if len(changes) >= maxPresencePerSync {
		changes = changes[:maxPresencePerSync]
		next.Presence = changes[len(changes)-1].Position
	}
	limit := pf.limit(maxPresencePerSync, maxPresencePerSync)
	now := time.Now()
	users := make([]string, len(changes))
	for i := range changes {
		users[i] = changes[i].UserID
	}
	sharing := s.notifier.sharingAnyRoom(joined, users)
	for i := range changes {
		p := &changes[i]
		if len(resp.Presence.Events) >= limit {
			break
		}
		if !pf.matches(p.UserID, "m.presence") {
			continue
		}
		if p.UserID != req.userID && !sharing[p.UserID] {
			continue
		}
		ev, _ := json.Marshal(presenceEvent{Type: "m.presence", Sender: p.UserID, Content: presenceContentOf(p, now)})
		resp.Presence.Events = append(resp.Presence.Events, ev)
	}
	return nil
}

// sharingAnyRoom returns which of users are joined to any of rooms, under
// one lock for all of them: a burst of presence changes is checked by
// every woken sync.
func (n *Notifier) sharingAnyRoom(rooms, users []string) map[string]bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make(map[string]bool, len(users))
	for _, u := range users {
		for _, r := range rooms {
			if _, ok := n.joined[r][u]; ok {
				out[u] = true
				break
			}
		}
	}
	return out
}

// usersSharing returns self and the users joined to any of rooms, each
// once.
func (n *Notifier) usersSharing(rooms []string, self string) []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	seen := map[string]bool{self: true}
	out := []string{self}
	for _, r := range rooms {
		for u := range n.joined[r] {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	return out
}

// presenceStates are the values of the presence field.
var presenceStates = map[string]bool{"online": true, "offline": true, "unavailable": true}

// validUserID is a loose check of the user ID grammar, enough to refuse
// garbage in a path.
func validUserID(id string) bool {
	return strings.HasPrefix(id, "@") && strings.IndexByte(id, ':') > 1 && len(id) <= 255
}

// handleGetPresence serves GET /presence/{userId}/status. Another user's
// presence is visible only to people who share a room with them.
func (s *Service) handleGetPresence(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller := httputil.CallerFrom(r.Context())
		target := pathParam(r, "userId")
		if !validUserID(target) {
			return httputil.InvalidParam("%q is not a user ID", target)
		}
		if target != caller.UserID {
			ok, err := s.db.SharesRoom(r.Context(), caller.UserID, target)
			if err != nil {
				return err
			}
			if !ok {
				return httputil.Forbidden("You do not share a room with this user")
			}
		}
		var p *storage.Presence
		if s.presence.enabled {
			var err error
			if p, err = s.db.GetPresence(r.Context(), target); err != nil {
				return err
			}
		}
		if p == nil {
			httputil.WriteJSON(w, http.StatusOK, presenceContent{Presence: "offline"})
			return nil
		}
		httputil.WriteJSON(w, http.StatusOK, presenceContentOf(p, time.Now()))
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
	}
}

// handlePutPresence serves PUT /presence/{userId}/status; only for
// oneself.
func (s *Service) handlePutPresence(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		caller, err := ownUser(r)
		if err != nil {
			return err
		}
		var body struct {
			Presence  string  `json:"presence"`
			StatusMsg *string `json:"status_msg"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		if !presenceStates[body.Presence] {
			return httputil.InvalidParam("presence must be online, offline or unavailable")
		}
		if body.StatusMsg != nil && len(*body.StatusMsg) > maxStatusMsgLength {
			return httputil.InvalidParam("status_msg is longer than %d bytes", maxStatusMsgLength)
		}
		if !s.presence.enabled {
			return nil
		}
		return s.presence.set(r.Context(), caller.UserID, body.Presence, body.StatusMsg)
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
