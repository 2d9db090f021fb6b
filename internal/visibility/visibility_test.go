package visibility

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// TestAllowed walks the spec's five rules with a reader whose membership
// history is: invited ($inv), joined ($join), left ($leave) — newest first
// in History — and events at points before, during and after that history.
func TestAllowed(t *testing.T) {
	left := &Reader{UserID: "@u:x", History: []Change{
		{EventID: "$leave", Membership: Leave},
		{EventID: "$join", Membership: Join},
		{EventID: "$inv", Membership: Invite},
	}}
	joined := &Reader{UserID: "@u:x", History: []Change{{EventID: "$join", Membership: Join}}}
	invited := &Reader{UserID: "@u:x", History: []Change{{EventID: "$inv", Membership: Invite}}}
	stranger := &Reader{UserID: "@u:x"}

	before := func(hv gomatrixserverlib.HistoryVisibility) Point { return Point{HistoryVisibility: hv} }
	whileInvited := func(hv gomatrixserverlib.HistoryVisibility) Point {
		return Point{HistoryVisibility: hv, Membership: Invite, MembershipEventID: "$inv"}
	}
	whileJoined := func(hv gomatrixserverlib.HistoryVisibility) Point {
		return Point{HistoryVisibility: hv, Membership: Join, MembershipEventID: "$join"}
	}
	afterLeaving := func(hv gomatrixserverlib.HistoryVisibility) Point {
		return Point{HistoryVisibility: hv, Membership: Leave, MembershipEventID: "$leave"}
	}
	const (
		world   = gomatrixserverlib.HistoryVisibilityWorldReadable
		shared  = gomatrixserverlib.HistoryVisibilityShared
		invite  = gomatrixserverlib.HistoryVisibilityInvited
		joinedV = gomatrixserverlib.HistoryVisibilityJoined
	)
	cases := []struct {
		name string
		r    *Reader
		p    Point
		want bool
	}{
		{"world_readable, stranger", stranger, before(world), true},
		{"world_readable after leaving", left, afterLeaving(world), true},
		{"shared, stranger", stranger, before(shared), false},
		{"shared, before a later join", left, before(shared), true},
		{"shared, while invited before the join", left, whileInvited(shared), true},
		{"shared, after leaving", left, afterLeaving(shared), false},
		{"shared, currently joined reads older history", joined, before(shared), true},
		{"shared, invited but never joined", invited, whileInvited(shared), false},
		{"no history_visibility means shared", joined, before(""), true},
		{"unknown history_visibility means shared", stranger, before("bogus"), false},
		{"invited, while invited", invited, whileInvited(invite), true},
		{"invited, before the invite", left, before(invite), false},
		{"invited, while joined", left, whileJoined(invite), true},
		{"invited, after leaving", left, afterLeaving(invite), false},
		{"joined, while joined", left, whileJoined(joinedV), true},
		{"joined, while invited", left, whileInvited(joinedV), false},
		{"joined, before joining", joined, before(joinedV), false},
		{"joined, after leaving", left, afterLeaving(joinedV), false},
	}
	for _, c := range cases {
		if got := c.r.Allowed(c.p); got != c.want {
			t.Errorf("%s: Allowed = %v, want %v", c.name, got, c.want)
		}
	}
}
