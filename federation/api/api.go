// Package api is the federation component's boundary for the client API:
// membership changes in rooms that live on other servers (server-server
// spec §"Joining Rooms", §"Leaving Rooms", §"Inviting to a room") and
// remote room alias lookups (§"Querying for information").
//
// Client-visible failures are *httputil.Error values (a remote server's
// refusal, an unreachable room); anything else is an internal error.
package api

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"
)

// MembershipAPI is implemented by the federation component.
type MembershipAPI interface {
	// NeedsRemoteJoin says whether a local user's join must go through
	// another server: the room is not known here, is known only through an
	// invite, or no local user is in it any more (so the state here may be
	// stale) and it was created on another server.
	NeedsRemoteJoin(ctx context.Context, roomID string) (bool, error)
	// PerformJoin joins a local user to a room this server is not in,
	// through the first of serverNames that answers: make_join, sign the
	// join, send_join (v2), check the answer's signatures and auth, and
	// store the room's state and the join in the roomserver.
	PerformJoin(ctx context.Context, roomID, userID string, serverNames []string, content json.RawMessage) error
	// PerformKnock knocks on a room this server is not in through the
	// first of serverNames that answers (make_knock, send_knock) and
	// records the knock with the room's stripped state.
	PerformKnock(ctx context.Context, roomID, userID string, serverNames []string, content json.RawMessage) error
	// PerformLeave handles a local user's leave of a room whose state is
	// not (or may not be) current here: rejecting a remote invite, or
	// leaving a remote room as the server's last member, by make_leave and
	// send_leave. It returns ErrLeaveLocally when a local leave event is
	// the right way (other local users are still in the room).
	PerformLeave(ctx context.Context, roomID, userID string, content json.RawMessage) error
	// PerformInvite invites a user of another server to a room this server
	// is in: the invite is built and signed here, countersigned by the
	// invitee's server (/invite v2), then stored and sent to the room.
	PerformInvite(ctx context.Context, roomID, inviterUserID, inviteeUserID string, content json.RawMessage) error
	// LookupRoomAlias asks the alias's server for the room it names and
	// servers that are in it.
	LookupRoomAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
}

// ErrLeaveLocally says a leave needs no handshake: send it as a local event.
var ErrLeaveLocally = errors.New("leave with a local event")

// BackfillAPI is implemented by the federation component: history of a
// room from before this server's earliest events, for /messages.
type BackfillAPI interface {
	// Backfill asks the room's other servers (server-server spec
	// §"Backfilling and retrieving missing events", GET /backfill) for up
	// to limit events preceding fromEventIDs (which the servers return
	// too). Every event's signatures and hashes are checked and each is
	// stored through the roomserver as an outlier checked against its auth
	// events (fetched when missing). It returns the events that were
	// stored or already known, deepest first; none and no error when no
	// server had anything.
	Backfill(ctx context.Context, roomID string, fromEventIDs []string, limit int) ([]gomatrixserverlib.PDU, error)
}
