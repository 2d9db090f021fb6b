// Command summarize turns the `go test -json` output of a Complement run
// into a score: passed, failed and skipped tests per package and in total,
// and the list of failing tests. scripts/complement runs it after every
// Complement run; with -strict (the CI subset) it also exits non-zero when
// anything failed or an expected test did not pass.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

func main() {
	in := flag.String("in", "-", "go test -json output to read ('-' for standard input)")
	out := flag.String("out", "", "also write the summary to this file")
	title := flag.String("title", "Complement results", "first line of the summary")
	strict := flag.Bool("strict", false, "exit 1 when any test or package failed, or nothing passed")
	expect := flag.String("expect", "", "file of top-level test names (one per line, # comments) that must each have run and passed; implies -strict")
	logPath := flag.String("log", "", "also write the tests' plain output (as go test -v prints it) to this file")
	flag.Parse()

	if err := run(*in, *out, *logPath, *title, *strict, *expect); err != nil {
		fmt.Fprintln(os.Stderr, "summarize:", err)
		var f failure
		if errors.As(err, &f) {
			os.Exit(1)
		}
		os.Exit(2)
	}
}

// failure is a run that was summarized but did not meet -strict or -expect;
// every other error means no summary could be made.
type failure struct{ reasons []string }

func (f failure) Error() string { return strings.Join(f.reasons, "; ") }

func run(inPath, outPath, logPath, title string, strict bool, expectPath string) error {
	var expected []string
	if expectPath != "" {
		var err error
		if expected, err = ReadTestList(expectPath); err != nil {
			return err
		}
		strict = true
	}
	var r io.Reader = os.Stdin
	if inPath != "-" {
		f, err := os.Open(inPath)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var log io.Writer = io.Discard
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return err
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		defer bw.Flush()
		log = bw
	}
	s, err := Parse(r, log)
	if err != nil {
		return err
	}
	text := s.Format(title)
	fmt.Print(text)
	if outPath != "" {
		if err := os.WriteFile(outPath, []byte(text), 0o644); err != nil {
			return err
		}
	}
	if !strict {
		return nil
	}
	if reasons := s.Check(expected); len(reasons) > 0 {
		return failure{reasons}
	}
	return nil
}

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	ImportPath  string
	FailedBuild string
}

// Package is the outcome of one test package.
type Package struct {
	Name string
	// Counts of every test, subtests included.
	Passed, Failed, Skipped int
	// Counts of top-level tests only.
	TopPassed, TopFailed, TopSkipped int
	// Status is the package's own verdict: "ok", "FAIL", "skip" (no test
	// files), "build failed", or "" when the stream ended before it.
	Status string
	// results maps each test that finished to its action; running holds
	// tests that started and never finished (a timeout or a crash).
	results map[string]string
	running map[string]bool
}

// Summary is a whole run.
type Summary struct {
	Packages []*Package
	byName   map[string]*Package
	// BuildErrors holds compiler output of packages that did not build.
	BuildErrors map[string][]string
}

// Parse reads `go test -json` output, copying the tests' own output to log
// as `go test -v` would print it. Lines that are not JSON (a go command error
// printed before any test ran) go to log unchanged.
func Parse(r io.Reader, log io.Writer) (*Summary, error) {
	s := &Summary{byName: map[string]*Package{}, BuildErrors: map[string][]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			if _, err := fmt.Fprintf(log, "%s\n", line); err != nil {
				return nil, err
			}
			continue
		}
		if ev.Action == "output" || ev.Action == "build-output" {
			if _, err := io.WriteString(log, ev.Output); err != nil {
				return nil, err
			}
		}
		s.add(ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read test output: %w", err)
	}
	return s, nil
}

func (s *Summary) pkg(name string) *Package {
	p := s.byName[name]
	if p == nil {
		p = &Package{Name: name, results: map[string]string{}, running: map[string]bool{}}
		s.byName[name] = p
		s.Packages = append(s.Packages, p)
	}
	return p
}

func (s *Summary) add(ev event) {
	switch ev.Action {
	case "build-output":
		s.BuildErrors[ev.ImportPath] = append(s.BuildErrors[ev.ImportPath], ev.Output)
		return
	case "build-fail":
		return
	}
	if ev.Package == "" {
		return
	}
	p := s.pkg(ev.Package)
	if ev.Test == "" {
		switch ev.Action {
		case "pass":
			p.Status = "ok"
		case "skip":
			p.Status = "skip"
		case "fail":
			p.Status = "FAIL"
			if ev.FailedBuild != "" {
				p.Status = "build failed"
			}
		}
		return
	}
	switch ev.Action {
	case "run":
		p.running[ev.Test] = true
	case "pass", "fail", "skip":
		delete(p.running, ev.Test)
		p.results[ev.Test] = ev.Action
	}
}

// finish counts results, treating tests that never finished as failed.
func (s *Summary) finish() {
	for _, p := range s.Packages {
		for t := range p.running {
			p.results[t] = "fail"
		}
		p.Passed, p.Failed, p.Skipped = 0, 0, 0
		p.TopPassed, p.TopFailed, p.TopSkipped = 0, 0, 0
		for t, action := range p.results {
			top := !strings.Contains(t, "/")
			switch action {
			case "pass":
				p.Passed++
				if top {
					p.TopPassed++
				}
			case "fail":
				p.Failed++
				if top {
					p.TopFailed++
				}
			case "skip":
				p.Skipped++
				if top {
					p.TopSkipped++
				}
			}
		}
	}
	sort.Slice(s.Packages, func(i, j int) bool { return s.Packages[i].Name < s.Packages[j].Name })
}

// FailingTests lists, per package, the failed tests none of whose subtests
// failed: the places to look. A parent that failed only because a subtest
// did is left out; a test that never finished is marked so.
func (p *Package) FailingTests() []string {
	var out []string
	for t, action := range p.results {
		if action != "fail" {
			continue
		}
		leaf := true
		for other, a := range p.results {
			if a == "fail" && strings.HasPrefix(other, t+"/") {
				leaf = false
				break
			}
		}
		if !leaf {
			continue
		}
		if p.running[t] {
			t += " (did not finish)"
		}
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Totals adds up every package.
func (s *Summary) Totals() (passed, failed, skipped int) {
	for _, p := range s.Packages {
		passed += p.Passed
		failed += p.Failed
		skipped += p.Skipped
	}
	return
}

// Format renders the summary. Its last line is the total in the form
// "total: N passed, N failed, N skipped", which CI reads as the result.
func (s *Summary) Format(title string) string {
	s.finish()
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n", title)
	width := len("package")
	for _, p := range s.Packages {
		width = max(width, len(p.Name))
	}
	fmt.Fprintf(&b, "%-*s  %-12s  %-24s  %s\n", width, "package", "status", "top-level pass/fail/skip", "all pass/fail/skip")
	for _, p := range s.Packages {
		status := p.Status
		if status == "" {
			status = "incomplete"
		}
		fmt.Fprintf(&b, "%-*s  %-12s  %-24s  %s\n", width, p.Name, status,
			fmt.Sprintf("%d/%d/%d", p.TopPassed, p.TopFailed, p.TopSkipped),
			fmt.Sprintf("%d/%d/%d", p.Passed, p.Failed, p.Skipped))
	}
	var failing []string
	for _, p := range s.Packages {
		for _, t := range p.FailingTests() {
			failing = append(failing, fmt.Sprintf("  %s %s", shortPackage(p.Name), t))
		}
	}
	if len(failing) > 0 {
		fmt.Fprintf(&b, "\nFailing tests (%d):\n%s\n", len(failing), strings.Join(failing, "\n"))
	}
	var broken []string
	for name := range s.BuildErrors {
		broken = append(broken, name)
	}
	sort.Strings(broken)
	for _, name := range broken {
		fmt.Fprintf(&b, "\nBuild output of %s:\n%s", name, strings.Join(s.BuildErrors[name], ""))
	}
	passed, failed, skipped := s.Totals()
	fmt.Fprintf(&b, "\ntotal: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	return b.String()
}

func shortPackage(name string) string {
	return strings.TrimPrefix(name, "github.com/matrix-org/complement/")
}

// Check returns why a strict run failed: any failed test or package, no
// passing test at all (a -run pattern that matched nothing), or an expected
// top-level test that did not run and pass in some package.
func (s *Summary) Check(expected []string) []string {
	s.finish()
	var reasons []string
	passed, failed, _ := s.Totals()
	if failed > 0 {
		reasons = append(reasons, fmt.Sprintf("%d tests failed", failed))
	}
	for _, p := range s.Packages {
		switch {
		case p.Status == "":
			reasons = append(reasons, fmt.Sprintf("package %s did not finish", p.Name))
		case p.Status == "FAIL" && p.Failed == 0, p.Status == "build failed":
			reasons = append(reasons, fmt.Sprintf("package %s: %s", p.Name, p.Status))
		}
	}
	if passed == 0 {
		reasons = append(reasons, "no test passed")
	}
	for _, name := range expected {
		ok := false
		for _, p := range s.Packages {
			if p.results[name] == "pass" {
				ok = true
			}
		}
		if !ok {
			reasons = append(reasons, name+" did not run and pass")
		}
	}
	return reasons
}

var testName = regexp.MustCompile(`^Test[A-Za-z0-9_]*$`)

// ReadTestList reads a list of top-level test names: one per line, blank
// lines and text after '#' ignored.
func ReadTestList(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var names []string
	for i, line := range strings.Split(string(data), "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if !testName.MatchString(line) {
			return nil, fmt.Errorf("%s:%d: %q is not a top-level Go test name", path, i+1, line)
		}
		names = append(names, line)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s lists no tests", path)
	}
	return names, nil
}
