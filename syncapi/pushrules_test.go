package syncapi

import (
	"encoding/json"
	"fmt"
	"testing"
)

const alice = "@alice:test.local"

func evJSON(t testing.TB, ev map[string]any) *flatEvent {
	t.Helper()
	if _, ok := ev["room_id"]; !ok {
		ev["room_id"] = "!room:test.local"
	}
	if _, ok := ev["sender"]; !ok {
		ev["sender"] = "@bob:test.local"
	}
	b, _ := json.Marshal(ev)
	fe, err := flattenEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	return fe
}

func msg(body string, extra map[string]any) map[string]any {
	content := map[string]any{"msgtype": "m.text", "body": body}
	for k, v := range extra {
		content[k] = v
	}
	return map[string]any{"type": "m.room.message", "content": content}
}

// TestDefaultPushRules runs sample events through the spec's default rules
// for @alice and checks which rule fires and what it asks for.
func TestDefaultPushRules(t *testing.T) {
	rules := compileRules(alice, (&userPushRules{}).merged(alice))
	big := evalRoom{memberCount: 10, senderPower: 0}
	oneToOne := evalRoom{memberCount: 2}
	mod := evalRoom{memberCount: 10, senderPower: 50}
	cases := []struct {
		name      string
		ev        map[string]any
		room      evalRoom
		display   string
		notify    bool
		highlight bool
		sound     string
	}{
		{"plain message in a group", msg("hello all", nil), big, "", true, false, ""},
		{"message in a 1:1 room", msg("hi", nil), oneToOne, "", true, false, `"default"`},
		{"notice is suppressed", map[string]any{"type": "m.room.message", "content": map[string]any{"msgtype": "m.notice", "body": "alice"}}, big, "", false, false, ""},
		{"m.mentions user", msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{alice}}}), big, "", true, true, `"default"`},
		{"m.mentions someone else", msg("hey", map[string]any{"m.mentions": map[string]any{"user_ids": []string{"@carol:test.local"}}}), big, "", true, false, ""},
		{"legacy localpart mention", msg("ping Alice, lunch?", nil), big, "", true, true, `"default"`},
		{"localpart inside a word does not match", msg("malice aforethought", nil), big, "", true, false, ""},
		{"legacy mention ignored when m.mentions present", msg("alice!", map[string]any{"m.mentions": map[string]any{}}), big, "", true, false, ""},
		{"display name mention", msg("is Wonder Land here?", nil), big, "wonder land", true, true, `"default"`},
		{"@room by moderator (legacy)", msg("@room meeting now", nil), mod, "", true, true, ""},
		{"@room by unprivileged sender", msg("@room meeting now", nil), big, "", true, false, ""},
		{"room mention via m.mentions", msg("all", map[string]any{"m.mentions": map[string]any{"room": true}}), mod, "", true, true, ""},
		{"room mention needs permission", msg("all", map[string]any{"m.mentions": map[string]any{"room": true}}), big, "", true, false, ""},
		{"invite for me", map[string]any{"type": "m.room.member", "state_key": alice, "content": map[string]any{"membership": "invite"}}, big, "", true, false, `"default"`},
		{"other member event", map[string]any{"type": "m.room.member", "state_key": "@carol:test.local", "content": map[string]any{"membership": "join"}}, big, "", false, false, ""},
		{"tombstone", map[string]any{"type": "m.room.tombstone", "state_key": "", "content": map[string]any{"replacement_room": "!new:x"}}, big, "", true, true, ""},
		{"tombstone with a state key is not the room's", map[string]any{"type": "m.room.tombstone", "state_key": "x", "content": map[string]any{}}, big, "", false, false, ""},
		{"reaction", map[string]any{"type": "m.reaction", "content": map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}}, big, "", false, false, ""},
		{"server ACL", map[string]any{"type": "m.room.server_acl", "state_key": "", "content": map[string]any{}}, big, "", false, false, ""},
		{"edit is suppressed", msg("* fixed", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}), big, "", false, false, ""},
		{"call invite rings", map[string]any{"type": "m.call.invite", "content": map[string]any{}}, big, "", true, false, `"ring"`},
		{"encrypted in 1:1", map[string]any{"type": "m.room.encrypted", "content": map[string]any{}}, oneToOne, "", true, false, `"default"`},
		{"encrypted in a group", map[string]any{"type": "m.room.encrypted", "content": map[string]any{}}, big, "", true, false, ""},
		{"unknown event type", map[string]any{"type": "org.example.thing", "content": map[string]any{}}, big, "", false, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := rules.evaluate(evJSON(t, c.ev), &c.room, c.display)
			notify := o != nil && o.notify
			if notify != c.notify {
				t.Fatalf("notify = %v, want %v (outcome %+v)", notify, c.notify, o)
			}
			if !notify {
				return
			}
			if o.highlight != c.highlight {
				t.Errorf("highlight = %v, want %v", o.highlight, c.highlight)
			}
			if got := string(o.tweaks["sound"]); got != c.sound {
				t.Errorf("sound = %q, want %q", got, c.sound)
			}
		})
	}
}

// TestUserRulesAndOverrides checks that user rules outrank server
// defaults (except master), and that disabling master and changing
// default actions take effect.
func TestUserRulesAndOverrides(t *testing.T) {
	room := evalRoom{memberCount: 10}
	ev := evJSON(t, msg("hello", nil))

	ur := &userPushRules{}
	if err := placeRule(ur, kindRoom, PushRule{RuleID: "!room:test.local", Enabled: true, Actions: []PushAction{}}, "", ""); err != nil {
		t.Fatal(err)
	}
	if o := compileRules(alice, ur.merged(alice)).evaluate(ev, &room, ""); o != nil && o.notify {
		t.Fatal("a room rule with no actions must silence the room")
	}
	other := evJSON(t, map[string]any{"type": "m.room.message", "room_id": "!other:test.local", "content": map[string]any{"body": "x"}})
	if o := compileRules(alice, ur.merged(alice)).evaluate(other, &room, ""); o == nil || !o.notify {
		t.Fatal("the room rule must not affect other rooms")
	}

	on := true
	ur.Defaults = map[string]defaultOverride{".m.rule.master": {Enabled: &on}}
	beer := PushRule{RuleID: "beer", Enabled: true, Actions: []PushAction{actNotify, actHighlight}, Pattern: strp("be?r")}
	if err := placeRule(ur, kindContent, beer, "", ""); err != nil {
		t.Fatal(err)
	}
	if o := compileRules(alice, ur.merged(alice)).evaluate(evJSON(t, msg("cold BEER please", nil)), &room, ""); o != nil && o.notify {
		t.Fatal("master enabled must silence everything, user rules included")
	}
	ur.Defaults = map[string]defaultOverride{".m.rule.message": {Actions: &[]PushAction{actNotify, {Tweak: "sound", Value: json.RawMessage(`"bell"`)}}}}
	cr := compileRules(alice, ur.merged(alice))
	if o := cr.evaluate(evJSON(t, msg("cold BEER please", nil)), &room, ""); o == nil || !o.highlight {
		t.Fatalf("content rule with glob be?r must match 'BEER': %+v", o)
	}
	chat := evJSON(t, map[string]any{"type": "m.room.message", "room_id": "!other:test.local", "content": map[string]any{"body": "just chatting"}})
	if o := cr.evaluate(chat, &room, ""); o == nil || string(o.tweaks["sound"]) != `"bell"` {
		t.Fatalf("changed default actions not applied: %+v", o)
	}
}

func TestPlaceRuleOrdering(t *testing.T) {
	ur := &userPushRules{}
	mk := func(id string) PushRule {
		return PushRule{RuleID: id, Enabled: true, Actions: []PushAction{}, Conditions: []PushCondition{}}
	}
	steps := []struct {
		id, before, after string
		want              []string
		wantErr           bool
	}{
		{id: "a", want: []string{"a"}},
		{id: "b", want: []string{"b", "a"}},
		{id: "c", after: "a", want: []string{"b", "a", "c"}},
		{id: "d", before: "a", want: []string{"b", "d", "a", "c"}},
		{id: "b", after: "c", want: []string{"d", "a", "c", "b"}},
		{id: "e", before: "nope", wantErr: true, want: []string{"d", "a", "c", "b"}},
		{id: "e", before: ".m.rule.master", wantErr: true, want: []string{"d", "a", "c", "b"}},
		{id: "a", before: "c", after: "d", want: []string{"d", "a", "c", "b"}},
	}
	for i, st := range steps {
		snapshot := append([]PushRule(nil), ur.Rules.Override...)
		err := placeRule(ur, kindOverride, mk(st.id), st.before, st.after)
		if (err != nil) != st.wantErr {
			t.Fatalf("step %d: err = %v, wantErr %v", i, err, st.wantErr)
		}
		if err != nil {
			ur.Rules.Override = snapshot
		}
		var got []string
		for _, r := range ur.Rules.Override {
			got = append(got, r.RuleID)
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Fatalf("step %d: order %v, want %v", i, got, st.want)
		}
	}
}

func TestConditionsAndMatchers(t *testing.T) {
	ev := evJSON(t, map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{
		"topic": "Lunch plans", "m.federate": true, "count": 3, "alt_aliases": []any{"#a:x", "#b:y", 7},
		"nested": map[string]any{"a.b": "dotted"},
	}})
	room := evalRoom{memberCount: 5}
	cases := []struct {
		cond PushCondition
		want bool
	}{
		{match("content.topic", "lunc?*"), true},
		{match("content.topic", "LUNCH*"), true},
		{match("content.topic", "lunc"), false},
		{match("content.missing", "*"), false},
		{match("content.m\\.federate", "*"), false}, // not a string
		{PushCondition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage("true")}, true},
		{PushCondition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`"true"`)}, false},
		{PushCondition{Kind: "event_property_is", Key: "content.count", Value: json.RawMessage("3")}, true},
		{PushCondition{Kind: "event_property_is", Key: "content.alt_aliases", Value: json.RawMessage(`"#a:x"`)}, false},
		{PushCondition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`"#b:y"`)}, true},
		{PushCondition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`7`)}, true},
		{PushCondition{Kind: "event_property_contains", Key: "content.alt_aliases", Value: json.RawMessage(`":y"`)}, false},
		{PushCondition{Kind: "event_property_is", Key: `content.nested.a\.b`, Value: json.RawMessage(`"dotted"`)}, true},
		{PushCondition{Kind: "room_member_count", Is: "5"}, true},
		{PushCondition{Kind: "room_member_count", Is: ">=6"}, false},
		{PushCondition{Kind: "room_member_count", Is: "<6"}, true},
		{PushCondition{Kind: "org.unknown"}, false},
	}
	for i, c := range cases {
		rs := PushRuleset{Override: []PushRule{{RuleID: "r", Enabled: true, Conditions: []PushCondition{c.cond}, Actions: []PushAction{actNotify}}}}
		o := compileRules(alice, rs).evaluate(ev, &room, "")
		if (o != nil) != c.want {
			t.Errorf("case %d %+v: matched %v, want %v", i, c.cond, o != nil, c.want)
		}
	}
	body := []struct {
		pattern, body string
		want          bool
	}{
		{"ex*ple", "an example event.", true},
		{"ex*ple", "exple", true},
		{"ex*ple", "an exciting triple-whammy", true},
		{"ex*ple", "examples", false},
		{"cake", "cheesecake", false},
		{"cake", "cake!", true},
	}
	for _, b := range body {
		if got := newBodyMatcher(b.pattern).match(b.body); got != b.want {
			t.Errorf("body %q ~ %q = %v, want %v", b.pattern, b.body, got, b.want)
		}
	}
}

func TestValidateRule(t *testing.T) {
	bad := []struct {
		kind string
		id   string
		rule PushRule
	}{
		{kindOverride, "x", PushRule{}},
		{kindOverride, "x", PushRule{Actions: []PushAction{{Name: "explode"}}}},
		{kindOverride, "x", PushRule{Actions: []PushAction{}, Conditions: []PushCondition{{Kind: "event_match", Key: "type"}}}},
		{kindOverride, "x", PushRule{Actions: []PushAction{}, Conditions: []PushCondition{{Kind: "room_member_count", Is: "=>2"}}}},
		{kindOverride, "x", PushRule{Actions: []PushAction{}, Conditions: []PushCondition{{Kind: "event_property_is", Key: "a", Value: json.RawMessage(`{"x":1}`)}}}},
		{kindContent, "x", PushRule{Actions: []PushAction{}}},
		{kindRoom, "x", PushRule{Actions: []PushAction{}}},
		{kindSender, "x", PushRule{Actions: []PushAction{}}},
	}
	for i, b := range bad {
		if err := validateRule(b.kind, b.id, &b.rule); err == nil {
			t.Errorf("case %d: accepted", i)
		}
	}
	ok := PushRule{Actions: []PushAction{actNotify, {Name: "dont_notify"}}, Conditions: []PushCondition{{Kind: "org.future.kind"}}}
	if err := validateRule(kindOverride, "x", &ok); err != nil {
		t.Fatalf("valid rule refused: %v", err)
	}
}

// BenchmarkEvaluatePushRules evaluates one message for the 100 members of
// a room with the default rules: the per-event work of the consumer.
func BenchmarkEvaluatePushRules(b *testing.B) {
	const members = 100
	rules := make([]*compiledRules, members)
	names := make([]string, members)
	for i := range rules {
		u := fmt.Sprintf("@user%d:test.local", i)
		rules[i] = compileRules(u, (&userPushRules{}).merged(u))
		names[i] = fmt.Sprintf("user number %d", i)
	}
	raw, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@bob:test.local", "room_id": "!r:test.local",
		"event_id": "$e", "content": map[string]any{"msgtype": "m.text", "body": "Hello everyone, the build is green again; user42 please review"}})
	room := evalRoom{memberCount: members}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fe, err := flattenEvent(raw)
		if err != nil {
			b.Fatal(err)
		}
		for m := range rules {
			rules[m].evaluate(fe, &room, names[m])
		}
	}
}
