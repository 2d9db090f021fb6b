package syncapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
)

// Push rules: the data model, the server-default rules, and the compiled
// form used to evaluate events (client-server spec §"Push Rules").

// Rule kinds, in the order they are checked.
const (
	kindOverride  = "override"
	kindContent   = "content"
	kindRoom      = "room"
	kindSender    = "sender"
	kindUnderride = "underride"
)

var ruleKinds = []string{kindOverride, kindContent, kindRoom, kindSender, kindUnderride}

func validKind(k string) bool {
	for _, x := range ruleKinds {
		if x == k {
			return true
		}
	}
	return false
}

// PushCondition is one condition of an override or underride rule.
type PushCondition struct {
	Kind    string          `json:"kind"`
	Key     string          `json:"key,omitempty"`
	Pattern *string         `json:"pattern,omitempty"`
	Value   json.RawMessage `json:"value,omitempty"`
	Is      string          `json:"is,omitempty"`
}

// PushAction is "notify" or a set_tweak action; it marshals to the spec's
// mixed string/object form.
type PushAction struct {
	// Name is "notify" for the string form; "" for set_tweak.
	Name  string
	Tweak string
	// Value is the tweak's value (nil: no value).
	Value json.RawMessage
}

// MarshalJSON writes the spec form of the action.
func (a PushAction) MarshalJSON() ([]byte, error) {
	if a.Tweak == "" {
		return json.Marshal(a.Name)
	}
	m := map[string]json.RawMessage{}
	m["set_tweak"], _ = json.Marshal(a.Tweak)
	if a.Value != nil {
		m["value"] = a.Value
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads an action; unknown actions are an error so that a
// client learns its rule would not do what it asked.
func (a *PushAction) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = PushAction{Name: s}
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("action must be a string or an object")
	}
	var tweak string
	if err := json.Unmarshal(m["set_tweak"], &tweak); err != nil || tweak == "" {
		return fmt.Errorf("object action needs a set_tweak name")
	}
	*a = PushAction{Tweak: tweak, Value: m["value"]}
	return nil
}

// PushRule is a rule as the API shows it.
type PushRule struct {
	RuleID     string          `json:"rule_id"`
	Default    bool            `json:"default"`
	Enabled    bool            `json:"enabled"`
	Actions    []PushAction    `json:"actions"`
	Conditions []PushCondition `json:"conditions,omitempty"`
	Pattern    *string         `json:"pattern,omitempty"`
}

// MarshalJSON shows conditions whenever the rule has a list, even an empty
// one (override and underride rules), and leaves them out otherwise.
func (r PushRule) MarshalJSON() ([]byte, error) {
	type plain PushRule
	out := struct {
		plain
		Conditions *[]PushCondition `json:"conditions,omitempty"`
	}{plain: plain(r)}
	if r.Conditions != nil {
		out.Conditions = &r.Conditions
	}
	if out.plain.Actions == nil {
		out.plain.Actions = []PushAction{}
	}
	return json.Marshal(out)
}

// PushRuleset is the "global" ruleset, kind by kind.
type PushRuleset struct {
	Override  []PushRule `json:"override"`
	Content   []PushRule `json:"content"`
	Room      []PushRule `json:"room"`
	Sender    []PushRule `json:"sender"`
	Underride []PushRule `json:"underride"`
}

func (rs *PushRuleset) kind(k string) *[]PushRule {
	switch k {
	case kindOverride:
		return &rs.Override
	case kindContent:
		return &rs.Content
	case kindRoom:
		return &rs.Room
	case kindSender:
		return &rs.Sender
	default:
		return &rs.Underride
	}
}

// userPushRules is what is stored per user: their own rules, in priority
// order per kind, and their changes to server-default rules. The defaults
// themselves are never stored, so a server upgrade that changes them
// reaches every user.
type userPushRules struct {
	Rules    PushRuleset                `json:"rules"`
	Defaults map[string]defaultOverride `json:"defaults,omitempty"`
}

type defaultOverride struct {
	Enabled *bool         `json:"enabled,omitempty"`
	Actions *[]PushAction `json:"actions,omitempty"`
}

func strp(s string) *string { return &s }

var (
	actNotify       = PushAction{Name: "notify"}
	actSoundDefault = PushAction{Tweak: "sound", Value: json.RawMessage(`"default"`)}
	actSoundRing    = PushAction{Tweak: "sound", Value: json.RawMessage(`"ring"`)}
	actHighlight    = PushAction{Tweak: "highlight"}
)

func match(key, pattern string) PushCondition {
	return PushCondition{Kind: "event_match", Key: key, Pattern: strp(pattern)}
}

// defaultRules returns the server-default rules for a user, exactly as
// client-server spec v1.12 §"Predefined Rules" defines them, in order.
// .m.rule.master is first of the overrides; it is the one default rule that
// outranks user rules.
func defaultRules(userID string) PushRuleset {
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	userJSON, _ := json.Marshal(userID)
	d := func(id string, conds []PushCondition, actions ...PushAction) PushRule {
		if conds == nil {
			conds = []PushCondition{}
		}
		if actions == nil {
			actions = []PushAction{}
		}
		return PushRule{RuleID: id, Default: true, Enabled: true, Conditions: conds, Actions: actions}
	}
	master := d(".m.rule.master", nil)
	master.Enabled = false
	return PushRuleset{
		Override: []PushRule{
			master,
			d(".m.rule.suppress_notices", []PushCondition{match("content.msgtype", "m.notice")}),
			d(".m.rule.invite_for_me", []PushCondition{match("type", "m.room.member"), match("content.membership", "invite"), match("state_key", userID)},
				actNotify, actSoundDefault),
			d(".m.rule.member_event", []PushCondition{match("type", "m.room.member")}),
			d(".m.rule.is_user_mention", []PushCondition{{Kind: "event_property_contains", Key: `content.m\.mentions.user_ids`, Value: userJSON}},
				actNotify, actSoundDefault, actHighlight),
			d(".m.rule.contains_display_name", []PushCondition{{Kind: "contains_display_name"}}, actNotify, actSoundDefault, actHighlight),
			d(".m.rule.is_room_mention", []PushCondition{{Kind: "event_property_is", Key: `content.m\.mentions.room`, Value: json.RawMessage("true")},
				{Kind: "sender_notification_permission", Key: "room"}}, actNotify, actHighlight),
			d(".m.rule.roomnotif", []PushCondition{match("content.body", "@room"), {Kind: "sender_notification_permission", Key: "room"}},
				actNotify, actHighlight),
			d(".m.rule.tombstone", []PushCondition{match("type", "m.room.tombstone"), match("state_key", "")}, actNotify, actHighlight),
			d(".m.rule.reaction", []PushCondition{match("type", "m.reaction")}),
			d(".m.rule.room.server_acl", []PushCondition{match("type", "m.room.server_acl"), match("state_key", "")}),
			d(".m.rule.suppress_edits", []PushCondition{{Kind: "event_property_is", Key: `content.m\.relates_to.rel_type`, Value: json.RawMessage(`"m.replace"`)}}),
		},
		Content: []PushRule{{RuleID: ".m.rule.contains_user_name", Default: true, Enabled: true, Pattern: strp(localpart),
			Actions: []PushAction{actNotify, actSoundDefault, actHighlight}}},
		Room:   []PushRule{},
		Sender: []PushRule{},
		Underride: []PushRule{
			d(".m.rule.call", []PushCondition{match("type", "m.call.invite")}, actNotify, actSoundRing),
			d(".m.rule.encrypted_room_one_to_one", []PushCondition{{Kind: "room_member_count", Is: "2"}, match("type", "m.room.encrypted")},
				actNotify, actSoundDefault),
			d(".m.rule.room_one_to_one", []PushCondition{{Kind: "room_member_count", Is: "2"}, match("type", "m.room.message")},
				actNotify, actSoundDefault),
			d(".m.rule.message", []PushCondition{match("type", "m.room.message")}, actNotify),
			d(".m.rule.encrypted", []PushCondition{match("type", "m.room.encrypted")}, actNotify),
		},
	}
}

// legacyMentionRules are deprecated since v1.7 and apply only to events
// without an m.mentions property (spec §"Predefined Rules").
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.roomnotif":             true,
	".m.rule.contains_user_name":    true,
}

// merged returns the ruleset a user sees and is evaluated with: master,
// then user rules before the server defaults of each kind.
func (u *userPushRules) merged(userID string) PushRuleset {
	def := defaultRules(userID)
	apply := func(rules []PushRule) []PushRule {
		out := make([]PushRule, len(rules))
		for i, r := range rules {
			if o, ok := u.Defaults[r.RuleID]; ok {
				if o.Enabled != nil {
					r.Enabled = *o.Enabled
				}
				if o.Actions != nil {
					r.Actions = *o.Actions
				}
			}
			out[i] = r
		}
		return out
	}
	def.Override = apply(def.Override)
	def.Content = apply(def.Content)
	def.Underride = apply(def.Underride)
	var rs PushRuleset
	rs.Override = append(append([]PushRule{def.Override[0]}, u.Rules.Override...), def.Override[1:]...)
	rs.Content = append(append([]PushRule{}, u.Rules.Content...), def.Content...)
	rs.Room = append([]PushRule{}, u.Rules.Room...)
	rs.Sender = append([]PushRule{}, u.Rules.Sender...)
	rs.Underride = append(append([]PushRule{}, u.Rules.Underride...), def.Underride...)
	return rs
}

// Limits on user rules, so one user cannot make every event expensive.
const (
	maxUserRules     = 500
	maxConditions    = 20
	maxPatternLength = 512
)

// validateRule checks a user rule of kind for PUT, filling in what the
// kind implies. ruleID has already been checked.
func validateRule(kind, ruleID string, r *PushRule) error {
	if r.Actions == nil {
		return httputil.BadJSON("actions is required")
	}
	if err := validateActions(r.Actions); err != nil {
		return err
	}
	switch kind {
	case kindOverride, kindUnderride:
		r.Pattern = nil
		if len(r.Conditions) > maxConditions {
			return httputil.BadJSON("at most %d conditions", maxConditions)
		}
		for i := range r.Conditions {
			if err := validateCondition(&r.Conditions[i]); err != nil {
				return err
			}
		}
		if r.Conditions == nil {
			r.Conditions = []PushCondition{}
		}
	case kindContent:
		r.Conditions = nil
		if r.Pattern == nil || *r.Pattern == "" {
			return httputil.BadJSON("content rules need a pattern")
		}
		if len(*r.Pattern) > maxPatternLength {
			return httputil.BadJSON("pattern is too long")
		}
	case kindRoom:
		r.Conditions, r.Pattern = nil, nil
		if !strings.HasPrefix(ruleID, "!") {
			return httputil.InvalidParam("room rule IDs are room IDs")
		}
	case kindSender:
		r.Conditions, r.Pattern = nil, nil
		if !strings.HasPrefix(ruleID, "@") {
			return httputil.InvalidParam("sender rule IDs are user IDs")
		}
	}
	return nil
}

// validateActions accepts notify and set_tweak; the historical dont_notify
// and coalesce are accepted and dropped, as the spec requires.
func validateActions(actions []PushAction) error {
	for _, a := range actions {
		switch {
		case a.Tweak != "":
			if a.Tweak == "highlight" && a.Value != nil && string(a.Value) != "true" && string(a.Value) != "false" {
				return httputil.BadJSON("the highlight tweak's value must be a boolean")
			}
		case a.Name == "notify", a.Name == "dont_notify", a.Name == "coalesce":
		default:
			return httputil.BadJSON("unrecognised action %q", a.Name)
		}
	}
	return nil
}

func cleanActions(actions []PushAction) []PushAction {
	out := make([]PushAction, 0, len(actions))
	for _, a := range actions {
		if a.Name == "dont_notify" || a.Name == "coalesce" {
			continue
		}
		out = append(out, a)
	}
	return out
}

// validateCondition checks the parameters of known condition kinds;
// unknown kinds are kept (they never match, per spec).
func validateCondition(c *PushCondition) error {
	switch c.Kind {
	case "event_match":
		if c.Key == "" || c.Pattern == nil {
			return httputil.BadJSON("event_match needs key and pattern")
		}
		if len(*c.Pattern) > maxPatternLength {
			return httputil.BadJSON("pattern is too long")
		}
	case "event_property_is", "event_property_contains":
		if c.Key == "" || c.Value == nil {
			return httputil.BadJSON("%s needs key and value", c.Kind)
		}
		if _, ok := scalarValue(c.Value); !ok {
			return httputil.BadJSON("%s value must be a string, integer, boolean or null", c.Kind)
		}
	case "room_member_count":
		if _, _, ok := parseMemberCount(c.Is); !ok {
			return httputil.BadJSON("room_member_count 'is' must be an integer with an optional ==, <, >, <= or >= prefix")
		}
	case "sender_notification_permission":
		if c.Key == "" {
			return httputil.BadJSON("sender_notification_permission needs a key")
		}
	case "contains_display_name":
	case "":
		return httputil.BadJSON("condition without a kind")
	}
	return nil
}

// scalarValue decodes a non-compound canonical JSON value: string, integer
// in the safe range, boolean or null (spec §"event_property_is").
func scalarValue(raw json.RawMessage) (any, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, false
	}
	return normaliseScalar(v)
}

const maxSafeInt = 1<<53 - 1

func normaliseScalar(v any) (any, bool) {
	switch x := v.(type) {
	case nil, string, bool:
		return x, true
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil || n > maxSafeInt || n < -maxSafeInt {
			return nil, false
		}
		return n, true
	}
	return nil, false
}

func parseMemberCount(is string) (op string, n int64, ok bool) {
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if rest, found := strings.CutPrefix(is, p); found {
			op, is = p, rest
			break
		}
	}
	if op == "" {
		op = "=="
	}
	n, err := strconv.ParseInt(is, 10, 64)
	return op, n, err == nil && is != "" && is[0] != '+' && is[0] != '-'
}

// --- Evaluation -----------------------------------------------------------

// flatEvent is an event flattened once into its dot-separated property paths
// (spec appendix §"Dot-separated property paths"), so that evaluating many
// users' rules costs map lookups, not JSON parsing.
type flatEvent struct {
	props map[string]any // scalar values and []any of scalars
	lower map[string]string
	// body is content.body lowercased ("" if absent).
	body        string
	hasMentions bool
	sender      string
	roomID      string
	typ         string
}

// maxFlattenDepth bounds how deep flattening recurses into content.
const maxFlattenDepth = 8

func flattenEvent(eventJSON []byte) (*flatEvent, error) {
	d := json.NewDecoder(bytes.NewReader(eventJSON))
	d.UseNumber()
	var top map[string]any
	if err := d.Decode(&top); err != nil {
		return nil, err
	}
	fe := &flatEvent{props: map[string]any{}, lower: map[string]string{}}
	for _, k := range []string{"type", "sender", "room_id", "state_key", "event_id"} {
		if v, ok := top[k]; ok {
			fe.add(k, v, 0)
		}
	}
	if c, ok := top["content"].(map[string]any); ok {
		fe.add("content", c, 0)
		_, fe.hasMentions = c["m.mentions"]
	}
	fe.body = fe.lower["content.body"]
	fe.sender, _ = fe.props["sender"].(string)
	fe.roomID, _ = fe.props["room_id"].(string)
	fe.typ, _ = fe.props["type"].(string)
	return fe, nil
}

var pathEscaper = strings.NewReplacer(`\`, `\\`, `.`, `\.`)

func (fe *flatEvent) add(path string, v any, depth int) {
	switch x := v.(type) {
	case map[string]any:
		if depth >= maxFlattenDepth {
			return
		}
		for k, sub := range x {
			fe.add(path+"."+pathEscaper.Replace(k), sub, depth+1)
		}
	case []any:
		arr := make([]any, 0, len(x))
		for _, e := range x {
			if s, ok := normaliseScalar(e); ok {
				arr = append(arr, s)
			}
		}
		fe.props[path] = arr
	default:
		s, ok := normaliseScalar(x)
		if !ok {
			return
		}
		fe.props[path] = s
		if str, isStr := s.(string); isStr {
			fe.lower[path] = strings.ToLower(str)
		}
	}
}

// evalRoom is what one event's evaluation knows about its room, the same
// for every user.
type evalRoom struct {
	memberCount int64
	// senderPower is the sender's power level; notifLevels the levels of
	// the power levels' notifications object (default room: 50).
	senderPower int64
	notifLevels map[string]int64
}

// pushOutcome is what a matched rule asks for.
type pushOutcome struct {
	notify    bool
	highlight bool
	// actions as JSON, for /notifications and the push gateway.
	actions json.RawMessage
	tweaks  map[string]json.RawMessage
}

// compiledRule is one enabled rule ready to evaluate.
type compiledRule struct {
	id        string
	legacy    bool // applies only to events without m.mentions
	conds     []compiledCond
	outcome   *pushOutcome
	roomID    string // room rules
	senderID  string // sender rules
	bodyMatch *bodyMatcher
}

type compiledCond struct {
	kind  string
	key   string
	glob  *globMatcher // event_match
	body  *bodyMatcher // event_match on content.body
	value any          // event_property_is / _contains
	op    string       // room_member_count
	count int64
}

// compiledRules is a user's whole ruleset, in evaluation order.
type compiledRules struct {
	userID string
	rules  []compiledRule
}

func outcomeOf(actions []PushAction) *pushOutcome {
	o := &pushOutcome{tweaks: map[string]json.RawMessage{}}
	for _, a := range actions {
		if a.Name == "notify" {
			o.notify = true
		}
		if a.Tweak != "" {
			v := a.Value
			if a.Tweak == "highlight" {
				o.highlight = v == nil || string(v) == "true"
				if v == nil {
					v = json.RawMessage("true")
				}
			}
			o.tweaks[a.Tweak] = v
		}
	}
	o.actions, _ = json.Marshal(cleanActions(actions))
	return o
}

// compileRules prepares a merged ruleset for evaluation: disabled rules are
// dropped and patterns compiled once.
func compileRules(userID string, rs PushRuleset) *compiledRules {
	cr := &compiledRules{userID: userID}
	for _, kind := range ruleKinds {
		for _, r := range *rs.kind(kind) {
			if !r.Enabled {
				continue
			}
			c := compiledRule{id: r.RuleID, legacy: r.Default && legacyMentionRules[r.RuleID], outcome: outcomeOf(r.Actions)}
			ok := true
			switch kind {
			case kindOverride, kindUnderride:
				for _, pc := range r.Conditions {
					cc, valid := compileCondition(pc)
					if !valid {
						ok = false // an unrecognised condition never matches
						break
					}
					c.conds = append(c.conds, cc)
				}
			case kindContent:
				if r.Pattern == nil {
					ok = false
				} else {
					c.bodyMatch = newBodyMatcher(*r.Pattern)
				}
			case kindRoom:
				c.roomID = r.RuleID
			case kindSender:
				c.senderID = r.RuleID
			}
			if ok {
				cr.rules = append(cr.rules, c)
			}
		}
	}
	return cr
}

func compileCondition(pc PushCondition) (compiledCond, bool) {
	cc := compiledCond{kind: pc.Kind, key: pc.Key}
	switch pc.Kind {
	case "event_match":
		if pc.Pattern == nil {
			return cc, false
		}
		if pc.Key == "content.body" {
			cc.body = newBodyMatcher(*pc.Pattern)
		} else {
			cc.glob = newGlobMatcher(*pc.Pattern)
		}
	case "event_property_is", "event_property_contains":
		v, ok := scalarValue(pc.Value)
		if !ok {
			return cc, false
		}
		cc.value = v
	case "room_member_count":
		op, n, ok := parseMemberCount(pc.Is)
		if !ok {
			return cc, false
		}
		cc.op, cc.count = op, n
	case "sender_notification_permission", "contains_display_name":
	default:
		return cc, false
	}
	return cc, true
}

// evaluate returns the outcome of the first matching rule for the user,
// or nil when no rule matches. displayName is the user's display name in
// the room, lowercased.
func (cr *compiledRules) evaluate(ev *flatEvent, room *evalRoom, displayName string) *pushOutcome {
	for i := range cr.rules {
		r := &cr.rules[i]
		if r.legacy && ev.hasMentions {
			continue
		}
		switch {
		case r.roomID != "":
			if ev.roomID != r.roomID {
				continue
			}
		case r.senderID != "":
			if ev.sender != r.senderID {
				continue
			}
		case r.bodyMatch != nil:
			if ev.body == "" || !r.bodyMatch.match(ev.body) {
				continue
			}
		default:
			if !r.matches(ev, room, displayName) {
				continue
			}
		}
		return r.outcome
	}
	return nil
}

func (r *compiledRule) matches(ev *flatEvent, room *evalRoom, displayName string) bool {
	for i := range r.conds {
		c := &r.conds[i]
		switch c.kind {
		case "event_match":
			v, ok := ev.lower[c.key]
			if !ok {
				return false
			}
			if c.body != nil {
				if !c.body.match(v) {
					return false
				}
			} else if !c.glob.match(v) {
				return false
			}
		case "event_property_is":
			v, ok := ev.props[c.key]
			if !ok {
				return false
			}
			if _, isArr := v.([]any); isArr || v != c.value {
				return false
			}
		case "event_property_contains":
			arr, ok := ev.props[c.key].([]any)
			if !ok {
				return false
			}
			found := false
			for _, e := range arr {
				if e == c.value {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		case "contains_display_name":
			if displayName == "" || ev.body == "" || !containsWord(ev.body, displayName) {
				return false
			}
		case "room_member_count":
			if !compareCount(room.memberCount, c.op, c.count) {
				return false
			}
		case "sender_notification_permission":
			need, ok := room.notifLevels[c.key]
			if !ok {
				need = 50
			}
			if room.senderPower < need {
				return false
			}
		}
	}
	return true
}

func compareCount(have int64, op string, want int64) bool {
	switch op {
	case "<":
		return have < want
	case ">":
		return have > want
	case "<=":
		return have <= want
	case ">=":
		return have >= want
	}
	return have == want
}

// globMatcher matches a whole (lowercased) value against a glob pattern:
// '*' any run of characters, '?' exactly one (spec appendix §"Glob-style
// matching"). Patterns without wildcards compare directly.
type globMatcher struct {
	literal string
	re      *regexp.Regexp
}

func globToRegexp(pattern string) string {
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	return b.String()
}

func newGlobMatcher(pattern string) *globMatcher {
	p := strings.ToLower(pattern)
	if !strings.ContainsAny(p, "*?") {
		return &globMatcher{literal: p}
	}
	return &globMatcher{re: regexp.MustCompile(`^(?s:` + globToRegexp(p) + `)$`)}
}

func (g *globMatcher) match(v string) bool {
	if g.re == nil {
		return v == g.literal
	}
	return g.re.MatchString(v)
}

// bodyMatcher matches a glob against any substring of content.body that
// starts and ends at a word boundary: the start or end of the value, or a
// character outside [A-Za-z0-9_] (spec §"Conditions", event_match).
type bodyMatcher struct {
	literal string
	re      *regexp.Regexp
}

func newBodyMatcher(pattern string) *bodyMatcher {
	p := strings.ToLower(pattern)
	if !strings.ContainsAny(p, "*?") {
		return &bodyMatcher{literal: p}
	}
	return &bodyMatcher{re: regexp.MustCompile(`(?:^|[^a-z0-9_])(?s:` + globToRegexp(p) + `)(?:[^a-z0-9_]|$)`)}
}

func (m *bodyMatcher) match(body string) bool {
	if m.re == nil {
		return containsWord(body, m.literal)
	}
	return m.re.MatchString(body)
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// containsWord reports whether word occurs in s bounded by non-word
// characters or the ends of s. Both are already lowercased.
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for from := 0; ; {
		i := strings.Index(s[from:], word)
		if i < 0 {
			return false
		}
		start, end := from+i, from+i+len(word)
		if (start == 0 || !isWordByte(s[start-1])) && (end == len(s) || !isWordByte(s[end])) {
			return true
		}
		from = start + 1
	}
}
