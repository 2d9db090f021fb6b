package roomserver

import (
	"context"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/internal/sqlutil"
	"github.com/parley-chat/parley/roomserver/storage"
)

// Group commit across rooms. A room's actor prepares a batch without
// holding anything shared (reads, building, signing, auth) and records its
// writes; only applying the writes and committing is shared: the batches
// of all rooms that are ready at the same time go into one transaction, so
// 100 quiet rooms sending one event each pay for one commit (one fsync),
// not 100. Each actor waits for its batch's commit before answering its
// callers or preparing its next batch, which keeps per-room order and the
// promise that an answered send is stored.

const (
	// maxGroupBatches bounds how many rooms' batches share a transaction.
	maxGroupBatches = 128
	// eventNIDBlock and roomNIDBlock are how many NIDs one reservation in
	// the database takes. A reservation is a commit that every room's next
	// event waits for (on SQLite behind whatever holds the writer), so
	// blocks are large; a restart leaves the rest of a block unused.
	eventNIDBlock = 1 << 16
	roomNIDBlock  = 64
)

// commitJob is one room's batch waiting to be committed.
type commitJob struct {
	roomID string
	writes *storage.Writes
	err    error
	done   chan struct{}
}

// committer applies batches' writes in transactions shared between rooms.
// Up to maxActive transactions run at once: one on SQLite, which has a
// single writer anyway, a few on PostgreSQL, where the round trips of one
// transaction can overlap another's commit.
type committer struct {
	db        *storage.Database
	maxActive int

	mu     sync.Mutex
	queue  []*commitJob
	active int

	// testHookGroup, when set, runs before each transaction with the rooms
	// whose batches it holds.
	testHookGroup func(rooms []string)
}

func newCommitter(db *storage.Database) *committer {
	c := &committer{db: db, maxActive: 1}
	if db.DB.Dialect == sqlutil.Postgres {
		c.maxActive = 4
	}
	return c
}

// commit applies a room's writes and returns once they are committed, in
// a transaction with whatever other rooms queued meanwhile. If that shared
// transaction fails, each of its batches is retried in a transaction of
// its own, so one bad batch fails only its own room.
func (c *committer) commit(roomID string, w *storage.Writes) error {
	j := &commitJob{roomID: roomID, writes: w, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, j)
	if c.active < c.maxActive {
		c.active++
		go c.run()
	}
	c.mu.Unlock()
	<-j.done
	return j.err
}

// run commits queued batches in groups until the queue is empty.
func (c *committer) run() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.active--
			c.mu.Unlock()
			return
		}
		n := min(len(c.queue), maxGroupBatches)
		group := append([]*commitJob(nil), c.queue[:n]...)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()

		err := c.apply(group)
		if err != nil && len(group) > 1 {
			logrus.WithError(err).WithField("batches", len(group)).Warn("roomserver: shared commit failed; committing each room's batch alone")
			for _, j := range group {
				j.err = c.apply([]*commitJob{j})
				close(j.done)
			}
			continue
		}
		for _, j := range group {
			j.err = err
			close(j.done)
		}
	}
}

// apply runs the batches' writes in one transaction.
func (c *committer) apply(group []*commitJob) error {
	if c.testHookGroup != nil {
		rooms := make([]string, len(group))
		for i, j := range group {
			rooms[i] = j.roomID
		}
		c.testHookGroup(rooms)
	}
	writes := make([]*storage.Writes, len(group))
	for i, j := range group {
		writes[i] = j.writes
	}
	ctx, cancel := context.WithTimeout(context.Background(), txTimeout)
	defer cancel()
	return c.db.ApplyWrites(ctx, writes)
}

// nidAllocator hands out the NIDs of one counter from blocks reserved in
// the database, so a batch knows its rows' NIDs before they are written.
type nidAllocator struct {
	db      *storage.Database
	counter string
	block   int64

	mu        sync.Mutex
	next, end int64
}

func (a *nidAllocator) take(ctx context.Context) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next == a.end {
		first, err := a.db.AllocateNIDs(ctx, a.counter, a.block)
		if err != nil {
			return 0, err
		}
		a.next, a.end = first, first+a.block
	}
	n := a.next
	a.next++
	return n, nil
}
