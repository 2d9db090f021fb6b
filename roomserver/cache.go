package roomserver

import (
	"container/list"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
)

// eventMeta is a stored event with what the input path needs about it.
type eventMeta struct {
	nid         int64
	roomNID     int64
	id          string
	depth       int64
	position    int64
	stateBefore int64
	stateAfter  int64
	rejected    bool
	softFailed  bool
	// outlier events are stored but not placed in the DAG; until an event
	// after them gives them state, stateAfter is 0.
	outlier bool
	pdu     gomatrixserverlib.PDU
}

// stateless says whether the state after the event is unknown here, so
// it cannot serve as a prev_event.
func (e *eventMeta) stateless() bool { return e.outlier && e.stateAfter == 0 }

// eventCache is a bounded LRU of parsed events by NID, so auth events and
// extremities of busy rooms are not read and parsed again for every send.
type eventCache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	byNID map[int64]*list.Element
	byID  map[string]int64
}

func newEventCache(max int) *eventCache {
	return &eventCache{max: max, ll: list.New(), byNID: map[int64]*list.Element{}, byID: map[string]int64{}}
}

func (c *eventCache) getNID(nid int64) *eventMeta {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byNID[nid]
	if !ok {
		return nil
	}
	c.ll.MoveToFront(el)
	return el.Value.(*eventMeta)
}

func (c *eventCache) getID(id string) *eventMeta {
	c.mu.Lock()
	nid, ok := c.byID[id]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	return c.getNID(nid)
}

func (c *eventCache) put(e *eventMeta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byNID[e.nid]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.byNID[e.nid] = c.ll.PushFront(e)
	c.byID[e.id] = e.nid
	for c.ll.Len() > c.max {
		old := c.ll.Remove(c.ll.Back()).(*eventMeta)
		delete(c.byNID, old.nid)
		delete(c.byID, old.id)
	}
}

func (c *eventCache) remove(nid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byNID[nid]; ok {
		old := c.ll.Remove(el).(*eventMeta)
		delete(c.byNID, nid)
		delete(c.byID, old.id)
	}
}
