package userapi

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/parley-chat/parley/internal/httputil"
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
// (docs/ARCHITECTURE.md, "User API").
const (
	tokenCacheTTL   = time.Minute
	maxCachedTokens = 100_000
)

type tokenCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]*cachedToken
	byUser  map[string]map[[sha256.Size]byte]struct{}
	// epoch counts invalidations; a lookup stores its answer only if none
	// happened while it read the database.
	epoch uint64
}

type cachedToken struct {
	caller   httputil.Caller
	lastSeen int64
	expires  time.Time
}

func newTokenCache() *tokenCache {
	return &tokenCache{entries: map[[sha256.Size]byte]*cachedToken{}, byUser: map[string]map[[sha256.Size]byte]struct{}{}}
}

// get returns the cached caller for a token hash, and the device's
// last-seen time as last written.
func (c *tokenCache) get(hash []byte, now time.Time) (httputil.Caller, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := [sha256.Size]byte(hash)
	e, ok := c.entries[k]
	if !ok {
		return httputil.Caller{}, 0, false
	}
	if now.After(e.expires) {
		c.removeLocked(k, e.caller.UserID)
		return httputil.Caller{}, 0, false
	}
	return e.caller, e.lastSeen, true
}

// begin starts a database lookup; put stores its answer if no
// invalidation happened since.
func (c *tokenCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch
}

func (c *tokenCache) put(epoch uint64, hash []byte, caller httputil.Caller, lastSeen int64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch {
		return
	}
	if len(c.entries) >= maxCachedTokens {
		c.sweepLocked(now)
	}
	if len(c.entries) >= maxCachedTokens {
		return
	}
	k := [sha256.Size]byte(hash)
	c.entries[k] = &cachedToken{caller: caller, lastSeen: lastSeen, expires: now.Add(tokenCacheTTL)}
	u := c.byUser[caller.UserID]
	if u == nil {
		u = map[[sha256.Size]byte]struct{}{}
		c.byUser[caller.UserID] = u
	}
	u[k] = struct{}{}
}

// touched records a last-seen write for a cached token.
func (c *tokenCache) touched(hash []byte, lastSeen int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[[sha256.Size]byte(hash)]; ok {
		e.lastSeen = lastSeen
	}
}

// forgetUser drops every cached token of a user.
func (c *tokenCache) forgetUser(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for k := range c.byUser[userID] {
		delete(c.entries, k)
	}
	delete(c.byUser, userID)
}

func (c *tokenCache) removeLocked(k [sha256.Size]byte, userID string) {
	delete(c.entries, k)
	if u := c.byUser[userID]; u != nil {
		delete(u, k)
		if len(u) == 0 {
			delete(c.byUser, userID)
		}
	}
}

// sweepLocked drops expired entries, when the cache is full.
func (c *tokenCache) sweepLocked(now time.Time) {
	for k, e := range c.entries {
		if now.After(e.expires) {
			c.removeLocked(k, e.caller.UserID)
		}
	}
}
