package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/parley-chat/parley/internal/testserver"
)

// metric returns the median value named name, failing the test if absent.
func metric(t *testing.T, rep *Report, name string) float64 {
	t.Helper()
	for _, m := range rep.Median {
		if m.Name == name {
			return m.Value
		}
	}
	t.Fatalf("%s report has no metric %q: %+v", rep.Scenario, name, rep.Median)
	return 0
}

// TestScenariosAgainstParley runs every scenario with tiny counts against
// a real Parley and checks what each must report.
func TestScenariosAgainstParley(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers")
	}
	srv := testserver.Start(t, testserver.Options{})
	base := func(scenario string) *options {
		o, err := parseFlags([]string{"--hs", srv.URL, "--scenario", scenario, "--timeout", "20s", "--concurrency", "8"}, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	runOK := func(t *testing.T, o *options) *Report {
		t.Helper()
		rep, err := run(context.Background(), o, io.Discard, nil)
		if err != nil {
			t.Fatalf("%s: %v", o.Scenario, err)
		}
		if len(rep.Runs) != o.Runs {
			t.Fatalf("%s: %d runs reported, want %d", o.Scenario, len(rep.Runs), o.Runs)
		}
		return rep
	}

	t.Run("send", func(t *testing.T) {
		o := base("send")
		o.Senders, o.Rooms, o.Warmup, o.Duration = 3, 2, 0, time.Second
		rep := runOK(t, o)
		if metric(t, rep, "throughput") <= 0 || metric(t, rep, "send errors") != 0 || metric(t, rep, "send latency p50") <= 0 {
			t.Errorf("send: %+v", rep.Median)
		}
	})
	t.Run("fanout", func(t *testing.T) {
		o := base("fanout")
		o.Clients, o.Rate, o.Duration = 4, 20, time.Second
		rep := runOK(t, o)
		sent := metric(t, rep, "messages sent")
		if sent != 20 || metric(t, rep, "deliveries") != 4*sent || metric(t, rep, "never delivered") != 0 {
			t.Errorf("fanout: %+v", rep.Median)
		}
	})
	t.Run("idle", func(t *testing.T) {
		o := base("idle")
		o.Clients, o.PollTimeout, o.Duration, o.Runs = 5, time.Second, 2500*time.Millisecond, 2
		rep := runOK(t, o)
		// Each client completes two or three 1s polls in 2.5s; none may
		// come back early with nothing, none may fail.
		if polls := metric(t, rep, "polls completed"); polls < 10 || polls > 15 {
			t.Errorf("idle: %v polls completed, want 10-15", polls)
		}
		if metric(t, rep, "early empty returns") != 0 || metric(t, rep, "poll errors") != 0 {
			t.Errorf("idle: %+v", rep.Median)
		}
	})
	t.Run("initialsync", func(t *testing.T) {
		o := base("initialsync")
		o.Rooms, o.Messages, o.Reps = 3, 4, 3
		rep := runOK(t, o)
		if metric(t, rep, "initial sync size") <= 0 || len(rep.Runs[0].Notes) != 0 {
			t.Errorf("initialsync: %+v %v", rep.Median, rep.Runs[0].Notes)
		}
		if got := rep.Runs[0].Latencies["initial sync"].Count; got != 3 {
			t.Errorf("initialsync: %d samples, want 3", got)
		}
	})
	t.Run("joinlarge", func(t *testing.T) {
		o := base("joinlarge")
		o.Members, o.Reps = 12, 2
		rep := runOK(t, o)
		if metric(t, rep, "join p50") <= 0 || metric(t, rep, "first sync size") <= 0 {
			t.Errorf("joinlarge: %+v", rep.Median)
		}
	})
	t.Run("federation", func(t *testing.T) {
		ca := testserver.NewCA(t)
		hs := testserver.StartFederated(t, ca, testserver.Options{})
		hs2 := testserver.StartFederated(t, ca, testserver.Options{})
		o := base("federation")
		o.HS, o.HS2, o.Clients, o.Rate, o.Duration = hs.URL, hs2.URL, 2, 10, time.Second
		rep := runOK(t, o)
		sent := metric(t, rep, "messages sent")
		if sent != 10 || metric(t, rep, "deliveries") != 2*sent || metric(t, rep, "never delivered") != 0 || metric(t, rep, "delivered throughput") <= 0 {
			t.Errorf("federation: %+v", rep.Median)
		}
	})
}
