package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/roomserver/api"
	"github.com/parley-chat/parley/roomserver/storage"
)

// The client-facing room queries of api.ClientRoomsAPI: summaries, the
// published room directory, alias moves, reports and forgotten rooms.

// maxDirectoryPage bounds one page of the directory.
const maxDirectoryPage = 500

// summaryTuples are the state events a room summary is made of.
var summaryTuples = []gomatrixserverlib.StateKeyTuple{
	{EventType: spec.MRoomCreate},
	{EventType: spec.MRoomName},
	{EventType: spec.MRoomTopic},
	{EventType: spec.MRoomCanonicalAlias},
	{EventType: "m.room.avatar"},
	{EventType: spec.MRoomJoinRules},
	{EventType: spec.MRoomHistoryVisibility},
	{EventType: "m.room.guest_access"},
}

// QueryRoomSummary implements api.ClientRoomsAPI.
func (s *Service) QueryRoomSummary(ctx context.Context, roomID string) (*api.RoomSummary, error) {
	sum, _, err := s.roomSummary(ctx, roomID)
	return sum, err
}

// roomSummary builds a room's summary and returns, besides, its aliases
// from m.room.canonical_alias (for the directory's search).
func (s *Service) roomSummary(ctx context.Context, roomID string) (*api.RoomSummary, []string, error) {
	room, _, err := s.room(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	evs, err := s.QueryCurrentState(ctx, roomID, summaryTuples)
	if err != nil {
		return nil, nil, err
	}
	sum := &api.RoomSummary{RoomID: roomID}
	var aliases []string
	for _, ev := range evs {
		if !ev.StateKeyEquals("") {
			continue
		}
		// Content that does not have the expected shape is treated as
		// absent: the events come from the room and may be anything.
		switch ev.Type() {
		case spec.MRoomCreate:
			var c struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.RoomType = c.Type
		case spec.MRoomName:
			var c struct {
				Name string `json:"name"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.Name = c.Name
		case spec.MRoomTopic:
			var c struct {
				Topic string `json:"topic"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.Topic = c.Topic
		case spec.MRoomCanonicalAlias:
			var c struct {
				Alias      string   `json:"alias"`
				AltAliases []string `json:"alt_aliases"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.CanonicalAlias = c.Alias
			aliases = append(aliases, c.Alias)
			aliases = append(aliases, c.AltAliases...)
		case "m.room.avatar":
			var c struct {
				URL string `json:"url"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.AvatarURL = c.URL
		case spec.MRoomJoinRules:
			var c struct {
				JoinRule string `json:"join_rule"`
				Allow    []struct {
					Type   string `json:"type"`
					RoomID string `json:"room_id"`
				} `json:"allow"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.JoinRule = c.JoinRule
			for _, a := range c.Allow {
				if a.Type == spec.MRoomMembership && a.RoomID != "" {
					sum.AllowRoomIDs = append(sum.AllowRoomIDs, a.RoomID)
				}
			}
		case spec.MRoomHistoryVisibility:
			var c gomatrixserverlib.HistoryVisibilityContent
			_ = json.Unmarshal(ev.Content(), &c)
			sum.HistoryVisibility = c.HistoryVisibility
		case "m.room.guest_access":
			var c struct {
				GuestAccess string `json:"guest_access"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			sum.GuestCanJoin = c.GuestAccess == "can_join"
		}
	}
	if sum.NumJoinedMembers, err = s.db.CountJoinedMembers(ctx, room.NID); err != nil {
		return nil, nil, fmt.Errorf("count members of %s: %w", roomID, err)
	}
	return sum, aliases, nil
}

// QueryCurrentStateOfType implements api.ClientRoomsAPI. It reads the
// room's state map (cached or from its snapshot) and loads only the events
// of the type asked for.
func (s *Service) QueryCurrentStateOfType(ctx context.Context, roomID, eventType string) ([]gomatrixserverlib.PDU, error) {
	room, verImpl, nids, err := s.currentStateNIDsOfType(ctx, roomID, eventType)
	if err != nil {
		return nil, err
	}
	return s.pdusByNID(ctx, room, verImpl, nids)
}

func (s *Service) currentStateNIDsOfType(ctx context.Context, roomID, eventType string) (*storage.Room, gomatrixserverlib.IRoomVersion, []int64, error) {
	pick := func(state stateMap) []int64 {
		var keys []tuple
		for t := range state {
			if t.EventType == eventType {
				keys = append(keys, t)
			}
		}
		sort.Slice(keys, func(i, j int) bool { return keys[i].StateKey < keys[j].StateKey })
		nids := make([]int64, len(keys))
		for i, t := range keys {
			nids[i] = state[t]
		}
		return nids
	}
	return s.pickCurrentState(ctx, roomID, pick)
}

// SetRoomPublished implements api.ClientRoomsAPI.
func (s *Service) SetRoomPublished(ctx context.Context, roomID string, published bool) error {
	room, _, err := s.room(ctx, roomID)
	if err != nil {
		return err
	}
	if !published {
		return s.db.DeletePublishedRoom(ctx, roomID)
	}
	row, err := s.publishedRow(ctx, roomID, room.Snapshot)
	if err != nil {
		return err
	}
	return s.db.UpsertPublishedRoom(ctx, row)
}

// publishedRow summarises a room for the directory. snapshot is the room's
// current state snapshot read before the summary, so that a change racing
// with this one leaves the row marked stale rather than wrongly fresh.
func (s *Service) publishedRow(ctx context.Context, roomID string, snapshot int64) (*storage.PublishedRoom, error) {
	sum, aliases, err := s.roomSummary(ctx, roomID)
	if err != nil {
		return nil, err
	}
	search := strings.ToLower(strings.Join(append([]string{sum.Name, sum.Topic}, aliases...), "\n"))
	return &storage.PublishedRoom{
		RoomID: roomID, Snapshot: snapshot, RoomType: sum.RoomType, Name: sum.Name, Topic: sum.Topic,
		CanonicalAlias: sum.CanonicalAlias, AvatarURL: sum.AvatarURL, JoinRule: sum.JoinRule,
		HistoryVisibility: string(sum.HistoryVisibility), GuestCanJoin: sum.GuestCanJoin,
		JoinedMembers: sum.NumJoinedMembers, SearchText: search,
	}, nil
}

// QueryRoomPublished implements api.ClientRoomsAPI.
func (s *Service) QueryRoomPublished(ctx context.Context, roomID string) (bool, error) {
	if _, _, err := s.room(ctx, roomID); err != nil {
		return false, err
	}
	return s.db.SelectRoomPublished(ctx, roomID)
}

// QueryPublishedRooms implements api.ClientRoomsAPI. Summaries are kept in
// the directory table and refreshed here for the rooms whose state changed
// since, so reading the directory costs state lookups only for rooms that
// changed, and never touches rooms that are not published.
func (s *Service) QueryPublishedRooms(ctx context.Context, req *api.PublishedRoomsRequest) (*api.PublishedRoomsResponse, error) {
	stale, err := s.db.SelectStalePublishedRooms(ctx)
	if err != nil {
		return nil, fmt.Errorf("find stale directory entries: %w", err)
	}
	for _, st := range stale {
		row, err := s.publishedRow(ctx, st.RoomID, st.Snapshot)
		if err != nil {
			return nil, fmt.Errorf("refresh directory entry of %s: %w", st.RoomID, err)
		}
		if err := s.db.UpdatePublishedRoom(ctx, row); err != nil {
			return nil, err
		}
	}
	limit := req.Limit
	if limit <= 0 || limit > maxDirectoryPage {
		limit = maxDirectoryPage
	}
	filter := &storage.PublishedRoomsFilter{
		Search:      strings.ToLower(req.SearchTerm),
		FilterTypes: req.FilterRoomTypes,
		Types:       req.RoomTypes,
	}
	rows, total, err := s.db.SelectPublishedRooms(ctx, filter, max(req.Offset, 0), limit)
	if err != nil {
		return nil, err
	}
	resp := &api.PublishedRoomsResponse{Rooms: make([]api.RoomSummary, len(rows)), Total: total}
	for i, r := range rows {
		resp.Rooms[i] = api.RoomSummary{
			RoomID: r.RoomID, RoomType: r.RoomType, Name: r.Name, Topic: r.Topic,
			CanonicalAlias: r.CanonicalAlias, AvatarURL: r.AvatarURL, JoinRule: r.JoinRule,
			HistoryVisibility: gomatrixserverlib.HistoryVisibility(r.HistoryVisibility),
			GuestCanJoin:      r.GuestCanJoin, NumJoinedMembers: r.JoinedMembers,
		}
	}
	return resp, nil
}

// MoveRoomAliases implements api.ClientRoomsAPI.
func (s *Service) MoveRoomAliases(ctx context.Context, fromRoomID, toRoomID string) ([]string, error) {
	if _, _, err := s.room(ctx, toRoomID); err != nil {
		return nil, err
	}
	return s.db.MoveAliases(ctx, fromRoomID, toRoomID)
}

// ReportEvent implements api.ClientRoomsAPI.
func (s *Service) ReportEvent(ctx context.Context, report *api.EventReport) error {
	if report.ReceivedAt.IsZero() {
		report.ReceivedAt = time.Now()
	}
	id, err := s.db.InsertEventReport(ctx, &storage.EventReport{
		RoomID: report.RoomID, EventID: report.EventID, Reporter: report.Reporter,
		Reason: report.Reason, Score: report.Score, ReceivedAt: report.ReceivedAt,
	})
	if err != nil {
		return err
	}
	report.ID = id
	return nil
}

// QueryEventReports implements api.ClientRoomsAPI.
func (s *Service) QueryEventReports(ctx context.Context, afterID int64, limit int) ([]api.EventReport, error) {
	rows, err := s.db.SelectEventReports(ctx, afterID, limit)
	if err != nil {
		return nil, err
	}
	out := make([]api.EventReport, len(rows))
	for i, r := range rows {
		out[i] = api.EventReport{
			ID: r.ID, RoomID: r.RoomID, EventID: r.EventID, Reporter: r.Reporter,
			Reason: r.Reason, Score: r.Score, ReceivedAt: r.ReceivedAt,
		}
	}
	return out, nil
}

// ForgetRoom implements api.ClientRoomsAPI. Forgetting a room one never
// had a membership in changes nothing and is not an error.
func (s *Service) ForgetRoom(ctx context.Context, roomID, userID string) error {
	room, _, err := s.room(ctx, roomID)
	if err != nil {
		return err
	}
	membership, _, err := s.db.SelectMembership(ctx, room.NID, userID)
	if err != nil {
		return err
	}
	switch membership {
	case "":
		return nil
	case spec.Leave, spec.Ban:
		// The insert itself re-checks the membership, so a join racing
		// with this leaves nothing recorded.
		_, err = s.db.InsertForgotten(ctx, room.NID, userID)
		return err
	}
	return api.ErrStillInRoom
}

// QueryForgotten implements api.ClientRoomsAPI.
func (s *Service) QueryForgotten(ctx context.Context, userID string, roomIDs []string) ([]string, error) {
	return s.db.SelectForgotten(ctx, userID, roomIDs)
}
