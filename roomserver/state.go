package roomserver

import (
	"context"
	"fmt"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/roomserver/storage"
)

type tuple = gomatrixserverlib.StateKeyTuple

// stateReader is a room state: (type, state_key) → event NID.
type stateReader interface {
	get(t tuple) (int64, bool)
	size() int
	each(fn func(t tuple, nid int64))
}

// stateMap is a fully materialized state.
type stateMap map[tuple]int64

func (m stateMap) get(t tuple) (int64, bool) { n, ok := m[t]; return n, ok }
func (m stateMap) size() int                 { return len(m) }
func (m stateMap) each(fn func(t tuple, nid int64)) {
	for t, n := range m {
		fn(t, n)
	}
}

// overlay is a committed state plus the changes a batch made to it, so a
// batch can work on the room's current state without copying it; changes
// map a key to 0 when it was removed.
type overlay struct {
	base    stateReader
	changes stateMap
}

func (o *overlay) get(t tuple) (int64, bool) {
	if n, ok := o.changes[t]; ok {
		return n, n != 0
	}
	return o.base.get(t)
}

func (o *overlay) size() int {
	n := o.base.size()
	for t, nid := range o.changes {
		_, inBase := o.base.get(t)
		switch {
		case nid != 0 && !inBase:
			n++
		case nid == 0 && inBase:
			n--
		}
	}
	return n
}

func (o *overlay) each(fn func(t tuple, nid int64)) {
	o.base.each(func(t tuple, n int64) {
		if _, changed := o.changes[t]; !changed {
			fn(t, n)
		}
	})
	for t, n := range o.changes {
		if n != 0 {
			fn(t, n)
		}
	}
}

func materialize(r stateReader) stateMap {
	if m, ok := r.(stateMap); ok {
		return m
	}
	m := make(stateMap, r.size())
	r.each(func(t tuple, n int64) { m[t] = n })
	return m
}

// snapRef is a snapshot with what is needed to extend it.
type snapRef struct {
	seq      int64
	chainLen int
	state    stateReader
}

// diffStates returns the entries of to that differ from from, with 0 for
// keys only in from.
func diffStates(from, to stateReader) []storage.StateEntry {
	var out []storage.StateEntry
	to.each(func(t tuple, n int64) {
		if old, ok := from.get(t); !ok || old != n {
			out = append(out, storage.StateEntry{Type: t.EventType, StateKey: t.StateKey, EventNID: n})
		}
	})
	from.each(func(t tuple, _ int64) {
		if _, ok := to.get(t); !ok {
			out = append(out, storage.StateEntry{Type: t.EventType, StateKey: t.StateKey})
		}
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Type != out[j].Type {
			return out[i].Type < out[j].Type
		}
		return out[i].StateKey < out[j].StateKey
	})
	return out
}

// checkpointInterval is how many deltas may pile up on a checkpoint
// before the next snapshot is written whole. It grows with the state so
// that the amortised cost of a checkpoint stays near 32 entries per state
// change, and is capped so that reading a snapshot walks at most 256 rows.
func checkpointInterval(size int) int {
	return min(max(size/32, 16), 256)
}

// loadSnapshot materializes a snapshot from its chain of deltas.
func loadSnapshot(ctx context.Context, db *storage.Database, q storage.Querier, roomNID, seq int64) (stateMap, int, error) {
	if seq == 0 {
		return stateMap{}, 0, nil
	}
	chain, err := db.SelectSnapshotChain(ctx, q, roomNID, seq)
	if err != nil {
		return nil, 0, err
	}
	m := make(stateMap, chain[len(chain)-1].Size)
	for _, s := range chain {
		for _, e := range s.Entries {
			t := tuple{EventType: e.Type, StateKey: e.StateKey}
			if e.EventNID == 0 {
				delete(m, t)
			} else {
				m[t] = e.EventNID
			}
		}
	}
	return m, chain[len(chain)-1].ChainLen, nil
}

// userIDForSender maps a sender to a user ID. In room versions 1–11 the
// sender is the user ID; pseudo-ID rooms are not supported.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// authEventsFrom collects the events auth needs for events out of a state.
func (b *batch) authEventsFrom(ctx context.Context, state stateReader, needed gomatrixserverlib.StateNeeded) (*gomatrixserverlib.AuthEvents, error) {
	var nids []int64
	for _, t := range needed.Tuples() {
		if n, ok := state.get(t); ok {
			nids = append(nids, n)
		}
	}
	evs, err := b.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	ae := gomatrixserverlib.NewAuthEvents(nil)
	for _, n := range nids {
		e, ok := evs[n]
		if !ok {
			return nil, fmt.Errorf("state event %d is missing", n)
		}
		if err := ae.AddEvent(e.pdu); err != nil {
			return nil, err
		}
	}
	return &ae, nil
}

// resolveStates merges diverging states with the room version's state
// resolution algorithm (server-server spec §"Room versions", state
// resolution v1 for rooms 1, v2 from room 2 on).
func (b *batch) resolveStates(ctx context.Context, states []stateReader) (stateMap, error) {
	all := map[tuple]map[int64]struct{}{}
	for _, s := range states {
		s.each(func(t tuple, n int64) {
			if all[t] == nil {
				all[t] = map[int64]struct{}{}
			}
			all[t][n] = struct{}{}
		})
	}
	resolved := stateMap{}
	var conflictedNIDs, unconflictedNIDs []int64
	for t, nids := range all {
		inAll := true
		for _, s := range states {
			if _, ok := s.get(t); !ok {
				inAll = false
				break
			}
		}
		if len(nids) == 1 && inAll {
			for n := range nids {
				resolved[t] = n
				unconflictedNIDs = append(unconflictedNIDs, n)
			}
			continue
		}
		for n := range nids {
			conflictedNIDs = append(conflictedNIDs, n)
		}
	}
	if len(conflictedNIDs) == 0 {
		return resolved, nil
	}
	evs, err := b.eventsByNID(ctx, append(append([]int64{}, conflictedNIDs...), unconflictedNIDs...))
	if err != nil {
		return nil, err
	}
	pdus := func(nids []int64) ([]gomatrixserverlib.PDU, error) {
		out := make([]gomatrixserverlib.PDU, 0, len(nids))
		for _, n := range nids {
			e, ok := evs[n]
			if !ok {
				return nil, fmt.Errorf("state event %d is missing", n)
			}
			out = append(out, e.pdu)
		}
		return out, nil
	}
	conflicted, err := pdus(conflictedNIDs)
	if err != nil {
		return nil, err
	}
	unconflicted, err := pdus(unconflictedNIDs)
	if err != nil {
		return nil, err
	}
	authChain, err := b.authChain(ctx, conflicted)
	if err != nil {
		return nil, err
	}
	isRejected := func(eventID string) bool {
		e, err := b.eventsByID(ctx, []string{eventID})
		return err == nil && e[eventID] != nil && e[eventID].rejected
	}
	var result []gomatrixserverlib.PDU
	if b.rs.verImpl.StateResAlgorithm() == gomatrixserverlib.StateResV1 {
		result = append(gomatrixserverlib.ResolveStateConflicts(conflicted, authChain, userIDForSender), unconflicted...)
	} else {
		result = gomatrixserverlib.ResolveStateConflictsV2(conflicted, unconflicted, authChain, userIDForSender, isRejected)
	}
	byID := map[string]int64{}
	for _, e := range evs {
		byID[e.id] = e.nid
	}
	out := stateMap{}
	for _, p := range result {
		if p.StateKey() == nil {
			continue
		}
		nid, ok := byID[p.EventID()]
		if !ok {
			// State resolution picks among the events it was given.
			return nil, fmt.Errorf("state resolution returned unknown event %s", p.EventID())
		}
		out[tuple{EventType: p.Type(), StateKey: *p.StateKey()}] = nid
	}
	return out, nil
}

// authChain returns the auth events of events and all of theirs, as far as
// they are stored here.
func (b *batch) authChain(ctx context.Context, events []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	var next []string
	for _, e := range events {
		next = append(next, e.AuthEventIDs()...)
	}
	for len(next) > 0 {
		var want []string
		for _, id := range next {
			if !seen[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		next = nil
		found, err := b.eventsByID(ctx, want)
		if err != nil {
			return nil, err
		}
		for _, id := range want {
			if e := found[id]; e != nil {
				out = append(out, e.pdu)
				next = append(next, e.pdu.AuthEventIDs()...)
			}
		}
	}
	return out, nil
}
