package userapi

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/userapi/api"
)

// Verified access tokens are cached so that a request (above all a
// long-polling /sync, re-sent every 30 s by every client) does not read
// the devices table each time.
//
// Every path of this process that ends a token (logout, logout all,
// device deletion, password change, deactivation, a device re-created
// with a new token) drops the user's cached tokens after its transaction
// commits, so it takes effect on the next request. A verification that
// read the database before such a change and finishes after it is not
// cached (epoch below). A change made by another process (the `parley`
// command line, or a second instance sharing the database) is seen here
// once the entry expires: tokenCacheTTL is the bound on that staleness
// (docs/ARCHITECTURE.md, Sync API, "Caches").
//
// A device's one-time key counts and unused fallback key types, which
// every /sync of the device reports, are cached the same way: uploads,
// claims and device removal in this process drop the entry; another
// process's change is seen within the same bound.
const (
	tokenCacheTTL    = time.Minute
	maxCachedEntries = 100_000
)

// userCache maps keys to values owned by a user, for at most
// tokenCacheTTL each, and forgets a user's or one key's entries on demand.
type userCache[K comparable, V any] struct {
	mu      sync.Mutex
	entries map[K]*cacheEntry[V]
	owner   map[K]string
	byUser  map[string]map[K]struct{}
	// epoch counts invalidations; a lookup stores its answer only if none
	// happened while it read the database.
	epoch uint64
}

type cacheEntry[V any] struct {
	val     V
	expires time.Time
}

func newUserCache[K comparable, V any]() *userCache[K, V] {
	return &userCache[K, V]{entries: map[K]*cacheEntry[V]{}, owner: map[K]string{}, byUser: map[string]map[K]struct{}{}}
}

func (c *userCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		var zero V
		return zero, false
	}
	if now.After(e.expires) {
		c.removeLocked(k)
		var zero V
		return zero, false
	}
	return e.val, true
}

// begin starts a database lookup; put stores its answer if no
// invalidation happened since.
func (c *userCache[K, V]) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

func (c *userCache[K, V]) put(epoch uint64, k K, userID string, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if len(c.entries) >= maxCachedEntries {
		c.sweepLocked(now)
	}
	if len(c.entries) >= maxCachedEntries {
		return
	}
	c.entries[k] = &cacheEntry[V]{val: v, expires: now.Add(tokenCacheTTL)}
	c.owner[k] = userID
	u := c.byUser[userID]
	if u == nil {
		u = map[K]struct{}{}
		c.byUser[userID] = u
	}
	u[k] = struct{}{}
}

// modify changes a cached value in place, keeping its expiry.
func (c *userCache[K, V]) modify(k K, fn func(*V)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[k]; ok {
		fn(&e.val)
	}
}

// forgetUser drops every entry of a user.
func (c *userCache[K, V]) forgetUser(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for k := range c.byUser[userID] {
		delete(c.entries, k)
		delete(c.owner, k)
	}
	delete(c.byUser, userID)
}

// forget drops one entry.
func (c *userCache[K, V]) forget(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.removeLocked(k)
}

func (c *userCache[K, V]) removeLocked(k K) {
	userID := c.owner[k]
	delete(c.entries, k)
	delete(c.owner, k)
	if u := c.byUser[userID]; u != nil {
		delete(u, k)
		if len(u) == 0 {
			delete(c.byUser, userID)
		}
	}
}

// sweepLocked drops expired entries, when the cache is full.
func (c *userCache[K, V]) sweepLocked(now time.Time) {
	for k, e := range c.entries {
		if now.After(e.expires) {
			c.removeLocked(k)
		}
	}
}

// verifiedToken is a cached answer of VerifyAccessToken, by token hash,
// with the device's last-seen time as last written.
type verifiedToken struct {
	caller   httputil.Caller
	lastSeen int64
}

type tokenCache = userCache[[sha256.Size]byte, verifiedToken]

// keyCounts is a cached answer of OneTimeKeyCounts, by (user, device).
type keyCountCache = userCache[[2]string, api.OneTimeKeyCounts]
