package main

import (
	"testing"
	"time"
)

func msd(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample any p", msd(7), 99, 7 * time.Millisecond},
		{"p0 is the minimum", msd(1, 2, 3), 0, time.Millisecond},
		{"p100 is the maximum", msd(1, 2, 3), 100, 3 * time.Millisecond},
		{"median of odd count", msd(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of even count is the lower middle", msd(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p95 of 1..100", hundred, 95, 95 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 rounds up to the max", hundred, 99.9, 100 * time.Millisecond},
		{"p99 of 10 samples is the max", msd(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p90 of 10 samples", msd(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("Percentile(p=%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		samples []time.Duration
		want    Summary
	}{
		{"empty", nil, Summary{}},
		{"unsorted input", msd(30, 10, 20), Summary{Count: 3, MinMs: 10, MeanMs: 20, P50Ms: 20, P95Ms: 30, P99Ms: 30, MaxMs: 30}},
		{"sub-millisecond precision kept to the microsecond", []time.Duration{1500 * time.Microsecond, 2500 * time.Microsecond},
			Summary{Count: 2, MinMs: 1.5, MeanMs: 2, P50Ms: 1.5, P95Ms: 2.5, P99Ms: 2.5, MaxMs: 2.5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Summarize(tc.samples); got != tc.want {
				t.Errorf("Summarize = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRecorderConcurrent(t *testing.T) {
	var r Recorder
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			for i := range 250 {
				r.Add(time.Duration(g*250+i+1) * time.Millisecond)
			}
			done <- struct{}{}
		}()
	}
	for range 4 {
		<-done
	}
	s := r.Summary()
	if s.Count != 1000 || s.MinMs != 1 || s.MaxMs != 1000 || s.P50Ms != 500 || s.P99Ms != 990 {
		t.Errorf("summary of 1..1000 ms = %+v", s)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{4}, 4},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), tc.in...)
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Errorf("Median modified its input: %v", tc.in)
			}
		}
	}
}

func TestMediansAcrossRuns(t *testing.T) {
	run := func(tp, p99 float64) *Result {
		r := &Result{}
		r.add("throughput", tp, "events/s")
		r.add("p99", p99, "ms")
		return r
	}
	got := medians([]*Result{run(100, 9), run(300, 7), run(200, 8)})
	want := []Metric{{"throughput", 200, "events/s"}, {"p99", 8, "ms"}}
	if len(got) != len(want) {
		t.Fatalf("medians = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("medians[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestAssignRooms(t *testing.T) {
	for _, tc := range []struct {
		s, r int
		want [][]int
	}{
		{8, 4, [][]int{{0}, {1}, {2}, {3}, {0}, {1}, {2}, {3}}},
		{2, 5, [][]int{{0, 2, 4}, {1, 3}}},
		{3, 3, [][]int{{0}, {1}, {2}}},
		{1, 1, [][]int{{0}}},
	} {
		got := assignRooms(tc.s, tc.r)
		if len(got) != len(tc.want) {
			t.Fatalf("assignRooms(%d, %d) = %v", tc.s, tc.r, got)
		}
		covered := map[int]bool{}
		for i := range got {
			if len(got[i]) != len(tc.want[i]) {
				t.Fatalf("assignRooms(%d, %d) = %v, want %v", tc.s, tc.r, got, tc.want)
			}
			for k := range got[i] {
				if got[i][k] != tc.want[i][k] {
					t.Fatalf("assignRooms(%d, %d) = %v, want %v", tc.s, tc.r, got, tc.want)
				}
				covered[got[i][k]] = true
			}
		}
		// Every room has a sender, and each room's creator (j % s) sends to it.
		for j := range tc.r {
			if !covered[j] {
				t.Errorf("assignRooms(%d, %d): room %d has no sender", tc.s, tc.r, j)
			}
			creator := got[j%tc.s]
			found := false
			for _, x := range creator {
				found = found || x == j
			}
			if !found {
				t.Errorf("assignRooms(%d, %d): creator of room %d does not send to it", tc.s, tc.r, j)
			}
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--scenario", "send"}, true},
		{[]string{"--scenario", "nope"}, false},
		{[]string{"--scenario", "send", "--hs", "127.0.0.1:8008"}, false},
		{[]string{"--scenario", "idle", "--clients", "0"}, false},
		{[]string{"--scenario", "idle", "--clients", "50001"}, false},
		{[]string{"--scenario", "fanout", "--rate", "0"}, false},
		{[]string{"--scenario", "fanout", "--duration", "2h"}, false},
		{[]string{"--scenario", "fanout", "--timeout", "0s"}, false},
		{[]string{"--scenario", "send", "extra"}, false},
	} {
		_, err := parseFlags(tc.args, discard{})
		if (err == nil) != tc.ok {
			t.Errorf("parseFlags(%q): err = %v, want ok=%v", tc.args, err, tc.ok)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
