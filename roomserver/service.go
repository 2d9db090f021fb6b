// Package roomserver is the in-process implementation of
// roomserver/api.RoomserverAPI: the only writer of room events. It builds,
// signs and authorises events, keeps each room's DAG and state, and
// publishes every stored event to the output stream.
//
// Input is serialized per room and parallel across rooms: each room with
// work queued has one goroutine (its "actor") that takes everything queued
// for the room and processes it in one transaction. There is no global lock
// and no goroutine for idle rooms; rooms are found through shards keyed by
// hash(room ID), and all of a room's rows are keyed by the room, so a room
// can later be handed to another process on its own.
package roomserver

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/signingkey"
	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

const (
	numShards = 64
	// maxCachedRooms and maxCachedStateEntries bound the rooms whose
	// current state is kept in memory (per shard: a 64th of each).
	maxCachedRooms        = 4096
	maxCachedStateEntries = 2_000_000
	// maxBatch bounds how many queued inputs of one room share a transaction.
	maxBatch = 64
	// eventCacheSize bounds the parsed events kept in memory.
	eventCacheSize = 50_000
	// retryInterval is how often publishing that failed is retried.
	retryInterval = 2 * time.Second
	// txTimeout bounds one batch's database work and publishing; it does
	// not come from a caller's context because a batch serves several
	// callers.
	txTimeout = 30 * time.Second
)

var errClosed = errors.New("roomserver is closed")

// Service implements api.RoomserverAPI.
type Service struct {
	db         *storage.Database
	bus        *bus.Bus
	serverName spec.ServerName
	keyID      gomatrixserverlib.KeyID
	privateKey ed25519.PrivateKey
	events     *eventCache
	shards     [numShards]shard
	commits    *committer
	eventNIDs  *nidAllocator
	roomNIDs   *nidAllocator

	mu          sync.Mutex
	closed      bool
	unpublished map[string]struct{} // rooms whose publishing failed, to retry
	actors      sync.WaitGroup
	stop        chan struct{}
	retryDone   chan struct{}

	// testHookPublish, when set, runs before each publish; an error stops
	// publishing as if the process had died after committing. Atomic: a
	// test sets it while actors may still be publishing earlier output.
	testHookPublish atomic.Pointer[func(api.OutputEvent) error]
	// testHookBatch, when set, runs when an actor starts a batch.
	testHookBatch func(roomID string)
	// testHookWrites, when set, sees a batch's writes before they are
	// committed.
	testHookWrites func(roomID string, w *storage.Writes)
}

var _ api.FederationRoomserverAPI = (*Service)(nil)

// Open prepares the roomserver's tables and output stream, re-publishes
// events that were committed but may not have reached the bus before the
// last shutdown, and returns the service.
func Open(ctx context.Context, db *sqlutil.DB, b *bus.Bus, cfg *config.Config, keys *signingkey.Set) (*Service, error) {
	store, err := storage.Open(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("roomserver storage: %w", err)
	}
	if err := store.OpenClientTables(ctx); err != nil {
		return nil, fmt.Errorf("roomserver client tables: %w", err)
	}
	if err := b.EnsureStream(ctx, api.OutputStream, api.OutputSubject); err != nil {
		return nil, err
	}
	s := &Service{
		db:          store,
		bus:         b,
		serverName:  spec.ServerName(cfg.ServerName),
		keyID:       gomatrixserverlib.KeyID(keys.Current.ID),
		privateKey:  keys.Current.PrivateKey,
		events:      newEventCache(eventCacheSize),
		commits:     newCommitter(store),
		eventNIDs:   &nidAllocator{db: store, counter: storage.EventNIDs, block: eventNIDBlock},
		roomNIDs:    &nidAllocator{db: store, counter: storage.RoomNIDs, block: roomNIDBlock},
		unpublished: map[string]struct{}{},
		stop:        make(chan struct{}),
		retryDone:   make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].rooms = map[string]*roomActor{}
		s.shards[i].lru = list.New()
	}
	rooms, err := store.SelectUnpublishedRooms(ctx)
	if err != nil {
		return nil, fmt.Errorf("find unpublished events: %w", err)
	}
	for _, r := range rooms {
		s.markUnpublished(r.RoomID)
	}
	go s.retryLoop()
	return s, nil
}

// Close stops accepting input, waits for queued input to finish and
// records how far each room's output got.
func (s *Service) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.retryDone
	s.actors.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, a := range sh.rooms {
			if rs := a.state; rs != nil && rs.published > rs.room.PublishedPosition {
				if err := s.db.UpdatePublishedPosition(ctx, rs.room.NID, rs.published); err != nil {
					logrus.WithError(err).WithField("room_id", rs.room.RoomID).Warn("roomserver: record published position")
				}
			}
		}
		sh.mu.Unlock()
	}
}

// shard holds the actors of the rooms hashing to it, least recently used last.
type shard struct {
	mu      sync.Mutex
	rooms   map[string]*roomActor
	lru     *list.List
	entries int // state entries cached by this shard's rooms
}

// roomActor serializes a room's input. queue and running are guarded by
// the shard's mutex; state is written only by the running actor, under
// stateMu, and read by queries under stateMu.
type roomActor struct {
	roomID  string
	queue   []*task
	running bool
	elem    *list.Element
	entries int

	stateMu sync.RWMutex
	state   *roomState
}

type taskKind int

const (
	taskSend taskKind = iota
	taskCreate
	taskInput
	taskPublish
	// taskJoin and taskRemoteMembership may create the room, so, like
	// taskCreate, each runs alone in its transaction.
	taskJoin
	taskRemoteMembership
)

// runsAlone says whether a task needs a transaction of its own.
func runsAlone(k taskKind) bool {
	return k == taskCreate || k == taskJoin || k == taskRemoteMembership
}

// task is one unit of input for a room's actor.
type task struct {
	kind   taskKind
	ctx    context.Context
	send   *api.SendEventRequest
	create *api.CreateRoomRequest
	events []gomatrixserverlib.PDU
	// For taskInput: outliers to store first and given states.
	outliers    []gomatrixserverlib.PDU
	stateBefore map[string][]string
	// For taskJoin; taskRemoteMembership uses events[0] and version.
	join    *api.JoinRemoteRoomRequest
	version gomatrixserverlib.RoomVersion

	eventIDs []string
	results  []api.InputEventResult
	err      error
	done     chan struct{}
}

func (s *Service) shardFor(roomID string) *shard {
	h := fnv.New32a()
	_, _ = h.Write([]byte(roomID))
	return &s.shards[h.Sum32()%numShards]
}

// submit queues t for its room and waits until it is done or ctx ends.
func (s *Service) submit(ctx context.Context, roomID string, t *task) error {
	t.ctx = ctx
	t.done = make(chan struct{})
	if err := s.enqueue(roomID, t); err != nil {
		return err
	}
	select {
	case <-t.done:
		return t.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) enqueue(roomID string, t *task) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	// Counted under s.mu so Close cannot miss an actor being started.
	s.actors.Add(1)
	s.mu.Unlock()

	sh := s.shardFor(roomID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	a := sh.rooms[roomID]
	if a == nil {
		a = &roomActor{roomID: roomID}
		a.elem = sh.lru.PushFront(a)
		sh.rooms[roomID] = a
		sh.evict()
	} else {
		sh.lru.MoveToFront(a.elem)
	}
	a.queue = append(a.queue, t)
	if a.running {
		s.actors.Done()
		return nil
	}
	a.running = true
	go s.runActor(sh, a)
	return nil
}

// evict drops idle rooms beyond the shard's share of the cache bounds.
func (sh *shard) evict() {
	for el := sh.lru.Back(); el != nil && (len(sh.rooms) > maxCachedRooms/numShards || sh.entries > maxCachedStateEntries/numShards); {
		prev := el.Prev()
		a := el.Value.(*roomActor)
		if !a.running && len(a.queue) == 0 {
			sh.lru.Remove(el)
			delete(sh.rooms, a.roomID)
			sh.entries -= a.entries
		}
		el = prev
	}
}

// runActor processes a room's queue until it is empty. Callers are
// answered once their batch is committed; its output is published before
// the room's next batch starts, so it stays in room order.
func (s *Service) runActor(sh *shard, a *roomActor) {
	defer s.actors.Done()
	for {
		sh.mu.Lock()
		a.stateMu.RLock()
		n := 0
		if a.state != nil {
			n = a.state.size()
		}
		a.stateMu.RUnlock()
		sh.entries += n - a.entries
		a.entries = n
		if len(a.queue) == 0 {
			a.running = false
			sh.evict()
			sh.mu.Unlock()
			return
		}
		// A room's creation (or a join that may create it) runs alone so
		// that it is atomic; other input is batched up to maxBatch per
		// transaction.
		take := 1
		if !runsAlone(a.queue[0].kind) {
			for take < len(a.queue) && take < maxBatch && !runsAlone(a.queue[take].kind) {
				take++
			}
		}
		tasks := append([]*task(nil), a.queue[:take]...)
		a.queue = a.queue[take:]
		sh.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), txTimeout)
		outs := s.processBatch(ctx, a, tasks)
		for _, t := range tasks {
			close(t.done)
		}
		if len(outs) > 0 {
			s.publish(ctx, a.state, outs)
		}
		cancel()
	}
}

func (s *Service) markUnpublished(roomID string) {
	s.mu.Lock()
	s.unpublished[roomID] = struct{}{}
	s.mu.Unlock()
}

// retryLoop hands rooms whose output is behind to their actors, which
// publish what is missing before anything newer.
func (s *Service) retryLoop() {
	defer close(s.retryDone)
	ticker := time.NewTicker(retryInterval)
	defer ticker.Stop()
	kick := func() {
		s.mu.Lock()
		rooms := make([]string, 0, len(s.unpublished))
		for r := range s.unpublished {
			rooms = append(rooms, r)
		}
		s.unpublished = map[string]struct{}{}
		s.mu.Unlock()
		for _, r := range rooms {
			t := &task{kind: taskPublish, ctx: context.Background(), done: make(chan struct{})}
			if err := s.enqueue(r, t); err != nil {
				return
			}
		}
	}
	kick()
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
			kick()
		}
	}
}
