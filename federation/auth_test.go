package federation

import (
	"strings"
	"testing"
)

func TestParseXMatrix(t *testing.T) {
	good := []struct {
		header string
		want   XMatrix
	}{
		{`X-Matrix origin="a.example",destination="b.example",key="ed25519:k1",sig="c2ln"`,
			XMatrix{Origin: "a.example", Destination: "b.example", KeyID: "ed25519:k1", Signature: "c2ln"}},
		// Case-insensitive names and scheme, any order, spaces, no destination.
		{`x-matrix   SIG="c2ln" , Key="ed25519:k1",ORIGIN="a.example"`,
			XMatrix{Origin: "a.example", KeyID: "ed25519:k1", Signature: "c2ln"}},
		// Unquoted values, colons allowed for older servers; unknown params ignored.
		{`X-Matrix origin=a.example:8448,key=ed25519:k1,sig=c2ln,extra="x,y"`,
			XMatrix{Origin: "a.example:8448", KeyID: "ed25519:k1", Signature: "c2ln"}},
		// Backslash escapes in quoted values are undone.
		{`X-Matrix origin="a\.example",key="ed25519:k1",sig="c2\"ln"`,
			XMatrix{Origin: "a.example", KeyID: "ed25519:k1", Signature: `c2"ln`}},
	}
	for _, c := range good {
		got, err := ParseXMatrix(c.header)
		if err != nil || got != c.want {
			t.Errorf("ParseXMatrix(%s) = %+v, %v; want %+v", c.header, got, err, c.want)
		}
	}
	bad := []string{
		``,
		`Bearer abc`,
		`X-Matrix`,
		`X-Matrix origin="a.example",key="ed25519:k1"`,
		`X-Matrix origin="a.example",key="ed25519:k1",sig="unterminated`,
		`X-Matrix origin="a.example" key="ed25519:k1",sig="s"`,
		`X-Matrix origin="a.example",origin="b.example",key="ed25519:k1",sig="s"`,
		`X-Matrix origin="a.example",,key="ed25519:k1",sig="s"`,
		`X-Matrix =x,origin="a.example",key="ed25519:k1",sig="s"`,
		`X-Matrix origin=,key="ed25519:k1",sig="s"`,
		`X-Matrix origin="a.example",key="ed25519:k1",sig=`,
	}
	for _, h := range bad {
		if x, err := ParseXMatrix(h); err == nil {
			t.Errorf("ParseXMatrix(%q) = %+v, want an error", h, x)
		}
	}
}

func FuzzParseXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="a.example",destination="b.example",key="ed25519:k1",sig="c2ln"`)
	f.Add(`X-Matrix origin=a:1,key=ed25519:x,sig=y`)
	f.Add(`X-Matrix origin="a\\",key="k",sig="\"`)
	f.Fuzz(func(t *testing.T, header string) {
		x, err := ParseXMatrix(header)
		if err != nil {
			return
		}
		if x.Origin == "" || x.KeyID == "" || x.Signature == "" {
			t.Fatalf("accepted %q without a required parameter: %+v", header, x)
		}
		if !strings.HasPrefix(strings.ToLower(header), "x-matrix ") {
			t.Fatalf("accepted %q without the X-Matrix scheme", header)
		}
	})
}
