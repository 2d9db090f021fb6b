package syncapi

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	fedapi "github.com/parley-chat/parley/federation/api"
	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/internal/visibility"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Backfill: when a client pages /messages backwards past the earliest
// event this server has of a room (typically its join of a room that lived
// on other servers first), older history is fetched from the room's other
// servers (server-server spec §"Backfilling and retrieving missing
// events") and served from syncapi_backfill_events in depth order, with
// the same history visibility rules as the rest of the timeline
// (client-server spec §"Room History Visibility").
//
// Pagination tokens inside backfilled history are b<depth>_<id>.

// Bounds of backfilling for one /messages request.
const (
	// backfillBatch is the number of events asked of a server at once.
	backfillBatch = 100
	// maxBackfillFetches bounds the fetches one request may make, so a
	// room whose history the user may not see costs a bounded amount.
	maxBackfillFetches = 3
	// backfillRetry is how long a room whose fetch failed is left alone.
	backfillRetry = 30 * time.Second
)

// backfiller fetches history through the federation component.
type backfiller struct {
	api fedapi.BackfillAPI
	// One fetch per room at a time: the visibility walk assumes each
	// batch extends the stored history downwards.
	mu    sync.Mutex
	rooms map[string]*roomFetch
}

type roomFetch struct {
	mu   sync.Mutex
	refs int
}

// EnableBackfill creates the backfill tables and lets /messages fetch
// history from other servers through api.
func (s *Service) EnableBackfill(ctx context.Context, api fedapi.BackfillAPI) error {
	if err := s.db.MigrateBackfill(ctx); err != nil {
		return fmt.Errorf("syncapi backfill storage: %w", err)
	}
	s.backfill = &backfiller{api: api, rooms: map[string]*roomFetch{}}
	return nil
}

func (b *backfiller) lock(roomID string) func() {
	b.mu.Lock()
	f := b.rooms[roomID]
	if f == nil {
		f = &roomFetch{}
		b.rooms[roomID] = f
	}
	f.refs++
	b.mu.Unlock()
	f.mu.Lock()
	return func() {
		f.mu.Unlock()
		b.mu.Lock()
		if f.refs--; f.refs == 0 {
			delete(b.rooms, roomID)
		}
		b.mu.Unlock()
	}
}

func backfillToken(c storage.BackfillCursor) string {
	return "b" + strconv.FormatInt(c.Depth, 10) + "_" + strconv.FormatInt(c.ID, 10)
}

// parseBackfillToken reads a b<depth>_<id> token; ok is false for any
// other kind of token.
func parseBackfillToken(v string) (c storage.BackfillCursor, ok bool, err error) {
	rest, isBackfill := strings.CutPrefix(v, "b")
	if !isBackfill {
		return c, false, nil
	}
	d, id, found := strings.Cut(rest, "_")
	if !found {
		return c, true, httputil.InvalidParam("Invalid pagination token")
	}
	if c.Depth, err = strconv.ParseInt(d, 10, 64); err == nil {
		c.ID, err = strconv.ParseInt(id, 10, 64)
	}
	if err != nil || c.Depth < 0 || c.ID < 0 {
		return c, true, httputil.InvalidParam("Invalid pagination token")
	}
	return c, true, nil
}

// backfillVisibility applies the visibility rules to backfilled events:
// the reader's membership at one is set by their backfilled member events,
// and their later memberships are those the sync API has.
type backfillVisibility struct {
	userID  string
	reader  visibility.Reader
	members []storage.BackfillRow // newest first
}

func (s *Service) backfillVisibility(ctx context.Context, roomID string, vis roomVisibility) (*backfillVisibility, error) {
	members, err := s.db.BackfilledMemberships(ctx, roomID, vis.userID)
	if err != nil {
		return nil, err
	}
	bv := &backfillVisibility{userID: vis.userID, members: members, reader: visibility.Reader{UserID: vis.userID}}
	bv.reader.History = append(bv.reader.History, vis.reader.History...)
	for _, m := range members {
		if len(bv.reader.History) == visibility.MaxHistory {
			break
		}
		bv.reader.History = append(bv.reader.History, visibility.Change{EventID: m.EventID, Membership: m.Membership})
	}
	return bv, nil
}

func (bv *backfillVisibility) canSee(r *storage.BackfillRow) bool {
	if r.Type == "m.room.member" && r.StateKey != nil && *r.StateKey == bv.userID {
		return true
	}
	p := visibility.Point{HistoryVisibility: gomatrixserverlib.HistoryVisibility(r.HistoryVisibility)}
	if r.HistoryVisibility == storage.VisibilityUnknown {
		p.HistoryVisibility = gomatrixserverlib.HistoryVisibilityJoined
	}
	for _, m := range bv.members {
		if m.Cursor.Depth < r.Cursor.Depth || (m.Cursor.Depth == r.Cursor.Depth && m.Cursor.ID < r.Cursor.ID) {
			p.Membership, p.MembershipEventID = m.Membership, m.EventID
			break
		}
	}
	return bv.reader.Allowed(p)
}

// backfillTop is a cursor before every backfilled event: the start of a
// room's backfilled history when paging backwards.
var backfillTop = storage.BackfillCursor{Depth: math.MaxInt64, ID: math.MaxInt64}

// backfillEvents returns up to limit events of the room's backfilled
// history that the user may see and f lets through, backwards from the
// cursor, fetching more from other servers when the stored history runs
// out. next is where the following page starts, nil when no older history
// is left (or, after a failed fetch, none is available for now).
func (s *Service) backfillEvents(ctx context.Context, roomID string, vis roomVisibility, from storage.BackfillCursor, limit int, f *RoomEventFilter) (out []storage.BackfillRow, next *storage.BackfillCursor, err error) {
	if f != nil && ((f.Types != nil && len(*f.Types) == 0) || (f.Senders != nil && len(*f.Senders) == 0) || !matchList(f.Rooms, f.NotRooms, roomID, false)) {
		return nil, nil, nil
	}
	bv, err := s.backfillVisibility(ctx, roomID, vis)
	if err != nil {
		return nil, nil, err
	}
	batch := max(2*(limit+1), 50)
	scanned, fetches := 0, 0
	for {
		rows, err := s.db.BackfillEvents(ctx, roomID, &from, true, batch)
		if err != nil {
			return nil, nil, err
		}
		for i := range rows {
			if bv.canSee(&rows[i]) && f.matchesEvent(roomID, rows[i].Sender, rows[i].Type, rows[i].JSON) {
				if len(out) == limit {
					return out, &out[limit-1].Cursor, nil
				}
				out = append(out, rows[i])
			}
		}
		scanned += len(rows)
		if len(rows) > 0 {
			from = rows[len(rows)-1].Cursor
		}
		if scanned >= maxScanRows {
			return out, &from, nil
		}
		if len(rows) == batch {
			continue
		}
		// Everything stored was read: fetch older history.
		if fetches == maxBackfillFetches {
			return out, &from, nil
		}
		fetches++
		progress, err := s.fetchBackfill(ctx, roomID)
		if err != nil || !progress {
			return out, nil, err
		}
	}
}

// backfillMayHaveMore says whether a room may have backfilled history to
// page into: some is stored, or the room's beginning is not stored here
// and other servers have not yet been found to have nothing.
func (s *Service) backfillMayHaveMore(ctx context.Context, roomID string) (bool, error) {
	st, err := s.db.BackfillRoomState(ctx, roomID)
	if err != nil || st.Started {
		return len(st.Oldest) > 0 || !st.Complete, err
	}
	first, createShown, err := s.db.EarliestEvent(ctx, roomID)
	return first != nil && !createShown, err
}

// fetchBackfill asks the federation component for the history before the
// oldest event stored of the room and stores it. It says whether anything
// new was stored; nothing is fetched once the room's creation was reached
// or, for a while, after a fetch failed.
func (s *Service) fetchBackfill(ctx context.Context, roomID string) (bool, error) {
	if s.backfill == nil {
		return false, nil
	}
	defer s.backfill.lock(roomID)()
	st, err := s.db.BackfillRoomState(ctx, roomID)
	if err != nil {
		return false, err
	}
	now := time.Now()
	if st.Complete || st.RetryAfterMS > now.UnixMilli() {
		return false, nil
	}
	from, startVis := st.Oldest, ""
	if len(from) == 0 {
		first, createShown, err := s.db.EarliestEvent(ctx, roomID)
		if err != nil {
			return false, err
		}
		if first == nil {
			return false, nil
		}
		if createShown {
			// The whole history is here: nothing to fetch, ever.
			_, err := s.db.StoreBackfill(ctx, roomID, storage.DefaultHistoryVisibility, nil, true)
			return false, err
		}
		from = []string{first.EventID}
		if startVis, err = s.db.VisibilityBefore(ctx, roomID, first.Position); err != nil {
			return false, err
		}
	}
	log := logrus.WithField("room_id", roomID)
	pdus, err := s.backfill.api.Backfill(ctx, roomID, from, backfillBatch)
	if err != nil {
		log.WithError(err).Info("syncapi: backfill failed; trying again later")
		return false, s.db.MarkBackfillFailed(ctx, roomID, startVis, now.Add(backfillRetry).UnixMilli())
	}
	evs := make([]storage.BackfilledEvent, 0, len(pdus))
	for _, p := range pdus {
		if p.RoomID().String() != roomID {
			continue
		}
		ev := storage.BackfilledEvent{
			EventID: p.EventID(), Depth: p.Depth(), Sender: string(p.SenderID()), Type: p.Type(), StateKey: p.StateKey(),
			JSON: p.JSON(), OriginServerTS: int64(p.OriginServerTS()),
			Create: p.Type() == "m.room.create" && p.StateKey() != nil && *p.StateKey() == "",
		}
		switch p.Type() {
		case "m.room.member":
			ev.Membership, _ = p.Membership()
		case "m.room.history_visibility":
			hv, _ := p.HistoryVisibility()
			ev.HistoryVisibility = string(hv)
		}
		evs = append(evs, ev)
	}
	n, err := s.db.StoreBackfill(ctx, roomID, startVis, evs, false)
	if err != nil {
		return false, err
	}
	if n == 0 {
		// The servers know nothing older than what is stored here.
		_, err = s.db.StoreBackfill(ctx, roomID, startVis, nil, true)
		return false, err
	}
	return true, nil
}

// backfillRowsAsEvents turns backfilled rows into timeline events for the
// formatter.
func backfillRowsAsEvents(rows []storage.BackfillRow) []storage.Event {
	out := make([]storage.Event, len(rows))
	for i := range rows {
		out[i] = rows[i].Event
	}
	return out
}

// continueIntoBackfill completes a backwards /messages page that reached
// the start of the room's stored timeline with backfilled history, when
// the room's beginning is not stored here. It returns the page's events
// and its end token ("" at the start of the room).
func (s *Service) continueIntoBackfill(ctx context.Context, roomID string, vis roomVisibility, evs []storage.Event, limit int, f *RoomEventFilter) ([]storage.Event, string, error) {
	if s.backfill == nil {
		return evs, "", nil
	}
	if len(evs) >= limit {
		// The page is full: the next one starts in backfilled history.
		may, err := s.backfillMayHaveMore(ctx, roomID)
		if err != nil || !may {
			return evs, "", err
		}
		return evs, backfillToken(backfillTop), nil
	}
	rows, next, err := s.backfillEvents(ctx, roomID, vis, backfillTop, limit-len(evs), f)
	if err != nil {
		return nil, "", err
	}
	end := ""
	if next != nil {
		end = backfillToken(*next)
	}
	return append(evs, backfillRowsAsEvents(rows)...), end, nil
}

// messagesInBackfill serves a /messages page whose from token points into
// backfilled history. Forwards, it continues into the stored timeline from
// its start (up to position upto) once the backfilled history is read.
func (s *Service) messagesInBackfill(ctx context.Context, roomID, dir string, from storage.BackfillCursor, limit int, f *RoomEventFilter, upto int64) (*messagesResponse, error) {
	if s.backfill == nil {
		return nil, httputil.InvalidParam("Invalid from token")
	}
	caller := httputil.CallerFrom(ctx)
	vis, err := s.roomAccess(ctx, roomID, caller.UserID)
	if err != nil {
		return nil, err
	}
	var evs []storage.Event
	end := ""
	if dir == "b" {
		rows, next, err := s.backfillEvents(ctx, roomID, vis, from, limit, f)
		if err != nil {
			return nil, err
		}
		if next != nil {
			end = backfillToken(*next)
		}
		evs = backfillRowsAsEvents(rows)
	} else if evs, end, err = s.forwardsFromBackfill(ctx, roomID, vis, from, limit, f, upto); err != nil {
		return nil, err
	}
	resp := &messagesResponse{Start: backfillToken(from), End: end}
	fm := eventFormatter{userID: caller.UserID, deviceID: caller.DeviceID, now: time.Now()}
	if fm, err = s.withRelations(ctx, fm, map[string]roomVisibility{roomID: vis}, evs); err != nil {
		return nil, err
	}
	resp.Chunk = fm.formatAll(evs)
	if f != nil && f.LazyLoadMembers && len(evs) > 0 {
		members, err := s.membersOf(ctx, roomID, evs)
		if err != nil {
			return nil, err
		}
		resp.State = fm.formatAll(members)
	}
	return resp, nil
}

// forwardsFromBackfill reads backfilled history after the cursor, oldest
// first, then the stored timeline from its start.
func (s *Service) forwardsFromBackfill(ctx context.Context, roomID string, vis roomVisibility, from storage.BackfillCursor, limit int, f *RoomEventFilter, upto int64) ([]storage.Event, string, error) {
	bv, err := s.backfillVisibility(ctx, roomID, vis)
	if err != nil {
		return nil, "", err
	}
	out := []storage.Event{}
	cur := from
	for scanned := 0; ; {
		rows, err := s.db.BackfillEvents(ctx, roomID, &cur, false, max(2*(limit+1), 50))
		if err != nil {
			return nil, "", err
		}
		for i := range rows {
			if bv.canSee(&rows[i]) && f.matchesEvent(roomID, rows[i].Sender, rows[i].Type, rows[i].JSON) {
				out = append(out, rows[i].Event)
				if len(out) == limit {
					return out, backfillToken(rows[i].Cursor), nil
				}
			}
		}
		if len(rows) == 0 {
			break
		}
		cur = rows[len(rows)-1].Cursor
		if scanned += len(rows); scanned >= maxScanRows {
			return out, backfillToken(cur), nil
		}
	}
	// The backfilled history is read: go on with the stored timeline.
	evs, _, err := s.scan(ctx, roomID, vis, 0, upto, false, limit-len(out), f)
	if err != nil {
		return nil, "", err
	}
	end := paginationToken(0)
	if len(evs) > 0 {
		end = paginationToken(evs[len(evs)-1].Position)
	}
	return append(out, evs...), end, nil
}
