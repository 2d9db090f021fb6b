package syncapi

import (
	"context"
	"slices"
	"sync"

	"github.com/parley-chat/parley/syncapi/storage"
)

// The sync API's in-memory caches, so that a woken long-poll whose news is
// a few new messages is answered without database queries. Every cache is
// bounded, and each is kept right by the roomserver-output consumer, which
// updates them after an event's transaction commits and before it
// publishes the event's stream position (storage.PublishEvents): a reader
// that sees position N therefore sees every cache as of N or later, and
// what is newer than its token is cut off by position. What the consumer
// cannot update in place it invalidates; the next reader reloads it.
//
//   - filters: parsed stored filters by (user, filter ID); a stored filter
//     never changes.
//   - userRooms: each user's current memberships (storage.RoomsForUser),
//     invalidated on each membership change of the user.
//   - lastPos: the position of every known room's newest event.
//   - tails: the last tailLength events of recently active rooms.
//   - summaries: joined/invited members of a room, in change order, for
//     the room summary (counts and heroes), updated in place.
//   - state: a room's current state with each entry's change position,
//     updated in place for ordinary state events, invalidated when state
//     resolution or a redaction changes more than the event itself.
//   - counts: each user's unread notification counts, incremented and
//     cleared in place as the consumer stores notifications, invalidated
//     by a read receipt's recount.
//
// Updating in place must not apply a change twice: a load that ran after
// the change committed but before the consumer applied it would count it
// once in the database and once more in memory. Summaries and state are
// updated idempotently (the same change applied again moves nothing);
// counts are not, so loads of counts wait while the consumer holds
// countsGate, from before its transaction until it has applied it.

// Bounds of the caches.
const (
	maxCachedFilters = 20000
	maxCachedUsers   = 50000
	// tailLength events per room are kept; a sync token older than a
	// room's tail falls back to the database.
	tailLength   = 50
	maxTailRooms = 5000
	// Summaries and state are bounded by their total number of members
	// and state events.
	maxCachedMembers     = 1_000_000
	maxCachedStateEvents = 200_000
	maxCachedCounts      = 200_000
)

type filterKey struct{ userID, filterID string }

type syncCaches struct {
	filters   *loadingCache[filterKey, *Filter]
	userRooms *loadingCache[string, []storage.RoomMembership]
	summaries *loadingCache[string, *memberSummary]
	state     *loadingCache[string, *roomState]
	counts    *loadingCache[string, userCounts]
	// countsGate is held (write) by the consumer around storing and
	// applying, and (read) by loads of counts.
	countsGate sync.RWMutex

	roomsMu sync.Mutex
	lastPos map[string]int64
	tails   *lru[string, *roomTail]
}

func newSyncCaches() *syncCaches {
	return &syncCaches{
		filters:   newLoadingCache[filterKey, *Filter](maxCachedFilters, nil),
		userRooms: newLoadingCache[string, []storage.RoomMembership](maxCachedUsers, nil),
		summaries: newLoadingCache[string](maxCachedMembers, func(m *memberSummary) int { return len(m.order) + 1 }),
		state:     newLoadingCache[string](maxCachedStateEvents, func(s *roomState) int { return len(s.entries) + 1 }),
		counts:    newLoadingCache[string](maxCachedCounts, userCounts.size),
		lastPos:   map[string]int64{},
		tails:     newLRU[string, *roomTail](maxTailRooms, nil),
	}
}

// load fills what is kept for every room. It runs before the consumer
// starts.
func (c *syncCaches) load(ctx context.Context, db *storage.DB) error {
	return db.AllRoomLastPositions(ctx, func(roomID string, pos int64) { c.lastPos[roomID] = pos })
}

// roomTail holds every event of a room with a position above from (at
// most tailLength of them), oldest first.
type roomTail struct {
	from   int64
	events []tailEvent
}

type tailEvent struct {
	storage.Event
	softFailed bool
	// changesState: the event changed current state, which the tail does
	// not track; a sync spanning it reads the database.
	changesState bool
	// hasChildren: relations to the event exist, so its bundled
	// aggregations must be read.
	hasChildren bool
}

// stored brings the caches up to date with one stored event. Only the
// consumer calls it, in stream order.
func (c *syncCaches) stored(ne *storage.NewEvent, res *storage.StoreResult) {
	redaction := ne.Redacts != "" && !ne.SoftFailed
	changesState := len(ne.AddsState) > 0 || len(ne.RemovesState) > 0

	c.roomsMu.Lock()
	c.lastPos[ne.RoomID] = res.Position
	t, ok := c.tails.get(ne.RoomID)
	if !ok || redaction {
		// A new tail starts after the room's previous event. A redaction
		// rewrites an event the tail may hold: start again after it.
		t = &roomTail{from: res.PrevLastPosition}
		c.tails.put(ne.RoomID, t)
	}
	if rel, ok := storage.RelationOf(ne.JSON); ok && !ne.SoftFailed {
		for i := range t.events {
			if t.events[i].EventID == rel.Parent {
				t.events[i].hasChildren = true
			}
		}
	}
	if len(t.events) == tailLength {
		t.from = t.events[0].Position
		copy(t.events, t.events[1:])
		t.events = t.events[:tailLength-1]
	}
	t.events = append(t.events, tailEvent{Event: res.Event, softFailed: ne.SoftFailed, changesState: changesState, hasChildren: res.HasChildren})
	c.roomsMu.Unlock()

	for _, ch := range res.Changes {
		c.userRooms.invalidate(ch.UserID)
	}
	if len(res.Changes) > 0 {
		c.summaries.update(ne.RoomID, func(m *memberSummary) bool {
			for _, ch := range res.Changes {
				m.apply(ch.UserID, ch.Membership)
			}
			return true
		})
	}
	if changesState || redaction {
		simple := !redaction && len(ne.AddsState) <= 1 && (len(ne.AddsState) == 0 || ne.AddsState[0] == ne.EventID)
		c.state.update(ne.RoomID, func(s *roomState) bool {
			if !simple {
				return false
			}
			s.apply(ne, res)
			return true
		})
	}
}

// lastPosition is the position of the room's newest event (0 if none).
func (c *syncCaches) lastPosition(roomID string) int64 {
	c.roomsMu.Lock()
	defer c.roomsMu.Unlock()
	return c.lastPos[roomID]
}

// tailBetween returns the room's events in (after, upto], oldest first, if
// the tail holds all of them.
func (c *syncCaches) tailBetween(roomID string, after, upto int64) ([]tailEvent, bool) {
	c.roomsMu.Lock()
	defer c.roomsMu.Unlock()
	t, ok := c.tails.get(roomID)
	if !ok || t.from > after {
		return nil, false
	}
	var out []tailEvent
	for _, e := range t.events {
		if e.Position > after && e.Position <= upto {
			out = append(out, e)
		}
	}
	return out, true
}

// stateMayHaveChanged says whether the room's state (and so its
// membership) may have changed in (after, upto]: not if none of its events
// is in that range, or if its tail holds them all and none changed state.
func (c *syncCaches) stateMayHaveChanged(roomID string, after, upto int64) bool {
	c.roomsMu.Lock()
	defer c.roomsMu.Unlock()
	if c.lastPos[roomID] <= after {
		return false
	}
	t, ok := c.tails.get(roomID)
	if !ok || t.from > after {
		return true
	}
	for _, e := range t.events {
		if e.Position > after && e.Position <= upto && e.changesState {
			return true
		}
	}
	return false
}

// memberSummary is what a room summary is computed from: the joined and
// invited members, oldest membership change first (the order heroes are
// picked in).
type memberSummary struct {
	joined, invited int
	order           []string
	membership      map[string]string
}

func newMemberSummary(members []storage.MemberAt) *memberSummary {
	m := &memberSummary{membership: make(map[string]string, len(members)), order: make([]string, 0, len(members))}
	for _, mem := range members {
		m.apply(mem.UserID, mem.Membership)
	}
	return m
}

// apply records a membership change newer than every one recorded: the
// user moves to the end of the order.
func (m *memberSummary) apply(userID, membership string) {
	if old, ok := m.membership[userID]; ok {
		delete(m.membership, userID)
		if old == "join" {
			m.joined--
		} else {
			m.invited--
		}
		if i := slices.Index(m.order, userID); i >= 0 {
			m.order = slices.Delete(m.order, i, i+1)
		}
	}
	switch membership {
	case "join":
		m.joined++
	case "invite":
		m.invited++
	default:
		return
	}
	m.membership[userID] = membership
	m.order = append(m.order, userID)
}

// summary is the room summary for a user (client-server spec §"GET
// /sync", RoomSummary): counts, and up to limit heroes other than them.
func (m *memberSummary) summary(exclude string, limit int) *roomSummary {
	out := &roomSummary{Heroes: []string{}, JoinedMemberCount: m.joined, InvitedMemberCount: m.invited}
	for _, u := range m.order {
		if len(out.Heroes) == limit {
			break
		}
		if u != exclude {
			out.Heroes = append(out.Heroes, u)
		}
	}
	return out
}

// roomSummary returns the room's summary for userID.
func (s *Service) roomSummary(ctx context.Context, roomID, userID string) (*roomSummary, error) {
	var out *roomSummary
	err := s.caches.summaries.use(ctx, roomID, func(ctx context.Context) (*memberSummary, error) {
		members, err := s.db.JoinedOrInvited(ctx, roomID)
		if err != nil {
			return nil, err
		}
		return newMemberSummary(members), nil
	}, func(m *memberSummary) { out = m.summary(userID, heroesLimit) })
	return out, err
}

// roomState is a room's current state, ordered by event position.
type roomState struct {
	entries []storage.StateEntry
}

// apply folds in an event whose state change is itself alone: it replaces
// the entry of its (type, state_key), and what it removes goes. Applying
// it to state that already has it (loaded after it committed) changes
// nothing.
func (s *roomState) apply(ne *storage.NewEvent, res *storage.StoreResult) {
	adds := len(ne.AddsState) == 1 && ne.StateKey != nil
	had := false
	s.entries = slices.DeleteFunc(s.entries, func(e storage.StateEntry) bool {
		if e.EventID == ne.EventID {
			had = true
			return false
		}
		return slices.Contains(ne.RemovesState, e.EventID) ||
			(adds && e.Type == ne.Type && e.StateKey != nil && *e.StateKey == *ne.StateKey)
	})
	if adds && !had {
		// Entries are ordered by event position; a later event of the same
		// batch may already be there.
		i := len(s.entries)
		for i > 0 && s.entries[i-1].Position > res.Position {
			i--
		}
		s.entries = slices.Insert(s.entries, i, storage.StateEntry{Event: res.Event, ChangedAt: res.Position})
	}
}

// currentState returns the room's current state events matching q, as
// storage.CurrentState would, from the cache.
func (s *Service) currentState(ctx context.Context, q storage.StateQuery) ([]storage.Event, error) {
	var out []storage.Event
	err := s.caches.state.use(ctx, q.RoomID, func(ctx context.Context) (*roomState, error) {
		entries, err := s.db.CurrentStateEntries(ctx, q.RoomID)
		if err != nil {
			return nil, err
		}
		return &roomState{entries: entries}, nil
	}, func(rs *roomState) {
		for i := range rs.entries {
			if e := &rs.entries[i]; stateQueryMatches(&q, e) {
				out = append(out, e.Event)
			}
		}
	})
	return out, err
}

func stateQueryMatches(q *storage.StateQuery, e *storage.StateEntry) bool {
	member := e.Type == "m.room.member"
	switch {
	case q.ChangedAfter > 0 && e.ChangedAt <= q.ChangedAfter,
		len(q.Types) > 0 && !slices.Contains(q.Types, e.Type),
		slices.Contains(q.NotTypes, e.Type),
		q.OnlyMembers && !member:
		return false
	}
	if q.MemberKeys != nil && member {
		return e.StateKey != nil && slices.Contains(q.MemberKeys, *e.StateKey)
	}
	return true
}

// roomsForUser is storage.RoomsForUser through the cache. The slice is
// shared: callers must not modify it.
func (s *Service) roomsForUser(ctx context.Context, userID string) ([]storage.RoomMembership, error) {
	return s.caches.userRooms.get(ctx, userID, func(ctx context.Context) ([]storage.RoomMembership, error) {
		return s.db.RoomsForUser(ctx, userID)
	})
}

// userCounts are a user's unread counts by room and thread.
type userCounts map[string]map[string]*storage.ThreadCount

func (u userCounts) size() int {
	n := 1
	for _, threads := range u {
		n += len(threads)
	}
	return n
}

// countsChange is how storing one event changes unread counts: the
// sender's counts in the room are cleared, then each notification counts.
type countsChange struct {
	roomID  string
	cleared string
	notifs  []storage.Notification
}

// applyCounts brings cached counts in line with a stored event; the
// consumer holds countsGate.
func (c *syncCaches) applyCounts(ch countsChange) {
	if ch.cleared != "" {
		c.counts.update(ch.cleared, func(u userCounts) bool {
			delete(u, ch.roomID)
			return true
		})
	}
	for _, n := range ch.notifs {
		c.counts.update(n.UserID, func(u userCounts) bool {
			threads := u[n.RoomID]
			if threads == nil {
				threads = map[string]*storage.ThreadCount{}
				u[n.RoomID] = threads
			}
			tc := threads[n.ThreadID]
			if tc == nil {
				tc = &storage.ThreadCount{RoomID: n.RoomID, ThreadID: n.ThreadID}
				threads[n.ThreadID] = tc
			}
			tc.Notifications++
			if n.Highlight {
				tc.Highlights++
			}
			return true
		})
	}
}

// unreadCounts is storage.UnreadCounts through the cache.
func (s *Service) unreadCounts(ctx context.Context, userID string, roomIDs []string) ([]storage.ThreadCount, error) {
	var out []storage.ThreadCount
	err := s.caches.counts.use(ctx, userID, func(ctx context.Context) (userCounts, error) {
		s.caches.countsGate.RLock()
		defer s.caches.countsGate.RUnlock()
		rows, err := s.db.AllUnreadCounts(ctx, userID)
		if err != nil {
			return nil, err
		}
		u := userCounts{}
		for i := range rows {
			r := rows[i]
			if u[r.RoomID] == nil {
				u[r.RoomID] = map[string]*storage.ThreadCount{}
			}
			u[r.RoomID][r.ThreadID] = &r
		}
		return u, nil
	}, func(u userCounts) {
		for _, id := range roomIDs {
			for _, tc := range u[id] {
				out = append(out, *tc)
			}
		}
	})
	return out, err
}
