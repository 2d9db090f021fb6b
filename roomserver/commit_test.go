package roomserver

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

// commitLog records the rooms of each transaction the committer runs. Its
// hold makes one transaction wait until enough batches queued behind it,
// so that the next transaction is known to hold them all.
type commitLog struct {
	c      *committer
	mu     sync.Mutex
	groups [][]string
	// holdFor, when set, is the room whose transaction waits; released
	// closes when it may go on.
	holdFor  string
	held     chan struct{}
	released chan struct{}
}

func logCommits(h *harness) *commitLog {
	l := &commitLog{c: h.rs.commits}
	// One transaction at a time, so that queued batches are not taken by
	// a second transaction while the first is held.
	h.rs.commits.maxActive = 1
	h.rs.commits.testHookGroup = func(rooms []string) {
		l.mu.Lock()
		l.groups = append(l.groups, rooms)
		hold := len(rooms) == 1 && rooms[0] == l.holdFor
		l.mu.Unlock()
		if hold {
			close(l.held)
			<-l.released
		}
	}
	return l
}

// hold makes the next transaction of room wait until release is called.
func (l *commitLog) hold(room string) (release func()) {
	l.mu.Lock()
	l.holdFor, l.held, l.released = room, make(chan struct{}), make(chan struct{})
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		l.holdFor = ""
		l.mu.Unlock()
		close(l.released)
	}
}

// waitQueued waits until n batches wait for the committer.
func (l *commitLog) waitQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l.c.mu.Lock()
		queued := len(l.c.queue)
		l.c.mu.Unlock()
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d batches queued, want %d", queued, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *commitLog) snapshot() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]string(nil), l.groups...)
}

// Many rooms sending at once share transactions; each room's events still
// get consecutive positions in the order their senders sent them, and a
// transaction ID sent twice (even at the same time) stores one event.
func TestRoomsShareCommits(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		out := h.collect("share")
		const rooms, devices, perDevice = 12, 2, 8
		alice := user("alice")
		roomIDs := make([]string, rooms+1)
		for i := range roomIDs {
			roomIDs[i] = h.createRoom("10", alice, "public", nil)
		}
		blocker, roomIDs := roomIDs[0], roomIDs[1:]
		log := logCommits(h)
		var batchesMu sync.Mutex
		batches := 0
		h.rs.testHookWrites = func(string, *storage.Writes) {
			batchesMu.Lock()
			batches++
			batchesMu.Unlock()
		}

		// The blocker's transaction waits until every room has a batch
		// queued, so the next transaction holds one batch of each room.
		release := log.hold(blocker)
		blockerDone := make(chan error, 1)
		go func() {
			_, err := h.send(blocker, alice, "m.room.message", nil, map[string]any{"body": "blocker"})
			blockerDone <- err
		}()
		<-log.held

		// Two copies of each device's sender run at once with the same
		// transaction IDs: each pair must get the same event IDs.
		sent := make([][][2][]string, rooms)
		var wg sync.WaitGroup
		errs := make(chan error, rooms*devices*2)
		for r := range roomIDs {
			sent[r] = make([][2][]string, devices)
			for d := 0; d < devices; d++ {
				for c := 0; c < 2; c++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < perDevice; i++ {
							res, err := h.rs.SendEvent(ctx, &api.SendEventRequest{
								RoomID:        roomIDs[r],
								TransactionID: &api.TransactionID{DeviceID: fmt.Sprintf("D%d", d), TxnID: fmt.Sprintf("t%d", i)},
								Event: api.EventTemplate{Sender: alice, Type: "m.room.message",
									Content: mustJSON(map[string]any{"body": fmt.Sprintf("%d-%d", d, i)})}})
							if err != nil {
								errs <- err
								return
							}
							sent[r][d][c] = append(sent[r][d][c], res.EventID)
						}
					}()
				}
			}
		}
		log.waitQueued(t, rooms)
		release()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if err := <-blockerDone; err != nil {
			t.Fatal(err)
		}

		groups := log.snapshot()
		largest := 0
		for _, g := range groups {
			largest = max(largest, len(g))
		}
		if largest < rooms {
			t.Fatalf("largest transaction held %d rooms' batches, want %d (transactions: %v)", largest, rooms, groups)
		}
		batchesMu.Lock()
		if len(groups) >= batches {
			t.Fatalf("%d transactions for %d batches: no commit was shared", len(groups), batches)
		}
		t.Logf("%d batches in %d transactions", batches, len(groups))
		batchesMu.Unlock()

		const createEvents = 5
		unique := rooms * devices * perDevice
		outs := out.waitFor(t, (rooms+1)*createEvents+1+unique)
		lastPos := map[string]int64{}
		byID := map[string]api.OutputEvent{}
		for _, o := range outs {
			if o.RoomPosition != lastPos[o.RoomID]+1 {
				t.Fatalf("room %s: position %d after %d", o.RoomID, o.RoomPosition, lastPos[o.RoomID])
			}
			lastPos[o.RoomID] = o.RoomPosition
			if _, dup := byID[o.EventID]; dup {
				t.Fatalf("event %s published twice", o.EventID)
			}
			byID[o.EventID] = o
		}
		time.Sleep(200 * time.Millisecond)
		if extra := out.waitFor(t, 0); len(extra) != len(outs) {
			t.Fatalf("%d output messages, want %d: a repeated transaction was stored again", len(extra), len(outs))
		}
		for r := range sent {
			for d := range sent[r] {
				a, b := sent[r][d][0], sent[r][d][1]
				for i := range a {
					if a[i] != b[i] {
						t.Fatalf("room %d device %d txn %d: event IDs %s and %s for one transaction", r, d, i, a[i], b[i])
					}
					if i > 0 && byID[a[i]].RoomPosition <= byID[a[i-1]].RoomPosition {
						t.Fatalf("room %d device %d: txn %d at position %d, after %d", r, d, i, byID[a[i]].RoomPosition, byID[a[i-1]].RoomPosition)
					}
				}
			}
		}
	})
}

// When a transaction shared by several rooms fails, each batch is retried
// alone: only the bad one fails, its room goes on from its stored state,
// and the others' events are stored and published.
func TestFailedBatchFailsOnlyItsRoom(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		h := newHarness(t, dbURL)
		out := h.collect("fail")
		const rooms = 6
		alice := user("alice")
		roomIDs := make([]string, rooms+1)
		for i := range roomIDs {
			roomIDs[i] = h.createRoom("10", alice, "public", nil)
		}
		blocker, roomIDs := roomIDs[0], roomIDs[1:]
		bad := roomIDs[2]
		log := logCommits(h)
		// The bad room's batch violates a constraint: its room ID is taken.
		h.rs.testHookWrites = func(roomID string, w *storage.Writes) {
			if roomID == bad {
				w.Exec(`INSERT INTO roomserver_rooms (room_nid, room_id, room_version) VALUES ($1, $2, '10')`, -1, bad)
			}
		}

		release := log.hold(blocker)
		go func() { _, _ = h.send(blocker, alice, "m.room.message", nil, map[string]any{"body": "blocker"}) }()
		<-log.held
		results := make([]string, rooms)
		errs := make([]error, rooms)
		var wg sync.WaitGroup
		for r := range roomIDs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[r], errs[r] = h.send(roomIDs[r], alice, "m.room.message", nil, map[string]any{"body": r})
			}()
		}
		log.waitQueued(t, rooms)
		release()
		wg.Wait()

		for r, err := range errs {
			if roomIDs[r] == bad {
				if err == nil {
					t.Fatal("the bad batch was stored")
				}
				continue
			}
			if err != nil {
				t.Fatalf("room %d failed with the bad batch: %v", r, err)
			}
		}
		groups := log.snapshot()
		shared := -1
		for i, g := range groups {
			if len(g) == rooms {
				shared = i
			}
		}
		if shared < 0 || len(groups) < shared+1+rooms {
			t.Fatalf("want one transaction of %d rooms, then one per room; got %v", rooms, groups)
		}
		for _, g := range groups[shared+1 : shared+1+rooms] {
			if len(g) != 1 {
				t.Fatalf("retry of %d rooms in one transaction: %v", len(g), groups)
			}
		}

		// The bad room reloads its committed state and goes on.
		h.rs.testHookWrites = nil
		next := h.mustSend(bad, alice, "m.room.message", nil, map[string]any{"body": "after"})
		const createEvents = 5
		outs := out.waitFor(t, (rooms+1)*createEvents+1+rooms)
		lastPos := map[string]int64{}
		published := map[string]bool{}
		for _, o := range outs {
			if o.RoomPosition != lastPos[o.RoomID]+1 {
				t.Fatalf("room %s: position %d after %d", o.RoomID, o.RoomPosition, lastPos[o.RoomID])
			}
			lastPos[o.RoomID] = o.RoomPosition
			published[o.EventID] = true
		}
		for r, id := range results {
			if roomIDs[r] != bad && !published[id] {
				t.Fatalf("room %d: event %s not published", r, id)
			}
		}
		if !published[next] || lastPos[bad] != createEvents+1 {
			t.Fatalf("bad room after the failure: next published %v, last position %d", published[next], lastPos[bad])
		}
		evs, err := h.rs.QueryEventsByID(ctx, []string{next})
		if err != nil || len(evs) != 1 || evs[0].Depth() != createEvents+1 {
			t.Fatalf("event after the failure: %v %v", evs, err)
		}
	})
}
