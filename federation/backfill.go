package federation

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// Bounds of one outbound backfill: the servers tried, the events asked
// for, and the auth events fetched one by one for events whose auth events
// are not stored here.
const (
	backfillServers      = 3
	maxBackfillAuthFetch = 50
	backfillAuthRounds   = 3
)

// Backfill implements fedapi.BackfillAPI. Spec: server-server
// §"Backfilling and retrieving missing events".
func (s *Service) Backfill(ctx context.Context, roomID string, fromEventIDs []string, limit int) ([]gomatrixserverlib.PDU, error) {
	if len(fromEventIDs) == 0 || limit < 1 {
		return nil, nil
	}
	limit = min(limit, maxBackfill)
	fromEventIDs = fromEventIDs[:min(len(fromEventIDs), maxRequestedIDs)]
	info, err := s.rooms.QueryRoomInfo(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if info.Stub {
		return nil, rsapi.ErrRoomNotFound
	}
	servers, err := s.backfillServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	log := logrus.WithField("room_id", roomID)
	var lastErr error
	answered := false
	for _, server := range servers {
		evs, err := s.backfillFrom(ctx, server, roomID, info.RoomVersion, fromEventIDs, limit)
		if err != nil {
			log.WithError(err).WithField("server", server).Info("federation: backfill failed")
			lastErr = err
			continue
		}
		if len(evs) > 0 {
			return evs, nil
		}
		answered = true
	}
	if answered {
		return nil, nil
	}
	if lastErr == nil && len(servers) == 0 {
		lastErr = errors.New("no other server is in the room")
	}
	return nil, lastErr
}

// backfillServers lists the servers to ask: the room's other joined
// servers, the room ID's own server first (it has been in the room
// longest), at most backfillServers of them. Right after a join the
// sender's table of joined servers may not have the room's members yet;
// then they are read from the room's current state.
func (s *Service) backfillServers(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	joined, err := s.db.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if len(joined) == 0 || (len(joined) == 1 && joined[0] == string(s.serverName)) {
		if joined, err = s.serversInState(ctx, roomID); err != nil {
			return nil, err
		}
	}
	var out []spec.ServerName
	if r, err := spec.NewRoomID(roomID); err == nil {
		for _, j := range joined {
			if j == string(r.Domain()) && r.Domain() != s.serverName {
				out = append(out, r.Domain())
			}
		}
	}
	for _, j := range joined {
		if name := spec.ServerName(j); name != s.serverName && (len(out) == 0 || out[0] != name) {
			out = append(out, name)
		}
	}
	return out[:min(len(out), backfillServers)], nil
}

// serversInState lists the servers of the members joined in the room's
// current state, sorted.
func (s *Service) serversInState(ctx context.Context, roomID string) ([]string, error) {
	state, err := s.rooms.QueryCurrentState(ctx, roomID, nil)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, ev := range state {
		if ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
			continue
		}
		if m, err := ev.Membership(); err != nil || m != spec.Join {
			continue
		}
		if u, err := spec.NewUserID(*ev.StateKey(), true); err == nil {
			set[string(u.Domain())] = true
		}
	}
	out := make([]string, 0, len(set))
	for name := range set {
		out = append(out, name)
	}
	sort.Strings(out)
	return out, nil
}

// backfillFrom asks one server, checks what it answers and stores it.
func (s *Service) backfillFrom(ctx context.Context, server spec.ServerName, roomID string, ver gomatrixserverlib.RoomVersion, from []string, limit int) ([]gomatrixserverlib.PDU, error) {
	txn, err := s.client.Backfill(ctx, s.serverName, server, roomID, limit, from)
	if err != nil {
		return nil, fmt.Errorf("backfill from %s: %w", server, err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
	if err != nil {
		return nil, err
	}
	raw := txn.PDUs
	if len(raw) > limit+len(from) {
		raw = raw[:limit+len(from)]
	}
	var parsed []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, js := range raw {
		// A content hash mismatch gives the redacted event: what the spec
		// says to keep.
		ev, err := verImpl.NewEventFromUntrustedJSON(js)
		if err != nil || ev.RoomID().String() != roomID || seen[ev.EventID()] {
			continue
		}
		seen[ev.EventID()] = true
		parsed = append(parsed, ev)
	}
	var checked []gomatrixserverlib.PDU
	for i, err := range gomatrixserverlib.VerifyAllEventSignatures(ctx, parsed, s.keys.KeyRing(), userIDForSender) {
		if err == nil {
			checked = append(checked, parsed[i])
		}
	}
	if len(checked) == 0 {
		return nil, nil
	}
	if err := s.storeBackfilled(ctx, server, roomID, ver, checked); err != nil {
		return nil, err
	}
	// What the roomserver holds now (rejected events are left out).
	stored, err := s.rooms.QueryEventsByID(ctx, eventIDs(checked))
	if err != nil {
		return nil, err
	}
	sort.SliceStable(stored, func(i, j int) bool { return stored[i].Depth() > stored[j].Depth() })
	return stored, nil
}

// storeBackfilled inputs the events not stored here as outliers, each
// after its auth events; auth events that are neither stored nor among
// them are fetched from server (GET /event, bounded).
func (s *Service) storeBackfilled(ctx context.Context, server spec.ServerName, roomID string, ver gomatrixserverlib.RoomVersion, evs []gomatrixserverlib.PDU) error {
	have, err := s.known(ctx, eventIDs(evs))
	if err != nil {
		return err
	}
	var todo []gomatrixserverlib.PDU
	inBatch := map[string]bool{}
	for _, ev := range evs {
		inBatch[ev.EventID()] = true
		if !have[ev.EventID()] {
			todo = append(todo, ev)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	fetchedN := 0
	frontier := todo
	for round := 0; round < backfillAuthRounds && fetchedN < maxBackfillAuthFetch; round++ {
		var want []string
		for _, ev := range frontier {
			for _, id := range ev.AuthEventIDs() {
				if !inBatch[id] {
					inBatch[id] = true
					want = append(want, id)
				}
			}
		}
		if len(want) == 0 {
			break
		}
		known, err := s.known(ctx, want)
		if err != nil {
			return err
		}
		var missing []string
		for _, id := range want {
			if !known[id] {
				missing = append(missing, id)
			}
		}
		missing = missing[:min(len(missing), maxBackfillAuthFetch-fetchedN)]
		if len(missing) == 0 {
			break
		}
		fetchedN += len(missing)
		fetched, err := s.fetchEvents(ctx, server, ver, missing)
		if err != nil {
			// The events whose auth events are missing are refused by the
			// roomserver; the rest are still worth storing.
			logrus.WithError(err).WithField("room_id", roomID).Info("federation: auth events of backfilled events could not be fetched")
			break
		}
		var inRoom []gomatrixserverlib.PDU
		for _, ev := range fetched {
			if ev.RoomID().String() == roomID {
				inRoom = append(inRoom, ev)
			}
		}
		todo = append(todo, inRoom...)
		frontier = inRoom
	}
	_, err = s.rooms.InputFederationEvents(ctx, &rsapi.InputFederationEventsRequest{
		RoomID:   roomID,
		Outliers: gomatrixserverlib.ReverseTopologicalOrdering(todo, gomatrixserverlib.TopologicalOrderByAuthEvents),
	})
	var bad *rsapi.BadEventError
	if errors.As(err, &bad) {
		return nil
	}
	return err
}

// known says which of ids the roomserver has stored (and not rejected).
func (s *Service) known(ctx context.Context, ids []string) (map[string]bool, error) {
	evs, err := s.rooms.QueryEventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(evs))
	for _, e := range evs {
		out[e.EventID()] = true
	}
	return out, nil
}
