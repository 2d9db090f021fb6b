package syncapi

import "sync"

// Notifier wakes long-polling /sync requests. A waiting request costs one
// map entry and a blocked goroutine: nothing runs until an event reaches
// its user. Waking is per user; a room event wakes only the users joined
// to that room (plus anyone whose membership the event changed).
type Notifier struct {
	mu    sync.RWMutex
	users map[string]*userSignal
	// joined is the set of joined users per room, kept from the stream.
	joined map[string]map[string]struct{}
}

// userSignal is closed and replaced to wake every waiter of one user.
type userSignal struct {
	ch      chan struct{}
	waiters int
}

// NewNotifier returns an empty notifier.
func NewNotifier() *Notifier {
	return &Notifier{users: map[string]*userSignal{}, joined: map[string]map[string]struct{}{}}
}

// Listen returns a channel closed at the user's next wake-up and a function
// the caller must call when it stops waiting.
func (n *Notifier) Listen(userID string) (<-chan struct{}, func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.users[userID]
	if s == nil {
		s = &userSignal{ch: make(chan struct{})}
		n.users[userID] = s
	}
	s.waiters++
	ch := s.ch
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if cur := n.users[userID]; cur == s {
			s.waiters--
			if s.waiters == 0 {
				delete(n.users, userID)
			}
		}
	}
}

// WakeUsers wakes the waiters of the given users.
func (n *Notifier) WakeUsers(userIDs ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range userIDs {
		n.wakeLocked(u)
	}
}

func (n *Notifier) wakeLocked(userID string) {
	s := n.users[userID]
	if s == nil {
		return
	}
	close(s.ch)
	// Waiters that have not yet returned hold the old (closed) channel
	// and will call their cleanup against s; a fresh entry for later
	// listeners starts from zero.
	delete(n.users, userID)
}

// WakeRoom wakes every user joined to roomID, and also extra users (for
// example someone just invited or who just left).
func (n *Notifier) WakeRoom(roomID string, extra ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for u := range n.joined[roomID] {
		n.wakeLocked(u)
	}
	for _, u := range extra {
		n.wakeLocked(u)
	}
}

// SetMembership records a user's current membership in a room.
func (n *Notifier) SetMembership(roomID, userID, membership string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if membership == "join" {
		m := n.joined[roomID]
		if m == nil {
			m = map[string]struct{}{}
			n.joined[roomID] = m
		}
		m[userID] = struct{}{}
		return
	}
	if m := n.joined[roomID]; m != nil {
		delete(m, userID)
		if len(m) == 0 {
			delete(n.joined, roomID)
		}
	}
}

// JoinedUsers returns the users joined to a room.
func (n *Notifier) JoinedUsers(roomID string) []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]string, 0, len(n.joined[roomID]))
	for u := range n.joined[roomID] {
		out = append(out, u)
	}
	return out
}
