package syncapi

import (
	"sort"
	"sync"
	"time"
)

// maxTypingTimeout bounds how long one typing notification lasts, whatever
// the client asks for.
const maxTypingTimeout = 2 * time.Minute

// Typing holds who is typing in which room, in memory only (typing is
// ephemeral: client-server spec §"Typing Notifications"). Each change
// takes a new position; positions start at the wall clock in milliseconds
// so a restarted server does not hand out positions older than the ones
// clients already hold.
type Typing struct {
	mu       sync.Mutex
	pos      int64
	rooms    map[string]*roomTyping
	onChange func(roomID string)
}

type roomTyping struct {
	users     map[string]time.Time // user → expiry
	changedAt int64
}

// NewTyping returns an empty typing tracker that calls onChange after any
// change, including expiry.
func NewTyping(onChange func(roomID string)) *Typing {
	return &Typing{pos: time.Now().UnixMilli(), rooms: map[string]*roomTyping{}, onChange: onChange}
}

// Position is the newest typing position.
func (t *Typing) Position() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// Set starts (typing with a timeout) or stops a user's typing in a room.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	_, was := rt.get(userID)
	if !typing && !was {
		t.mu.Unlock()
		return
	}
	if rt == nil {
		rt = &roomTyping{users: map[string]time.Time{}}
		t.rooms[roomID] = rt
	}
	if typing {
		timeout = min(max(timeout, 0), maxTypingTimeout)
		expiry := time.Now().Add(timeout)
		rt.users[userID] = expiry
		time.AfterFunc(timeout, func() { t.expire(roomID, userID, expiry) })
	} else {
		delete(rt.users, userID)
	}
	t.pos++
	rt.changedAt = t.pos
	t.mu.Unlock()
	t.onChange(roomID)
}

func (t *Typing) expire(roomID, userID string, expiry time.Time) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if got, ok := rt.get(userID); !ok || !got.Equal(expiry) {
		t.mu.Unlock() // renewed or stopped since
		return
	}
	delete(rt.users, userID)
	t.pos++
	rt.changedAt = t.pos
	t.mu.Unlock()
	t.onChange(roomID)
}

// Typing returns who is typing in a room, sorted, and whether that changed
// after the position since.
func (t *Typing) Typing(roomID string, since int64) ([]string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil || rt.changedAt <= since {
		return nil, false
	}
	users := make([]string, 0, len(rt.users))
	for u := range rt.users {
		users = append(users, u)
	}
	sort.Strings(users)
	if len(users) == 0 && since == 0 {
		return nil, false // nothing to tell a fresh client
	}
	return users, true
}

func (rt *roomTyping) get(userID string) (time.Time, bool) {
	if rt == nil {
		return time.Time{}, false
	}
	e, ok := rt.users[userID]
	return e, ok
}
