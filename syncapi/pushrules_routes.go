package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/parley-chat/parley/internal/httputil"
	"github.com/parley-chat/parley/syncapi/storage"
)

// Handlers of client-server spec §"Push Rules: API".

// loadUserRules reads a user's stored customisations and their version.
func (s *Service) loadUserRules(ctx context.Context, userID string) (*userPushRules, int64, error) {
	raw, version, err := s.db.PushRules(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	ur := &userPushRules{}
	if raw != nil {
		if err := json.Unmarshal(raw, ur); err != nil {
			return nil, 0, err
		}
	}
	return ur, version, nil
}

// pushRulesContent is the m.push_rules account data content.
func pushRulesContent(rs PushRuleset) []byte {
	b, _ := json.Marshal(map[string]PushRuleset{"global": rs})
	return b
}

// updateUserRules applies change to the user's rules and stores the
// result, retrying when another request changed them in between.
func (s *Service) updateUserRules(ctx context.Context, userID string, change func(ur *userPushRules) error) error {
	for attempt := 0; ; attempt++ {
		ur, version, err := s.loadUserRules(ctx, userID)
		if err != nil {
			return err
		}
		if err := change(ur); err != nil {
			return err
		}
		raw, _ := json.Marshal(ur)
		err = s.db.PutPushRules(ctx, userID, version, raw, pushRulesContent(ur.merged(userID)))
		if errors.Is(err, storage.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			return err
		}
		s.push.invalidateRules(userID)
		s.notifier.WakeUsers(userID)
		return nil
	}
}

// ruleTarget is the {scope}/{kind}/{ruleId} of a rule route.
type ruleTarget struct {
	userID, kind, ruleID string
}

func parseRuleTarget(r *http.Request) (ruleTarget, error) {
	caller := httputil.CallerFrom(r.Context())
	t := ruleTarget{userID: caller.UserID, kind: pathParam(r, "kind"), ruleID: pathParam(r, "ruleId")}
	if scope := pathParam(r, "scope"); scope != "global" {
		return t, httputil.InvalidParam("Unknown push rule scope %q: only 'global' is supported", scope)
	}
	if !validKind(t.kind) {
		return t, httputil.InvalidParam("Unknown push rule kind %q", t.kind)
	}
	if t.ruleID == "" || len(t.ruleID) > 255 {
		return t, httputil.InvalidParam("Bad rule ID")
	}
	return t, nil
}

// findRule returns the rule of the merged ruleset, or 404.
func findRule(rs *PushRuleset, kind, ruleID string) (*PushRule, error) {
	for i, r := range *rs.kind(kind) {
		if r.RuleID == ruleID {
			return &(*rs.kind(kind))[i], nil
		}
	}
	return nil, httputil.NotFound("The push rule was not found.")
}

// handleGetPushRules serves GET /pushrules/ and GET /pushrules/global/.
func (s *Service) handleGetPushRules(w http.ResponseWriter, r *http.Request) {
	caller := httputil.CallerFrom(r.Context())
	ur, _, err := s.loadUserRules(r.Context(), caller.UserID)
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	rs := ur.merged(caller.UserID)
	if strings.Contains(r.URL.Path, "/pushrules/global") {
		httputil.WriteJSON(w, http.StatusOK, rs)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, map[string]PushRuleset{"global": rs})
}

// handleGetPushRule serves GET /pushrules/{scope}/{kind}/{ruleId}.
func (s *Service) handleGetPushRule(w http.ResponseWriter, r *http.Request) {
	s.withRule(w, r, func(rule *PushRule) any { return rule })
}

// handleGetPushRuleEnabled serves GET .../{ruleId}/enabled.
func (s *Service) handleGetPushRuleEnabled(w http.ResponseWriter, r *http.Request) {
	s.withRule(w, r, func(rule *PushRule) any { return map[string]bool{"enabled": rule.Enabled} })
}

// handleGetPushRuleActions serves GET .../{ruleId}/actions.
func (s *Service) handleGetPushRuleActions(w http.ResponseWriter, r *http.Request) {
	s.withRule(w, r, func(rule *PushRule) any { return map[string][]PushAction{"actions": rule.Actions} })
}

func (s *Service) withRule(w http.ResponseWriter, r *http.Request, answer func(*PushRule) any) {
	err := func() error {
		t, err := parseRuleTarget(r)
		if err != nil {
			return err
		}
		ur, _, err := s.loadUserRules(r.Context(), t.userID)
		if err != nil {
			return err
		}
		rs := ur.merged(t.userID)
		rule, err := findRule(&rs, t.kind, t.ruleID)
		if err != nil {
			return err
		}
		httputil.WriteJSON(w, http.StatusOK, answer(rule))
		return nil
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
	}
}

// handlePutPushRule serves PUT /pushrules/{scope}/{kind}/{ruleId}: create
// or replace a user rule, placed by before/after.
func (s *Service) handlePutPushRule(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		t, err := parseRuleTarget(r)
		if err != nil {
			return err
		}
		// Spec: rule IDs starting with "." are reserved for server-default
		// rules; "/" and "\" are not allowed.
		if strings.HasPrefix(t.ruleID, ".") {
			return httputil.InvalidParam("Rule IDs starting with '.' are reserved for server-default rules")
		}
		if strings.ContainsAny(t.ruleID, `/\`) {
			return httputil.InvalidParam("Rule IDs may not contain '/' or '\\'")
		}
		var body struct {
			Actions    []PushAction    `json:"actions"`
			Conditions []PushCondition `json:"conditions"`
			Pattern    *string         `json:"pattern"`
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), &body); err != nil {
			return err
		}
		rule := PushRule{RuleID: t.ruleID, Enabled: true, Actions: body.Actions, Conditions: body.Conditions, Pattern: body.Pattern}
		if err := validateRule(t.kind, t.ruleID, &rule); err != nil {
			return err
		}
		rule.Actions = cleanActions(rule.Actions)
		q := r.URL.Query()
		before, after := q.Get("before"), q.Get("after")
		return s.updateUserRules(r.Context(), t.userID, func(ur *userPushRules) error {
			return placeRule(ur, t.kind, rule, before, after)
		})
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// placeRule inserts or replaces rule among the user's rules of kind. With
// before (which wins over after) it goes just ahead of that rule; with
// after just behind it; otherwise a replaced rule keeps its place and a
// new one becomes the most important user rule of its kind (spec
// §"PUT /pushrules/{scope}/{kind}/{ruleId}").
func placeRule(ur *userPushRules, kind string, rule PushRule, before, after string) error {
	list := ur.Rules.kind(kind)
	existing := -1
	for i, r := range *list {
		if r.RuleID == rule.RuleID {
			existing = i
		}
	}
	if existing >= 0 {
		rule.Enabled = (*list)[existing].Enabled
	}
	if before == "" && after == "" {
		if existing >= 0 {
			(*list)[existing] = rule
			return nil
		}
		if total(ur) >= maxUserRules {
			return httputil.NewError(http.StatusBadRequest, "M_RESOURCE_LIMIT_EXCEEDED", "At most %d push rules", maxUserRules)
		}
		*list = append([]PushRule{rule}, *list...)
		return nil
	}
	anchor, offset := before, 0
	if anchor == "" {
		anchor, offset = after, 1
	}
	if anchor == rule.RuleID {
		return httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "A rule cannot be placed relative to itself")
	}
	if existing >= 0 {
		*list = append((*list)[:existing], (*list)[existing+1:]...)
	} else if total(ur) >= maxUserRules {
		return httputil.NewError(http.StatusBadRequest, "M_RESOURCE_LIMIT_EXCEEDED", "At most %d push rules", maxUserRules)
	}
	at := -1
	for i, r := range *list {
		if r.RuleID == anchor {
			at = i
		}
	}
	if at < 0 {
		// Spec example error; server-default rules are never anchors.
		return httputil.NewError(http.StatusBadRequest, "M_UNKNOWN", "before/after rule not found: %s", anchor)
	}
	at += offset
	*list = append((*list)[:at], append([]PushRule{rule}, (*list)[at:]...)...)
	return nil
}

func total(ur *userPushRules) int {
	n := 0
	for _, k := range ruleKinds {
		n += len(*ur.Rules.kind(k))
	}
	return n
}

// handleDeletePushRule serves DELETE /pushrules/{scope}/{kind}/{ruleId}.
// Server-default rules cannot be deleted, only disabled.
func (s *Service) handleDeletePushRule(w http.ResponseWriter, r *http.Request) {
	err := func() error {
		t, err := parseRuleTarget(r)
		if err != nil {
			return err
		}
		if strings.HasPrefix(t.ruleID, ".") {
			rs := defaultRules(t.userID)
			if _, err := findRule(&rs, t.kind, t.ruleID); err != nil {
				return err
			}
			return httputil.InvalidParam("Server-default rules cannot be deleted; disable them instead")
		}
		return s.updateUserRules(r.Context(), t.userID, func(ur *userPushRules) error {
			list := ur.Rules.kind(t.kind)
			for i, rule := range *list {
				if rule.RuleID == t.ruleID {
					*list = append((*list)[:i], (*list)[i+1:]...)
					return nil
				}
			}
			return httputil.NotFound("The push rule was not found.")
		})
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}

// handlePutPushRuleEnabled serves PUT .../{ruleId}/enabled.
func (s *Service) handlePutPushRuleEnabled(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	s.modifyRule(w, r, &body, func() error {
		if body.Enabled == nil {
			return httputil.BadJSON("enabled is required")
		}
		return nil
	}, func(rule *PushRule, o *defaultOverride) {
		if o != nil {
			o.Enabled = body.Enabled
		} else {
			rule.Enabled = *body.Enabled
		}
	})
}

// handlePutPushRuleActions serves PUT .../{ruleId}/actions; it may change
// server-default rules too.
func (s *Service) handlePutPushRuleActions(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Actions []PushAction `json:"actions"`
	}
	s.modifyRule(w, r, &body, func() error {
		if body.Actions == nil {
			return httputil.BadJSON("actions is required")
		}
		if err := validateActions(body.Actions); err != nil {
			return err
		}
		body.Actions = cleanActions(body.Actions)
		return nil
	}, func(rule *PushRule, o *defaultOverride) {
		if o != nil {
			o.Actions = &body.Actions
		} else {
			rule.Actions = body.Actions
		}
	})
}

// modifyRule decodes body, checks it, and applies set to a user rule (o ==
// nil) or to the override of a server-default rule.
func (s *Service) modifyRule(w http.ResponseWriter, r *http.Request, body any, check func() error, set func(rule *PushRule, o *defaultOverride)) {
	err := func() error {
		t, err := parseRuleTarget(r)
		if err != nil {
			return err
		}
		if err := httputil.DecodeJSON(r, s.maxBody(), body); err != nil {
			return err
		}
		if err := check(); err != nil {
			return err
		}
		return s.updateUserRules(r.Context(), t.userID, func(ur *userPushRules) error {
			if strings.HasPrefix(t.ruleID, ".") {
				def := defaultRules(t.userID)
				if _, err := findRule(&def, t.kind, t.ruleID); err != nil {
					return err
				}
				if ur.Defaults == nil {
					ur.Defaults = map[string]defaultOverride{}
				}
				o := ur.Defaults[t.ruleID]
				set(nil, &o)
				ur.Defaults[t.ruleID] = o
				return nil
			}
			rule, err := findRule(&ur.Rules, t.kind, t.ruleID)
			if err != nil {
				return err
			}
			set(rule, nil)
			return nil
		})
	}()
	if err != nil {
		httputil.WriteError(w, r, err)
		return
	}
	httputil.WriteJSON(w, http.StatusOK, struct{}{})
}
