package syncapi

import (
	"container/list"
	"context"
	"sync"
)

// lru is a map bounded by the total weight of its values, evicting the
// least recently used entries first. It is not safe for concurrent use.
type lru[K comparable, V any] struct {
	max    int
	total  int
	weight func(V) int
	ll     *list.List
	items  map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
	w   int
}

// newLRU bounds the cache to max total weight; weight nil counts each
// entry as 1.
func newLRU[K comparable, V any](max int, weight func(V) int) *lru[K, V] {
	if weight == nil {
		weight = func(V) int { return 1 }
	}
	return &lru[K, V]{max: max, weight: weight, ll: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	el, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*lruEntry[K, V]).val, true
}

// put stores v under k. A value heavier than the whole cache is not kept.
func (c *lru[K, V]) put(k K, v V) {
	c.remove(k)
	w := c.weight(v)
	if w > c.max {
		return
	}
	c.items[k] = c.ll.PushFront(&lruEntry[K, V]{key: k, val: v, w: w})
	c.total += w
	for c.total > c.max {
		c.remove(c.ll.Back().Value.(*lruEntry[K, V]).key)
	}
}

// reweigh records that the value under k changed weight (it was updated
// in place), evicting others if the cache is now too heavy.
func (c *lru[K, V]) reweigh(k K) {
	el, ok := c.items[k]
	if !ok {
		return
	}
	e := el.Value.(*lruEntry[K, V])
	c.put(k, e.val)
}

func (c *lru[K, V]) remove(k K) {
	el, ok := c.items[k]
	if !ok {
		return
	}
	e := el.Value.(*lruEntry[K, V])
	c.total -= e.w
	c.ll.Remove(el)
	delete(c.items, k)
}

func (c *lru[K, V]) len() int { return len(c.items) }

// loadingCache is an lru filled from the database on a miss and kept
// right by the writer that changes what it caches (the roomserver-output
// consumer), which either updates an entry in place or invalidates it.
//
// A load runs without the lock, so a change may commit while it is in
// flight: the load may then have read the state before the change and is
// not kept (the next reader loads again). This is what makes invalidation
// immediate even against concurrent readers.
type loadingCache[K comparable, V any] struct {
	mu       sync.Mutex
	lru      *lru[K, V]
	inflight map[K]*inflightLoad
}

type inflightLoad struct {
	n     int
	stale bool
}

func newLoadingCache[K comparable, V any](max int, weight func(V) int) *loadingCache[K, V] {
	return &loadingCache[K, V]{lru: newLRU[K](max, weight), inflight: map[K]*inflightLoad{}}
}

// use calls fn with the value under k, loading it first if needed, with
// the cache locked: fn must be quick and must not keep the value if the
// writer updates it in place.
func (c *loadingCache[K, V]) use(ctx context.Context, k K, load func(context.Context) (V, error), fn func(V)) error {
	c.mu.Lock()
	if v, ok := c.lru.get(k); ok {
		fn(v)
		c.mu.Unlock()
		return nil
	}
	fl := c.inflight[k]
	if fl == nil {
		fl = &inflightLoad{}
		c.inflight[k] = fl
	}
	fl.n++
	c.mu.Unlock()

	v, err := load(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	fl.n--
	if fl.n == 0 {
		delete(c.inflight, k)
	}
	if err != nil {
		return err
	}
	if !fl.stale {
		c.lru.put(k, v)
	}
	fn(v)
	return nil
}

// get returns the value under k, loading it if needed. For values the
// writer never changes in place.
func (c *loadingCache[K, V]) get(ctx context.Context, k K, load func(context.Context) (V, error)) (V, error) {
	var out V
	err := c.use(ctx, k, load, func(v V) { out = v })
	return out, err
}

// invalidate drops the entry under k; loads in flight are not kept.
func (c *loadingCache[K, V]) invalidate(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.remove(k)
	if fl := c.inflight[k]; fl != nil {
		fl.stale = true
	}
}

// update applies fn to the entry under k if there is one (fn returns false
// to drop it instead); loads in flight are not kept.
func (c *loadingCache[K, V]) update(k K, fn func(V) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fl := c.inflight[k]; fl != nil {
		fl.stale = true
	}
	v, ok := c.lru.get(k)
	if !ok {
		return
	}
	if !fn(v) {
		c.lru.remove(k)
		return
	}
	c.lru.reweigh(k)
}
