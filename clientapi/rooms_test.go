package clientapi

import "testing"

func TestParseAlias(t *testing.T) {
	cases := map[string]string{
		"#room:example.org":                    "example.org",
		"#room:localhost:8448":                 "localhost:8448",
		"#ünïcode:example.org":                 "example.org",
		"#a:[::1]:8448":                        "[::1]:8448",
		"room:example.org":                     "",
		"#:example.org":                        "",
		"#room":                                "",
		"#ro om:example.org":                   "",
		"#ro\x00om:example.org":                "",
		"#room:exa mple.org":                   "",
		"#room:":                               "",
		"#" + string(make([]byte, 300)) + ":x": "",
	}
	for alias, want := range cases {
		got, err := parseAlias(alias)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("parseAlias(%q) = %q, %v; want %q", alias, got, err, want)
		}
	}
}

func TestMemberFilter(t *testing.T) {
	cases := []struct {
		m, want, notWant string
		ok               bool
	}{
		{"join", "", "", true},
		{"join", "join", "", true},
		{"leave", "join", "", false},
		{"leave", "", "leave", false},
		{"invite", "", "leave", true},
		// Both given: membership is want OR is not notWant (spec GET /members).
		{"join", "join", "join", true},
		{"ban", "join", "leave", true},
		{"leave", "join", "leave", false},
	}
	for _, c := range cases {
		if got := memberFilter(c.m, c.want, c.notWant); got != c.ok {
			t.Errorf("memberFilter(%q, %q, %q) = %v", c.m, c.want, c.notWant, got)
		}
	}
}
