// Command parley-loadtest drives a Matrix homeserver over the
// client-server API only, so the same run can be pointed at Parley or at
// any other homeserver, and reports throughput, latency percentiles and
// (with --pid) the server's memory and CPU.
//
// Every scenario has bounded counts and a hard time limit (--timeout).
// See README.md, section Performance, for the commands behind the
// published figures.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	HS, HS2      string
	Scenario     string
	Senders      int
	Rooms        int
	Clients      int
	Rate         float64
	Duration     time.Duration
	Messages     int
	Members      int
	RoomSize     int
	Reps         int
	Runs         int
	Concurrency  int
	PollTimeout  time.Duration
	Warmup       time.Duration
	Timeout      time.Duration
	JSON         string
	PID          int
	SharedSecret string
	Quiet        bool
}

// limits bound every count, so that a typo cannot start an unbounded run.
const (
	maxUsers    = 50_000
	maxRooms    = 10_000
	maxMessages = 10_000
	maxReps     = 100
	maxRuns     = 20
	maxRate     = 10_000
	maxDuration = time.Hour
)

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("parley-loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.HS, "hs", "http://127.0.0.1:8008", "homeserver base URL")
	fs.StringVar(&o.HS2, "hs2", "", "second homeserver base URL (federation scenario: receivers live there)")
	fs.StringVar(&o.Scenario, "scenario", "", "one of: "+strings.Join(scenarioNames(), ", "))
	fs.IntVar(&o.Senders, "senders", 8, "send: concurrent senders (one user each)")
	fs.IntVar(&o.Rooms, "rooms", 4, "send: rooms the senders spread over; initialsync: rooms of the user")
	fs.IntVar(&o.Clients, "clients", 100, "fanout: long-polling receivers; idle: long-polling clients")
	fs.Float64Var(&o.Rate, "rate", 10, "fanout, federation: messages per second from the sender")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "length of the measured phase")
	fs.IntVar(&o.Messages, "messages", 20, "initialsync: messages per room")
	fs.IntVar(&o.Members, "members", 1000, "joinlarge: members of the large room")
	fs.IntVar(&o.RoomSize, "room-size", 0, "idle: members per room (0: all clients in one room)")
	fs.IntVar(&o.Reps, "reps", 5, "initialsync, joinlarge: measured repetitions (new users for joinlarge)")
	fs.IntVar(&o.Runs, "runs", 1, "repeat the whole scenario (fresh users and rooms) and report medians")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "parallel requests during setup (registration, joins, initial syncs)")
	fs.DurationVar(&o.PollTimeout, "poll-timeout", 30*time.Second, "timeout of every long-poll /sync")
	fs.DurationVar(&o.Warmup, "warmup", 2*time.Second, "send: unmeasured time before the measured phase")
	fs.DurationVar(&o.Timeout, "timeout", 15*time.Minute, "hard time limit for the whole run, setup included")
	fs.StringVar(&o.JSON, "json", "", "also write the report as JSON to this file")
	fs.IntVar(&o.PID, "pid", 0, "server process ID: sample its RSS and CPU from /proc every 100ms")
	fs.StringVar(&o.SharedSecret, "register-shared-secret", "", "register users with the /_synapse/admin/v1/register shared secret instead of open registration (m.login.dummy)")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress lines on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: parley-loadtest --hs URL --scenario NAME [flags]\n\nscenarios:")
		for _, n := range scenarioNames() {
			fmt.Fprintf(stderr, "  %-12s %s\n", n, scenarios[n].help)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, o.validate()
}

func (o *options) validate() error {
	if _, ok := scenarios[o.Scenario]; !ok {
		return fmt.Errorf("--scenario must be one of %s", strings.Join(scenarioNames(), ", "))
	}
	if !strings.HasPrefix(o.HS, "http://") && !strings.HasPrefix(o.HS, "https://") {
		return fmt.Errorf("--hs must be an http(s) URL, got %q", o.HS)
	}
	o.HS = strings.TrimRight(o.HS, "/")
	o.HS2 = strings.TrimRight(o.HS2, "/")
	checks := []struct {
		name      string
		v, lo, hi int
	}{
		{"--senders", o.Senders, 1, maxUsers},
		{"--rooms", o.Rooms, 1, maxRooms},
		{"--clients", o.Clients, 1, maxUsers},
		{"--messages", o.Messages, 0, maxMessages},
		{"--members", o.Members, 1, maxUsers},
		{"--room-size", o.RoomSize, 0, maxUsers},
		{"--reps", o.Reps, 1, maxReps},
		{"--runs", o.Runs, 1, maxRuns},
		{"--concurrency", o.Concurrency, 1, 1024},
	}
	for _, c := range checks {
		if c.v < c.lo || c.v > c.hi {
			return fmt.Errorf("%s must be between %d and %d, got %d", c.name, c.lo, c.hi, c.v)
		}
	}
	if o.Rate <= 0 || o.Rate > maxRate {
		return fmt.Errorf("--rate must be in (0, %d], got %g", maxRate, o.Rate)
	}
	for name, d := range map[string]time.Duration{"--duration": o.Duration, "--timeout": o.Timeout, "--poll-timeout": o.PollTimeout} {
		if d <= 0 || d > maxDuration {
			return fmt.Errorf("%s must be in (0, %s], got %s", name, maxDuration, d)
		}
	}
	if o.Warmup < 0 || o.Warmup > maxDuration {
		return fmt.Errorf("--warmup must be in [0, %s], got %s", maxDuration, o.Warmup)
	}
	return nil
}

// Metric is one reported figure.
type Metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Result is one run of a scenario.
type Result struct {
	Metrics   []Metric           `json:"metrics"`
	Latencies map[string]Summary `json:"latencies,omitempty"`
	// Server covers the measured phase only (setup excluded).
	Server       *ProcStats `json:"server,omitempty"`
	SetupSeconds float64    `json:"setup_seconds"`
	Notes        []string   `json:"notes,omitempty"`
}

func (r *Result) add(name string, value float64, unit string) {
	r.Metrics = append(r.Metrics, Metric{Name: name, Value: round2(value), Unit: unit})
}

func (r *Result) addLatency(name string, s Summary) {
	if r.Latencies == nil {
		r.Latencies = map[string]Summary{}
	}
	r.Latencies[name] = s
	r.add(name+" p50", s.P50Ms, "ms")
	r.add(name+" p95", s.P95Ms, "ms")
	r.add(name+" p99", s.P99Ms, "ms")
	r.add(name+" max", s.MaxMs, "ms")
}

func (r *Result) notef(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Report is everything one invocation measured.
type Report struct {
	Scenario   string         `json:"scenario"`
	Homeserver string         `json:"homeserver"`
	Started    time.Time      `json:"started"`
	Params     map[string]any `json:"params"`
	Runs       []*Result      `json:"runs"`
	// Median is, per metric, the median over the runs.
	Median []Metric `json:"median"`
	// WholeRunServer covers every run including setup.
	WholeRunServer *ProcStats `json:"whole_run_server,omitempty"`
	Error          string     `json:"error,omitempty"`
}

// env is what a scenario run gets: the options, a unique name prefix and
// the sampler.
type env struct {
	opts      *options
	runID     string
	sampler   *Sampler
	transport *http.Transport
	logw      io.Writer
}

func (e *env) newClient(hs string) *Client {
	return &Client{HS: hs, HTTP: &http.Client{Transport: e.transport}}
}

func (e *env) logf(format string, args ...any) {
	if e.logw != nil {
		fmt.Fprintf(e.logw, "%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	}
}

// serverWindow attaches the server's figures over [from, to] to r.
func (e *env) serverWindow(r *Result, from, to time.Time) {
	if e.sampler == nil {
		return
	}
	if time.Since(to) < 100*time.Millisecond {
		e.sampleNow()
		to = time.Now()
	}
	st := e.sampler.Window(from, to)
	r.Server = &st
	r.add("server peak RSS", st.PeakRSSMiB, "MiB")
	r.add("server CPU", st.CPUPercent, "% of one core")
}

// sampleNow takes an extra server sample, so that phases shorter than the
// sampling interval still have one at each end.
func (e *env) sampleNow() {
	if e.sampler != nil {
		_, _ = e.sampler.Sample()
	}
}

type scenario struct {
	help string
	// conns is how many connections the scenario holds at once, for the
	// file-descriptor check.
	conns func(o *options) int
	run   func(ctx context.Context, e *env) (*Result, error)
}

var scenarios = map[string]scenario{}

func scenarioNames() []string {
	var names []string
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "parley-loadtest:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stdout, os.Stderr)
	if rep != nil && o.JSON != "" {
		if werr := writeJSON(o.JSON, rep); werr != nil {
			fmt.Fprintln(os.Stderr, "parley-loadtest:", werr)
			os.Exit(1)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley-loadtest:", err)
		os.Exit(1)
	}
}

// run executes o.Runs runs of the scenario, prints the summary to out and
// returns the report (also when a run failed, with what was measured).
func run(ctx context.Context, o *options, out, log io.Writer) (*Report, error) {
	sc := scenarios[o.Scenario]
	if o.Quiet {
		log = nil
	}
	need := sc.conns(o) + 64
	if have, err := raiseFileLimit(uint64(need)); err != nil {
		return nil, err
	} else if have < uint64(need) {
		return nil, fmt.Errorf("this scenario holds about %d connections but RLIMIT_NOFILE is %d (hard limit); raise it with `ulimit -n` as root", need, have)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.Timeout, fmt.Errorf("hard time limit --timeout=%s reached", o.Timeout))
	defer cancel()

	e := &env{opts: o, logw: log, transport: newTransport(need)}
	defer e.transport.CloseIdleConnections()
	if o.PID != 0 {
		warnServerFileLimit(o.PID, sc.conns(o), log)
		s, err := StartSampler("/proc", o.PID, 100*time.Millisecond)
		if err != nil {
			return nil, err
		}
		e.sampler = s
	}
	rep := &Report{Scenario: o.Scenario, Homeserver: o.HS, Started: time.Now(), Params: params(o)}
	var runErr error
	for i := range o.Runs {
		e.runID = newRunID()
		e.logf("run %d/%d of %s (names lt%s-*)", i+1, o.Runs, o.Scenario, e.runID)
		start := time.Now()
		res, err := sc.run(ctx, e)
		if err != nil && context.Cause(ctx) != nil {
			err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
		}
		if res != nil {
			rep.Runs = append(rep.Runs, res)
			e.logf("run %d took %.1fs", i+1, time.Since(start).Seconds())
		}
		if err != nil {
			runErr = fmt.Errorf("run %d: %w", i+1, err)
			rep.Error = runErr.Error()
			break
		}
		e.transport.CloseIdleConnections()
	}
	if e.sampler != nil {
		if err := e.sampler.Stop(); err != nil {
			e.logf("sampler stopped early: %v", err)
		}
		st := e.sampler.Window(rep.Started, time.Now())
		rep.WholeRunServer = &st
	}
	rep.Median = medians(rep.Runs)
	printReport(out, rep)
	return rep, runErr
}

func params(o *options) map[string]any {
	p := map[string]any{"runs": o.Runs, "timeout": o.Timeout.String()}
	switch o.Scenario {
	case "send":
		p["senders"], p["rooms"], p["duration"], p["warmup"] = o.Senders, o.Rooms, o.Duration.String(), o.Warmup.String()
	case "fanout", "federation":
		p["clients"], p["rate"], p["duration"] = o.Clients, o.Rate, o.Duration.String()
	case "idle":
		p["clients"], p["duration"], p["poll_timeout"], p["room_size"] = o.Clients, o.Duration.String(), o.PollTimeout.String(), o.RoomSize
	case "initialsync":
		p["rooms"], p["messages"], p["reps"] = o.Rooms, o.Messages, o.Reps
	case "joinlarge":
		p["members"], p["reps"] = o.Members, o.Reps
	}
	if o.Scenario == "federation" {
		p["hs2"] = o.HS2
	}
	return p
}

// medians takes, per metric name in first-seen order, the median over runs.
func medians(runs []*Result) []Metric {
	var order []string
	vals := map[string][]float64{}
	units := map[string]string{}
	for _, r := range runs {
		for _, m := range r.Metrics {
			if _, ok := vals[m.Name]; !ok {
				order = append(order, m.Name)
				units[m.Name] = m.Unit
			}
			vals[m.Name] = append(vals[m.Name], m.Value)
		}
	}
	out := make([]Metric, 0, len(order))
	for _, n := range order {
		out = append(out, Metric{Name: n, Value: round2(Median(vals[n])), Unit: units[n]})
	}
	return out
}

func printReport(w io.Writer, rep *Report) {
	keys := make([]string, 0, len(rep.Params))
	for k := range rep.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ps []string
	for _, k := range keys {
		ps = append(ps, fmt.Sprintf("%s=%v", k, rep.Params[k]))
	}
	fmt.Fprintf(w, "scenario %s against %s (%s)\n", rep.Scenario, rep.Homeserver, strings.Join(ps, " "))
	title := "median of runs"
	if len(rep.Runs) == 1 {
		title = "result"
	}
	fmt.Fprintf(w, "%s (%d completed):\n", title, len(rep.Runs))
	for _, m := range rep.Median {
		fmt.Fprintf(w, "  %-34s %12.2f %s\n", m.Name, m.Value, m.Unit)
	}
	for i, r := range rep.Runs {
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  note (run %d): %s\n", i+1, n)
		}
	}
	if rep.WholeRunServer != nil {
		fmt.Fprintf(w, "  server over the whole invocation: peak RSS %.1f MiB, CPU %.1f%% of one core\n", rep.WholeRunServer.PeakRSSMiB, rep.WholeRunServer.CPUPercent)
	}
	if rep.Error != "" {
		fmt.Fprintf(w, "  ERROR: %s\n", rep.Error)
	}
}

func writeJSON(path string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func newRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit (Go does
// this itself since 1.19, but only up to the hard limit, and being explicit
// lets us report the figure) and returns the soft limit in force.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < want && lim.Cur < lim.Max {
		lim.Cur = min(max(want, lim.Cur), lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("setrlimit NOFILE %d: %w", lim.Cur, err)
		}
	}
	return lim.Cur, nil
}

// warnServerFileLimit reads the server's "Max open files" from
// /proc/PID/limits: the loadtest cannot raise another process's limit.
func warnServerFileLimit(pid, conns int, log io.Writer) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil || log == nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		var soft int
		if len(f) > 0 {
			_, _ = fmt.Sscan(f[0], &soft)
		}
		if soft > 0 && soft < conns+256 {
			fmt.Fprintf(log, "WARNING: the server's open-file limit is %d but this scenario opens about %d connections; start the server after `ulimit -n %d`\n", soft, conns, conns+1024)
		}
	}
}
