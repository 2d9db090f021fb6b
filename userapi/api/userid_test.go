package api

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateNewLocalpart(t *testing.T) {
	for _, lp := range []string{"alice", "a.b_c=d-e/f+g", "0", strings.Repeat("a", 255-len("@:example.org"))} {
		if err := ValidateNewLocalpart(lp, "example.org"); err != nil {
			t.Errorf("%q: %v", lp, err)
		}
	}
	for _, lp := range []string{"", "Alice", "a b", "a:b", "a@b", "é", "a!", "a\x00", strings.Repeat("a", 256-len("@:example.org"))} {
		if err := ValidateNewLocalpart(lp, "example.org"); !errors.Is(err, ErrInvalidUsername) {
			t.Errorf("%q: got %v, want ErrInvalidUsername", lp, err)
		}
	}
}

func TestParseUserID(t *testing.T) {
	for id, want := range map[string][2]string{
		"@alice:example.org":      {"alice", "example.org"},
		"@Alice!#:example.org:80": {"Alice!#", "example.org:80"},
		"@a:[::1]:8448":           {"a", "[::1]:8448"},
	} {
		lp, server, err := ParseUserID(id)
		if err != nil || lp != want[0] || server != want[1] {
			t.Errorf("ParseUserID(%q) = %q, %q, %v", id, lp, server, err)
		}
	}
	for _, id := range []string{"", "alice", "@alice", "@:example.org", "@a b:example.org", "@é:example.org", "@a:exa mple.org", "@a:" + strings.Repeat("b", 255)} {
		if _, _, err := ParseUserID(id); !errors.Is(err, ErrInvalidUsername) {
			t.Errorf("ParseUserID(%q): got %v, want ErrInvalidUsername", id, err)
		}
	}
	if _, err := LocalUserID("@a:other.org", "example.org"); !errors.Is(err, ErrNotLocal) {
		t.Errorf("LocalUserID of a remote user: %v", err)
	}
}
