package mediaapi

import (
	"mime"
	"strings"
	"testing"
)

func TestParseMXC(t *testing.T) {
	for _, c := range []struct {
		uri          string
		server, id   string
		wantAccepted bool
	}{
		{"mxc://example.org/abcDEF123_-", "example.org", "abcDEF123_-", true},
		{"mxc://[::1]:8448/x", "[::1]:8448", "x", true},
		{"mxc://1.2.3.4/x", "1.2.3.4", "x", true},
		{"mxc://example.org/", "", "", false},
		{"mxc://example.org", "", "", false},
		{"mxc:///abc", "", "", false},
		{"mxc://example.org/../../etc/passwd", "", "", false},
		{"mxc://example.org/a/b", "", "", false},
		{"mxc://example.org/a%2Fb", "", "", false},
		{"mxc://example.org/a.b", "", "", false},
		{"mxc://exa mple.org/a", "", "", false},
		{"mxc://example.org:99999999/a", "", "", false},
		{"mxc://127.0.0.1/../../some_service/etc/passwd", "", "", false},
		{"https://example.org/a", "", "", false},
		{"mxc://example.org/" + strings.Repeat("a", 256), "", "", false},
	} {
		server, id, err := ParseMXC(c.uri)
		if (err == nil) != c.wantAccepted || server != c.server || id != c.id {
			t.Errorf("ParseMXC(%q) = %q, %q, %v", c.uri, server, id, err)
		}
	}
	id := newMediaID()
	if !ValidMediaID(id) || len(id) != 32 || newMediaID() == id {
		t.Errorf("newMediaID gave %q", id)
	}
}

// FuzzParseMXC checks that whatever the parser accepts is safe to use as a
// path component and round-trips.
func FuzzParseMXC(f *testing.F) {
	for _, s := range []string{"mxc://example.org/abc", "mxc://[::1]:80/a_b-c", "mxc://a/../b", "mxc://a/%2e%2e", "mxc://a:1/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		server, id, err := ParseMXC(uri)
		if err != nil {
			return
		}
		if strings.ContainsAny(id, "./\\%\x00") || id == "" || len(id) > maxMediaIDLength {
			t.Fatalf("unsafe media ID %q accepted from %q", id, uri)
		}
		if strings.ContainsAny(server, "/\\%\x00 ") || server == "" {
			t.Fatalf("unsafe server name %q accepted from %q", server, uri)
		}
		if mxcURI(server, id) != uri {
			t.Fatalf("%q does not round-trip", uri)
		}
	})
}

func TestContentDisposition(t *testing.T) {
	for _, c := range []struct {
		inline bool
		name   string
		want   string
	}{
		{true, "", "inline"},
		{false, "", "attachment"},
		{true, "cat.png", `inline; filename="cat.png"`},
		{false, `a"b\c.txt`, `attachment; filename="a_b_c.txt"; filename*=UTF-8''a%22b%5Cc.txt`},
		{false, "naïve 100%.pdf", `attachment; filename="na_ve 100_.pdf"; filename*=UTF-8''na%C3%AFve%20100%25.pdf`},
		{true, "日本.jpg", `inline; filename="__.jpg"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.jpg`},
	} {
		got := contentDisposition(c.inline, c.name)
		if got != c.want {
			t.Errorf("contentDisposition(%v, %q) = %q, want %q", c.inline, c.name, got, c.want)
			continue
		}
		// What we send parses back to the same name.
		if c.name != "" {
			_, params, err := mime.ParseMediaType(got)
			if err != nil || params["filename"] != c.name && !strings.Contains(got, "filename*") {
				t.Errorf("%q does not parse back: %v %v", got, params, err)
			}
			if strings.Contains(got, "filename*") && params["filename"] != c.name {
				t.Errorf("%q parses to %q", got, params["filename"])
			}
		}
	}
	for _, bad := range []string{"a\nb", "a\x00", strings.Repeat("x", 256), "\xff\xfe", "a\u0085b"} {
		if validFilename(bad) {
			t.Errorf("validFilename(%q) accepted", bad)
		}
	}
}
