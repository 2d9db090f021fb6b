package api

import "testing"

func TestDirectoryTokens(t *testing.T) {
	for _, n := range []int{0, 1, 42, maxDirectoryOffset} {
		got, err := parseDirectoryToken(directoryToken(n))
		if err != nil || got != n {
			t.Fatalf("round trip of %d: %d, %v", n, got, err)
		}
	}
	if n, err := parseDirectoryToken(""); err != nil || n != 0 {
		t.Fatalf("no token: %d, %v", n, err)
	}
	for _, bad := range []string{"x", "d", "d-1", "d+1", "d01", "d1.5", "d99999999999999999999", "1", "d1000001"} {
		if _, err := parseDirectoryToken(bad); err == nil {
			t.Errorf("token %q accepted", bad)
		}
	}
}
