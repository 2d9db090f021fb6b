package federation

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

func TestServerACL(t *testing.T) {
	no := false
	cases := []struct {
		name   string
		acl    serverACL
		server spec.ServerName
		want   bool
	}{
		{"empty allows nothing", serverACL{}, "example.org", false},
		{"star", serverACL{Allow: []string{"*"}}, "example.org", true},
		{"port is ignored", serverACL{Allow: []string{"example.org"}}, "example.org:8448", true},
		{"deny wins", serverACL{Allow: []string{"*"}, Deny: []string{"*.evil.com"}}, "a.evil.com", false},
		{"deny glob does not over-match", serverACL{Allow: []string{"*"}, Deny: []string{"*.evil.com"}}, "evil.com", true},
		{"question mark", serverACL{Allow: []string{"matrix?.org"}}, "matrix1.org", true},
		{"question mark is one character", serverACL{Allow: []string{"matrix?.org"}}, "matrix12.org", false},
		{"case-insensitive", serverACL{Allow: []string{"EXAMPLE.org"}}, "example.ORG", true},
		{"IP literals allowed by default", serverACL{Allow: []string{"*"}}, "127.0.0.1:8448", true},
		{"IP literal refused", serverACL{Allow: []string{"*"}, AllowIPLiterals: &no}, "127.0.0.1:8448", false},
		{"IPv6 literal refused", serverACL{Allow: []string{"*"}, AllowIPLiterals: &no}, "[::1]:8448", false},
		{"several stars", serverACL{Allow: []string{"*a*b*"}}, "xxaxxbxx", true},
		{"several stars, no match", serverACL{Allow: []string{"*a*b*"}}, "xxbxxaxx", false},
		{"invalid name", serverACL{Allow: []string{"*"}}, "bad name", false},
	}
	for _, c := range cases {
		if got := c.acl.allows(c.server); got != c.want {
			t.Errorf("%s: allows(%q) = %v, want %v", c.name, c.server, got, c.want)
		}
	}
}
