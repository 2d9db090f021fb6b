// Package syncapi serves /sync and the endpoints whose data only sync
// delivers: /messages, /context, typing, receipts, read markers, account
// data and tags, send-to-device and filters.
//
// It keeps its own copy of rooms (timelines, current state, memberships),
// fed only by the roomserver's output stream; it never reads the
// roomserver's tables. Long-polling syncs wait on an in-memory Notifier
// that is woken per user, so an idle connection costs no CPU and no
// database queries.
package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/internal/bus"
	"github.com/parley-chat/parley/internal/sqlutil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/syncapi/storage"
	userapi "github.com/parley-chat/parley/userapi/api"
)

// Service is the sync API.
type Service struct {
	cfg      *config.Config
	db       *storage.DB
	users    userapi.UserAPI
	notifier *Notifier
	typing   *Typing
	sub      *bus.BatchSubscription
	// deviceListSub consumes the user API's device-list stream (devicelists.go).
	deviceListSub *bus.Subscription
	// push evaluates push rules and delivers pushes (push*.go); presence
	// batches presence updates (presence.go).
	push     *pusher
	presence *presenceTracker
	// edus carries ephemeral data to and from other servers (edus.go).
	edus *eduBridge
	// caches are the in-memory views that keep /sync off the database
	// (synccache.go).
	caches *syncCaches
	// backfill fetches history from other servers for /messages
	// (backfill.go); nil without federation.
	backfill *backfiller

	// acked remembers, per "user|device", the to-device position already
	// deleted, so repeated syncs with the same since do not rewrite.
	ackMu sync.Mutex
	acked map[string]int64
}

// Open runs the sync API's migrations, loads room memberships for the
// notifier and starts consuming the roomserver's output stream through the
// durable consumer "syncapi". rooms is accepted for symmetry with the other
// components; the sync API answers everything from its own tables.
func Open(ctx context.Context, db *sqlutil.DB, b *bus.Bus, cfg *config.Config, users userapi.UserAPI, rooms rsapi.RoomserverAPI) (*Service, error) {
	_ = rooms
	store, err := storage.Open(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("syncapi storage: %w", err)
	}
	s := &Service{cfg: cfg, db: store, users: users, notifier: NewNotifier(), acked: map[string]int64{}, caches: newSyncCaches()}
	if err := s.caches.load(ctx, store); err != nil {
		return nil, err
	}
	s.typing = NewTyping(func(roomID string) { s.notifier.WakeRoom(roomID) })
	s.startPush()
	if err := store.JoinedMembers(ctx, func(roomID, userID string) {
		s.notifier.SetMembership(roomID, userID, "join")
	}); err != nil {
		return nil, err
	}
	if err := b.EnsureStream(ctx, rsapi.OutputStream, rsapi.OutputSubject); err != nil {
		return nil, err
	}
	s.sub, err = b.SubscribeBatch(ctx, rsapi.OutputStream, "syncapi", rsapi.OutputSubject, maxOutputBatch, s.handleOutput)
	if err != nil {
		return nil, err
	}
	if err := s.startDeviceLists(ctx, b); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.startEDUs(ctx, b); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close stops consuming the stream.
func (s *Service) Close() {
	if s.sub != nil {
		s.sub.Stop()
	}
	s.stopPush()
	if s.deviceListSub != nil {
		s.deviceListSub.Stop()
	}
	s.stopEDUs()
}

// maxOutputBatch bounds how many roomserver output events the consumer
// stores in one transaction when they queue up.
const maxOutputBatch = 64

// handleOutput stores the roomserver output events that queued up, in as
// few transactions as it can, and wakes the users they concern. A message
// that cannot be parsed is logged and skipped: retrying it would stall
// every room behind it. Redelivered events are recognised by their room
// position and change nothing.
func (s *Service) handleOutput(ctx context.Context, msgs []bus.Message) error {
	var batch []*storage.NewEvent
	ids := map[string]bool{}
	for _, msg := range msgs {
		var oe rsapi.OutputEvent
		if err := json.Unmarshal(msg.Data, &oe); err != nil {
			logrus.WithError(err).WithField("seq", msg.Sequence).Error("syncapi: malformed roomserver output; skipping")
			continue
		}
		ne, err := newEventFromOutput(&oe)
		if err != nil {
			logrus.WithError(err).WithFields(logrus.Fields{"seq": msg.Sequence, "event_id": oe.EventID}).Error("syncapi: bad event in roomserver output; skipping")
			continue
		}
		// Push evaluation reads an event's relation target (its thread)
		// from the database, where an earlier event of the same
		// transaction is not visible yet: such an event starts a new one.
		if rel, ok := storage.RelationOf(ne.JSON); ok && ids[rel.Parent] {
			if err := s.storeAndNotify(ctx, batch); err != nil {
				return err
			}
			batch, ids = nil, map[string]bool{}
		}
		batch = append(batch, ne)
		ids[ne.EventID] = true
	}
	return s.storeAndNotify(ctx, batch)
}

// storeAndNotify stores events in one transaction, brings the in-memory
// views up to date, publishes the new stream position and wakes the
// users concerned, in that order (synccache.go).
func (s *Service) storeAndNotify(ctx context.Context, evs []*storage.NewEvent) error {
	if len(evs) == 0 {
		return nil
	}
	queued := false
	counts := make([]countsChange, len(evs))
	s.caches.countsGate.Lock()
	defer s.caches.countsGate.Unlock()
	results, err := s.db.StoreEvents(ctx, evs, func(i int) error {
		var err error
		if evs[i].AfterStore, err = s.push.prepare(ctx, evs[i]); err != nil {
			return fmt.Errorf("push rules for %s: %w", evs[i].EventID, err)
		}
		queued = queued || s.push.queued
		counts[i] = s.push.counts
		return nil
	}, func(i int, res storage.StoreResult) {
		if !res.Duplicate {
			s.push.stored(evs[i])
		}
	})
	if err != nil {
		s.push.forgetRooms(evs)
		return err
	}
	if queued {
		s.push.gateway.poke() // the pushes are committed now
	}
	type wake struct {
		roomID string
		extra  []string
	}
	var wakes []wake
	var last int64
	for i := range results {
		res, ne := &results[i], evs[i]
		if res.Duplicate {
			continue
		}
		s.caches.stored(ne, res)
		s.caches.applyCounts(counts[i])
		extra := make([]string, 0, len(res.Changes))
		for _, c := range res.Changes {
			s.notifier.SetMembership(ne.RoomID, c.UserID, c.Membership)
			extra = append(extra, c.UserID)
		}
		if !ne.SoftFailed || len(extra) > 0 {
			wakes = append(wakes, wake{ne.RoomID, extra})
		}
		last = res.Position
	}
	s.db.PublishEvents(last)
	for _, w := range wakes {
		s.notifier.WakeRoom(w.roomID, w.extra...)
	}
	return nil
}

// newEventFromOutput parses an output event's JSON with its room version.
func newEventFromOutput(oe *rsapi.OutputEvent) (*storage.NewEvent, error) {
	verImpl, err := gomatrixserverlib.GetRoomVersion(oe.RoomVersion)
	if err != nil {
		return nil, err
	}
	pdu, err := verImpl.NewEventFromTrustedJSONWithEventID(oe.EventID, oe.Event, false)
	if err != nil {
		return nil, fmt.Errorf("parse event: %w", err)
	}
	if pdu.RoomID().String() != oe.RoomID {
		return nil, fmt.Errorf("event room %s differs from output room %s", pdu.RoomID().String(), oe.RoomID)
	}
	sender := oe.Sender
	if sender == "" {
		sender = string(pdu.SenderID())
	}
	ne := &storage.NewEvent{
		RoomID:         oe.RoomID,
		RoomVersion:    string(oe.RoomVersion),
		RoomPosition:   oe.RoomPosition,
		EventID:        oe.EventID,
		Sender:         sender,
		Type:           pdu.Type(),
		StateKey:       pdu.StateKey(),
		JSON:           oe.Event,
		OriginServerTS: int64(pdu.OriginServerTS()),
		AddsState:      oe.AddsStateEventIDs,
		RemovesState:   oe.RemovesStateEventIDs,
		SoftFailed:     oe.SoftFailed,
	}
	if pdu.Type() == "m.room.member" {
		ne.Membership, _ = pdu.Membership()
	}
	if pdu.Type() == "m.room.redaction" {
		ne.Redacts = pdu.Redacts()
	}
	if pdu.Type() == "m.room.history_visibility" {
		hv, _ := pdu.HistoryVisibility()
		ne.HistoryVisibility = string(hv)
	}
	if oe.TransactionID != nil {
		ne.TxnDeviceID, ne.TxnID = oe.TransactionID.DeviceID, oe.TransactionID.TxnID
	}
	return ne, nil
}
