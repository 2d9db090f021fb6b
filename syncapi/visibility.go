package syncapi

import (
	"math"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/parley-chat/parley/internal/visibility"
	"github.com/parley-chat/parley/syncapi/storage"
)

// roomVisibility decides which events of one room a user may see. The
// rules are the shared ones (internal/visibility, client-server spec
// §"History visibility"); what the sync API adds is where the inputs come
// from: the history visibility stored with each event and the user's
// membership changes by stream position, both in its own tables, so a
// check costs no query per event.
//
// A user always sees their own membership events, so a client learns why
// it was removed from a room.
type roomVisibility struct {
	userID  string
	history []storage.MembershipAt
	reader  visibility.Reader
}

func newRoomVisibility(userID string, history []storage.MembershipAt) roomVisibility {
	v := roomVisibility{userID: userID, history: history, reader: visibility.Reader{UserID: userID}}
	// The shared rules want the history newest first, each change named;
	// a change's stream position names it uniquely within the room.
	for i := len(history) - 1; i >= 0 && len(v.reader.History) < visibility.MaxHistory; i-- {
		v.reader.History = append(v.reader.History, visibility.Change{
			EventID: changeID(history[i].Position), Membership: history[i].Membership})
	}
	return v
}

func changeID(pos int64) string { return "pos:" + strconv.FormatInt(pos, 10) }

// membershipAt is the user's membership just before the event at pos, and
// the position of the change that set it (0 if none).
func (v roomVisibility) membershipAt(pos int64) (string, int64) {
	m, at := "", int64(0)
	for _, h := range v.history {
		if h.Position >= pos {
			break
		}
		m, at = h.Membership, h.Position
	}
	return m, at
}

func (v roomVisibility) canSee(ev *storage.Event) bool {
	if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == v.userID {
		return true
	}
	m, at := v.membershipAt(ev.Position)
	p := visibility.Point{HistoryVisibility: gomatrixserverlib.HistoryVisibility(ev.HistoryVisibility), Membership: m}
	if at > 0 {
		p.MembershipEventID = changeID(at)
	}
	return v.reader.Allowed(p)
}

// openFrom is the first position at which the user was joined or invited:
// before it only shared and world_readable events can be visible, which
// lets the database skip the rest.
func (v roomVisibility) openFrom() int64 {
	for _, h := range v.history {
		if h.Membership == "join" || h.Membership == "invite" {
			return h.Position
		}
	}
	return math.MaxInt64
}

// everMember says whether the user has ever had a membership in the room.
func (v roomVisibility) everMember() bool { return len(v.history) > 0 }

// membershipAtOrBefore is the user's membership as of stream position pos.
func (v roomVisibility) membershipAtOrBefore(pos int64) string {
	m, _ := v.membershipAt(pos + 1)
	return m
}
