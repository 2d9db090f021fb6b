package roomserver

import (
	"context"
	"errors"
	"testing"

	"github.com/parley-chat/parley/internal/testdb"
	"github.com/parley-chat/parley/roomserver/api"
)

func TestAuthRulesThroughSendEvent(t *testing.T) {
	testdb.Run(t, func(t *testing.T, dbURL string) {
		h := newHarness(t, dbURL)
		alice, bob, carol, dave := user("alice"), user("bob"), user("carol"), user("dave")
		public := h.createRoom("10", alice, "public", map[string]int{dave: 50})
		private := h.createRoom("10", alice, "invite", nil)
		h.join(public, bob)
		h.join(public, dave)
		aliceMsg := h.mustSend(public, alice, "m.room.message", nil, map[string]any{"body": "from alice"})
		bobMsg := h.mustSend(public, bob, "m.room.message", nil, map[string]any{"body": "from bob"})

		type step struct {
			name    string
			room    string
			sender  string
			evType  string
			key     *string
			content any
			allowed bool
		}
		steps := []step{
			{"non-member message", public, carol, "m.room.message", nil, map[string]any{"body": "x"}, false},
			{"join invite-only room uninvited", private, bob, "m.room.member", strp(bob), map[string]any{"membership": "join"}, false},
			{"member without power invites", private, bob, "m.room.member", strp(carol), map[string]any{"membership": "invite"}, false},
			{"creator invites", private, alice, "m.room.member", strp(bob), map[string]any{"membership": "invite"}, true},
			{"invited user joins", private, bob, "m.room.member", strp(bob), map[string]any{"membership": "join"}, true},
			{"user without power sets name", public, bob, "m.room.name", strp(""), map[string]any{"name": "n"}, false},
			{"moderator sets name", public, dave, "m.room.name", strp(""), map[string]any{"name": "n"}, true},
			{"user raises own power", public, bob, "m.room.power_levels", strp(""), map[string]any{"users": map[string]int{alice: 100, bob: 100}}, false},
			{"moderator raises self above own level", public, dave, "m.room.power_levels", strp(""), map[string]any{"users": map[string]int{alice: 100, dave: 100}}, false},
			{"user without power bans", public, bob, "m.room.member", strp(dave), map[string]any{"membership": "ban"}, false},
			{"admin bans", public, alice, "m.room.member", strp(carol), map[string]any{"membership": "ban"}, true},
			{"banned user joins", public, carol, "m.room.member", strp(carol), map[string]any{"membership": "join"}, false},
			{"user redacts someone else's event", public, bob, "m.room.redaction", nil, map[string]any{"redacts": aliceMsg}, false},
			{"user redacts own event", public, bob, "m.room.redaction", nil, map[string]any{"redacts": bobMsg}, true},
			{"admin redacts someone else's event", public, alice, "m.room.redaction", nil, map[string]any{"redacts": aliceMsg}, true},
			// Auth events of messages are cached per sender; these check
			// that a state change reaches the next message.
			{"member sends", public, bob, "m.room.message", nil, map[string]any{"body": "x"}, true},
			{"admin raises events_default", public, alice, "m.room.power_levels", strp(""), map[string]any{"users": map[string]int{alice: 100, dave: 50}, "events_default": 50}, true},
			{"member below events_default sends", public, bob, "m.room.message", nil, map[string]any{"body": "x"}, false},
			{"moderator sends", public, dave, "m.room.message", nil, map[string]any{"body": "x"}, true},
			{"admin kicks moderator", public, alice, "m.room.member", strp(dave), map[string]any{"membership": "leave"}, true},
			{"kicked user sends", public, dave, "m.room.message", nil, map[string]any{"body": "x"}, false},
		}
		for _, s := range steps {
			_, err := h.send(s.room, s.sender, s.evType, s.key, s.content)
			var na *api.NotAllowedError
			switch {
			case s.allowed && err != nil:
				t.Errorf("%s: want allowed, got %v", s.name, err)
			case !s.allowed && !errors.As(err, &na):
				t.Errorf("%s: want NotAllowedError, got %v", s.name, err)
			}
		}
		m, err := h.rs.QueryMembership(context.Background(), public, carol)
		if err != nil || m.Membership != "ban" {
			t.Fatalf("carol's membership: %+v %v", m, err)
		}
	})
}
