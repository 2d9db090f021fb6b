package clientapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

func TestHierarchyTokens(t *testing.T) {
	tok := &hierarchyToken{Root: "!a:b", MaxDepth: 3, SuggestedOnly: true, Steps: 7}
	got, err := parseHierarchyToken(tok.encode())
	if err != nil || *got != *tok {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{"!!", "bm90IGpzb24", (&hierarchyToken{Steps: -1}).encode(), (&hierarchyToken{Steps: maxHierarchySkip + 1}).encode()} {
		if _, err := parseHierarchyToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
}

func TestValidChildOrder(t *testing.T) {
	for o, want := range map[string]bool{
		"":                      true,
		" ":                     true,
		"~":                     true,
		"abc":                   true,
		strings.Repeat("a", 50): true,
		strings.Repeat("a", 51): false,
		"tab\t":                 false,
		"é":                     false,
		"\x7f":                  false,
	} {
		if validChildOrder(o) != want {
			t.Errorf("validChildOrder(%q) = %v", o, !want)
		}
	}
}

func TestUpgradePowerLevels(t *testing.T) {
	levels := func(content string) *roomPower {
		var pl gomatrixserverlib.PowerLevelContent
		pl.Defaults()
		if err := json.Unmarshal([]byte(content), &pl); err != nil {
			t.Fatal(err)
		}
		return &roomPower{levels: pl, joined: true}
	}
	decode := func(raw json.RawMessage) map[string]any {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	// An upgrader at 100 needs nothing raised: one power levels event.
	p := levels(`{"users": {"@a:x": 100}, "events": {"m.room.power_levels": 100}}`)
	p.level = 100
	final, initial := upgradePowerLevels(p, "@a:x", []string{"m.room.power_levels", "m.room.name"})
	if final != nil || decode(initial)["users"].(map[string]any)["@a:x"] != float64(100) {
		t.Fatalf("final %s, initial %s", final, initial)
	}

	// An upgrader at 60 is raised to the highest level needed, then put back.
	p = levels(`{"users": {"@a:x": 100, "@m:x": 60}, "events": {"m.room.power_levels": 100, "m.room.name": 90}}`)
	p.level = 60
	final, initial = upgradePowerLevels(p, "@m:x", []string{"m.room.power_levels", "m.room.name"})
	if got := decode(initial)["users"].(map[string]any)["@m:x"]; got != float64(100) {
		t.Fatalf("raised to %v, want 100", got)
	}
	if got := decode(final)["users"].(map[string]any)["@m:x"]; got != float64(60) {
		t.Fatalf("put back to %v, want 60", got)
	}
	if p.levels.Users["@m:x"] != 60 {
		t.Fatal("the old room's levels were modified")
	}
	// Every level is written as an integer (room versions 10 and later).
	for _, k := range []string{"ban", "invite", "kick", "redact", "users_default", "events_default", "state_default"} {
		if _, ok := decode(final)[k].(float64); !ok {
			t.Errorf("%s = %v", k, decode(final)[k])
		}
	}
}
