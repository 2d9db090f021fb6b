package federation

import (
	"context"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// missingEventsLimit bounds one /get_missing_events request, and
// maxStateFallbacks the /state_ids fallbacks for one batch of events.
const (
	missingEventsLimit = 20
	maxStateFallbacks  = 3
)

// inputWithGaps gives events of one room (signatures checked) to the
// roomserver and fills the gaps behind those whose prev_events are not
// known here (server-server spec §"Backfilling and retrieving missing
// events"): first the events between this server's forward extremities and
// them, from /get_missing_events at origin; then, for any event whose
// prev_events are still missing, the state before it from /state_ids
// (fetching the state and auth events not stored here), so it can be
// placed with that state. It returns one result per input event.
func (s *Service) inputWithGaps(ctx context.Context, origin spec.ServerName, roomID string, ver gomatrixserverlib.RoomVersion, events []gomatrixserverlib.PDU) ([]rsapi.InputEventResult, error) {
	input := func(req *rsapi.InputFederationEventsRequest) ([]rsapi.InputEventResult, error) {
		req.RoomID = roomID
		res, err := s.rooms.InputFederationEvents(ctx, req)
		if err != nil {
			return nil, err
		}
		return res.Results, nil
	}
	results, err := input(&rsapi.InputFederationEventsRequest{Events: events})
	if err != nil {
		return nil, err
	}
	var gapped []gomatrixserverlib.PDU
	for i, r := range results {
		if len(r.MissingPrevEvents) > 0 {
			gapped = append(gapped, events[i])
		}
	}
	if len(gapped) == 0 || origin == s.serverName {
		return results, nil
	}
	log := logrus.WithFields(logrus.Fields{"room_id": roomID, "origin": origin})

	// The events in between, oldest first, then the gapped ones again.
	todo := map[string]gomatrixserverlib.PDU{}
	for _, ev := range gapped {
		todo[ev.EventID()] = ev
	}
	fetched, err := s.getMissingEvents(ctx, origin, roomID, ver, gapped)
	if err != nil {
		log.WithError(err).Info("federation: get_missing_events failed")
	}
	for _, ev := range fetched {
		todo[ev.EventID()] = ev
	}
	ordered := make([]gomatrixserverlib.PDU, 0, len(todo))
	for _, ev := range todo {
		ordered = append(ordered, ev)
	}
	sort.Slice(ordered, func(i, j int) bool {
		if ordered[i].Depth() != ordered[j].Depth() {
			return ordered[i].Depth() < ordered[j].Depth()
		}
		return ordered[i].EventID() < ordered[j].EventID()
	})
	byID := map[string]rsapi.InputEventResult{}
	fallbacks := 0
	for _, ev := range ordered {
		res, err := input(&rsapi.InputFederationEventsRequest{Events: []gomatrixserverlib.PDU{ev}})
		if err != nil {
			return nil, err
		}
		// Each fallback may fetch hundreds of events; after the first the
		// rest of a transaction's events usually have their prevs.
		if len(res[0].MissingPrevEvents) > 0 && fallbacks < maxStateFallbacks {
			fallbacks++
			// Still a gap: place the event on the state before it.
			outliers, stateIDs, err := s.stateBefore(ctx, origin, roomID, ver, ev.EventID())
			if err != nil {
				log.WithError(err).WithField("event_id", ev.EventID()).Info("federation: state before a gap could not be fetched")
			} else if res, err = input(&rsapi.InputFederationEventsRequest{
				Outliers:    outliers,
				Events:      []gomatrixserverlib.PDU{ev},
				StateBefore: map[string][]string{ev.EventID(): stateIDs},
			}); err != nil {
				return nil, err
			}
		}
		byID[ev.EventID()] = res[0]
	}
	for i, ev := range events {
		if r, ok := byID[ev.EventID()]; ok {
			results[i] = r
		}
	}
	return results, nil
}

// getMissingEvents asks origin for the events between this server's
// forward extremities and the given ones, signature-checked.
func (s *Service) getMissingEvents(ctx context.Context, origin spec.ServerName, roomID string, ver gomatrixserverlib.RoomVersion, latest []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	ext, err := s.rooms.QueryForwardExtremities(ctx, roomID)
	if err != nil {
		return nil, err
	}
	req := fclient.MissingEvents{Limit: missingEventsLimit}
	for i, e := range ext {
		req.EarliestEvents = append(req.EarliestEvents, e.EventID())
		// Nothing older than what this server already has is wanted.
		if i == 0 || int(e.Depth()) < req.MinDepth {
			req.MinDepth = int(e.Depth())
		}
	}
	for _, e := range latest {
		req.LatestEvents = append(req.LatestEvents, e.EventID())
	}
	res, err := s.client.LookupMissingEvents(ctx, s.serverName, origin, roomID, req, ver)
	if err != nil {
		return nil, err
	}
	evs := res.Events.UntrustedEvents(ver)
	if len(evs) > missingEventsLimit {
		evs = evs[:missingEventsLimit]
	}
	var out []gomatrixserverlib.PDU
	for i, err := range gomatrixserverlib.VerifyAllEventSignatures(ctx, evs, s.keys.KeyRing(), userIDForSender) {
		if err != nil || evs[i].RoomID().String() != roomID {
			continue
		}
		out = append(out, evs[i])
	}
	return out, nil
}

// stateBefore fetches the state before an event from server: the IDs
// from /state_ids, and the state and auth events not stored here (by
// GET /event), signature-checked and ordered for input as outliers.
func (s *Service) stateBefore(ctx context.Context, server spec.ServerName, roomID string, ver gomatrixserverlib.RoomVersion, eventID string) ([]gomatrixserverlib.PDU, []string, error) {
	ids, err := s.client.LookupStateIDs(ctx, s.serverName, server, roomID, eventID)
	if err != nil {
		return nil, nil, fmt.Errorf("state_ids: %w", err)
	}
	want := append(append([]string{}, ids.StateEventIDs...), ids.AuthEventIDs...)
	have, err := s.rooms.QueryEventsByID(ctx, want)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, e := range have {
		known[e.EventID()] = true
	}
	var missing []string
	seen := map[string]bool{}
	for _, id := range want {
		if !known[id] && !seen[id] {
			seen[id] = true
			missing = append(missing, id)
		}
	}
	fetched, err := s.fetchEvents(ctx, server, ver, missing)
	if err != nil {
		return nil, nil, err
	}
	for _, ev := range fetched {
		if ev.RoomID().String() != roomID {
			return nil, nil, fmt.Errorf("event %s is not in room %s", ev.EventID(), roomID)
		}
	}
	return gomatrixserverlib.ReverseTopologicalOrdering(fetched, gomatrixserverlib.TopologicalOrderByAuthEvents), ids.StateEventIDs, nil
}
