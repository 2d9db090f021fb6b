package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/parley-chat/parley/internal/httputil"
	rsapi "github.com/parley-chat/parley/roomserver/api"
)

// serverACL is the content of m.room.server_acl (client-server spec
// §"Server Access Control Lists (ACLs) for rooms").
type serverACL struct {
	Allow           []string `json:"allow"`
	Deny            []string `json:"deny"`
	AllowIPLiterals *bool    `json:"allow_ip_literals"`
}

// allows applies the ACL to a server name: its host (without port) must
// not be an IP literal unless those are allowed, must match no deny glob
// and must match an allow glob.
func (a *serverACL) allows(server spec.ServerName) bool {
	host, _, ok := spec.ParseAndValidateServerName(server)
	if !ok {
		return false
	}
	h := string(host)
	if a.AllowIPLiterals != nil && !*a.AllowIPLiterals && net.ParseIP(strings.Trim(h, "[]")) != nil {
		return false
	}
	for _, g := range a.Deny {
		if globMatch(g, h) {
			return false
		}
	}
	for _, g := range a.Allow {
		if globMatch(g, h) {
			return true
		}
	}
	return false
}

// globMatch matches s against a glob where * is any run of characters and
// ? any one character, ignoring case.
func globMatch(glob, s string) bool {
	g, str := strings.ToLower(glob), strings.ToLower(s)
	// Iterative matching with backtracking to the last star.
	gi, si, star, mark := 0, 0, -1, 0
	for si < len(str) {
		switch {
		case gi < len(g) && (g[gi] == '?' || g[gi] == str[si]):
			gi++
			si++
		case gi < len(g) && g[gi] == '*':
			star, mark = gi, si
			gi++
		case star >= 0:
			gi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for gi < len(g) && g[gi] == '*' {
		gi++
	}
	return gi == len(g)
}

// checkACL refuses origin if the room's current server ACL denies it;
// every inbound request naming a room goes through it. A room not known
// here has no ACL.
func (s *Service) checkACL(ctx context.Context, roomID string, origin spec.ServerName) error {
	evs, err := s.rooms.QueryCurrentState(ctx, roomID, []gomatrixserverlib.StateKeyTuple{{EventType: "m.room.server_acl"}})
	if errors.Is(err, rsapi.ErrRoomNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, ev := range evs {
		var acl serverACL
		if json.Unmarshal(ev.Content(), &acl) != nil {
			// An ACL that cannot be read allows nothing, as an empty one would.
			return httputil.Forbidden("Server %s is denied by the room's server ACL", origin)
		}
		if !acl.allows(origin) {
			return httputil.Forbidden("Server %s is denied by the room's server ACL", origin)
		}
	}
	return nil
}
