package main

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parseFile(t *testing.T, name string) *Summary {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Parse(f, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testdata/mixed.json is real `go test -json -timeout 2s` output of three
// packages: a with passing, skipped, failing and nested failing subtests; b
// with a test killed by the timeout; c that does not compile.
func TestSummaryOfMixedRun(t *testing.T) {
	s := parseFile(t, "mixed.json")
	text := s.Format("Sample run")

	got := map[string][7]any{}
	for _, p := range s.Packages {
		got[p.Name] = [7]any{p.Status, p.Passed, p.Failed, p.Skipped, p.TopPassed, p.TopFailed, p.TopSkipped}
	}
	want := map[string][7]any{
		// TestPass, TestParent/ok pass; TestParent, /bad, /nested, /nested/deeper, TestFlat fail; TestSkip skips.
		"example.com/sample/a": {"FAIL", 2, 5, 1, 1, 2, 1},
		// TestHang never finished: counted as failed.
		"example.com/sample/b": {"FAIL", 1, 1, 0, 1, 1, 0},
		"example.com/sample/c": {"build failed", 0, 0, 0, 0, 0, 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("packages = %v\nwant %v", got, want)
	}
	if p, f, sk := s.Totals(); p != 3 || f != 6 || sk != 1 {
		t.Errorf("totals = %d/%d/%d, want 3/6/1", p, f, sk)
	}

	// Only the leaves of the failure tree are listed, and the hung test is
	// marked as such.
	for _, line := range []string{
		"example.com/sample/a TestFlat\n",
		"example.com/sample/a TestParent/bad\n",
		"example.com/sample/a TestParent/nested/deeper\n",
		"example.com/sample/b TestHang (did not finish)\n",
		"c/c_test.go:3:33: undefined: undefinedThing",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("summary lacks %q:\n%s", line, text)
		}
	}
	for _, parent := range []string{"a TestParent\n", "a TestParent/nested\n"} {
		if strings.Contains(text, parent) {
			t.Errorf("summary lists parent %q whose failure is only its subtest's:\n%s", parent, text)
		}
	}
	if !strings.HasPrefix(text, "Sample run\n") {
		t.Errorf("summary does not start with its title:\n%s", text)
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if last := lines[len(lines)-1]; last != "total: 3 passed, 6 failed, 1 skipped" {
		t.Errorf("last line = %q", last)
	}

	reasons := strings.Join(s.Check([]string{"TestPass", "TestQuick", "TestMissing"}), "; ")
	for _, want := range []string{"6 tests failed", "example.com/sample/c: build failed", "TestMissing did not run and pass"} {
		if !strings.Contains(reasons, want) {
			t.Errorf("Check reasons %q lack %q", reasons, want)
		}
	}
	if strings.Contains(reasons, "TestPass ") || strings.Contains(reasons, "TestQuick") {
		t.Errorf("Check blames tests that passed: %q", reasons)
	}
}

func TestStrictRunPassesOnlyWhenEverythingPassed(t *testing.T) {
	s := parseFile(t, "allpass.json")
	if reasons := s.Check([]string{"TestPass"}); len(reasons) != 0 {
		t.Errorf("Check on an all-pass run = %v", reasons)
	}
	if reasons := s.Check([]string{"TestSkip"}); len(reasons) != 1 || !strings.Contains(reasons[0], "TestSkip did not run") {
		t.Errorf("Check with a test that did not run = %v", reasons)
	}

	empty, err := Parse(strings.NewReader("go: downloading something\n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if reasons := empty.Check(nil); len(reasons) != 1 || reasons[0] != "no test passed" {
		t.Errorf("Check on a run with no tests = %v", reasons)
	}

	truncated, err := Parse(strings.NewReader(`{"Action":"run","Package":"p","Test":"TestA"}`+"\n"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	reasons := strings.Join(truncated.Check(nil), "; ")
	if !strings.Contains(reasons, "package p did not finish") || !strings.Contains(reasons, "1 tests failed") {
		t.Errorf("Check on a cut-off stream = %q", reasons)
	}
}

func TestRunExitsWithFailureOnlyInStrictMode(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "summary.txt")
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	stdout := os.Stdout
	os.Stdout = devnull
	defer func() { os.Stdout = stdout }()

	in := filepath.Join("testdata", "mixed.json")
	logFile := filepath.Join(dir, "complement.log")
	if err := run(in, out, logFile, "t", false, ""); err != nil {
		t.Errorf("non-strict run: %v", err)
	}
	// The plain log reads like go test -v: test output and build errors.
	plain, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"=== RUN   TestParent/nested/deeper\n", "a_test.go:8: deep\n", "undefined: undefinedThing", "--- FAIL: TestFlat"} {
		if !strings.Contains(string(plain), want) {
			t.Errorf("log lacks %q:\n%s", want, plain)
		}
	}
	written, err := os.ReadFile(out)
	if err != nil || !strings.Contains(string(written), "total: 3 passed, 6 failed, 1 skipped") {
		t.Errorf("summary file = %q, %v", written, err)
	}
	if _, ok := run(in, "", "", "t", true, "").(failure); !ok {
		t.Error("strict run over failures did not return a failure")
	}
	list := filepath.Join(dir, "subset.txt")
	if err := os.WriteFile(list, []byte("# subset\nTestPass  # trailing comment\n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(filepath.Join("testdata", "allpass.json"), "", "", "t", false, list); err != nil {
		t.Errorf("run with -expect over a passing run: %v", err)
	}
}

func TestReadTestList(t *testing.T) {
	dir := t.TempDir()
	write := func(content string) string {
		p := filepath.Join(dir, "list.txt")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	names, err := ReadTestList(write("# comment\nTestA\n  TestB_2 # why\n\n"))
	if err != nil || !reflect.DeepEqual(names, []string{"TestA", "TestB_2"}) {
		t.Errorf("names = %v, %v", names, err)
	}
	if _, err := ReadTestList(write("TestA/sub\n")); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("subtest path accepted or error without line: %v", err)
	}
	if _, err := ReadTestList(write("# nothing\n")); err == nil {
		t.Error("empty list accepted")
	}
}
